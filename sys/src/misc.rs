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
/// signal would survive execve into the container's process. The raw syscall, because glibc's
/// signal() refuses the two real-time signals it reserves (32, 33), which a caller may have left
/// ignored too.
pub fn reset_signal_dispositions() {
    // The kernel's struct sigaction all zero: SIG_DFL, no flags, no restorer, empty mask (the same
    // on every architecture, whatever its field order).
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `dfl` is a valid, zeroed kernel sigaction (32 bytes, at least its size on every
        // architecture), the old action is not requested, and the mask size is the kernel's 8
        // bytes. Installing SIG_DFL runs no handler code; failures (invalid numbers) are harmless.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
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
