//! Small syscalls nix lacks: the namespace type of an nsfs fd and setdomainname.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, Result};

const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3)

/// The CLONE_NEW* constant of the namespace behind `fd`; an error if `fd` is not a namespace.
pub fn namespace_type(fd: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the fd.
    let ret = check(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) } as libc::c_long)?;
    Ok(ret as i32)
}

/// setdomainname(2) in the caller's UTS namespace.
pub fn setdomainname(name: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
    check(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } as libc::c_long)?;
    Ok(())
}

/// Puts every catchable signal back to SIG_DFL. The Rust runtime ignores SIGPIPE, and an ignored
/// signal would survive execve into the container's process. The raw syscall is used because
/// glibc's sigaction refuses the two real-time signals it reserves (32 and 33), which a caller may
/// also have left ignored.
pub fn reset_signal_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // The kernel's struct sigaction (handler, flags, restorer, 8-byte mask), all zero:
        // SIG_DFL, no flags, empty mask.
        let act = [0u64; 4];
        // SAFETY: `act` is a readable buffer of the kernel's sigaction size that outlives the
        // call; the old action is not requested; 8 is the kernel's sigset size. No handler code
        // is installed.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                act.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
}

/// _exit(2): leaves the process without running exit handlers or flushing stdio buffers that the
/// clone inherited from the runtime (they belong to the parent).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// keyctl(KEYCTL_JOIN_SESSION_KEYRING, name): gives the caller a new session keyring, so that a
/// container does not share the host's (runc does this unless --no-new-keyring).
pub fn join_session_keyring(name: &std::ffi::CStr) -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) })?;
    Ok(())
}

/// malloc_trim(0): hands the heap's free pages back to the kernel. The command-socket monitor is a
/// fork of the runtime and lives as long as the container; what the runtime freed before the fork
/// should not stay resident in it.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own allocator state; the process is single-threaded.
    unsafe {
        libc::malloc_trim(0);
    }
}
