//! clone3(2) without CLONE_VM: a fork that can create namespaces and place the child straight into a
//! cgroup (CLONE_INTO_CGROUP), which fork(2)/unshare(2) cannot do in one step.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, Result};

/// From linux/sched.h (libc's constant is deprecated for overflowing a c_int).
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What clone3 returned to this process.
pub enum CloneResult {
    /// We are the parent; the child has this pid.
    Parent(libc::pid_t),
    /// We are the child.
    Child,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks the calling process with `flags` (CLONE_NEW* and CLONE_INTO_CGROUP); the child is
/// reported to the parent with SIGCHLD like a fork.
///
/// The caller must be single-threaded: the child is a copy of this process with only the calling
/// thread, so locks held by other threads would never be released in it. proxmox-lxcri never
/// starts a thread, which is what makes running Rust code in the child sound.
pub fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<CloneResult> {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid, fully initialised clone_args of the size we pass. Without CLONE_VM
    // the child gets its own copy of the address space and returns here like fork(2); the caller
    // guarantees the process is single-threaded (see above).
    let mut ret = check(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    });
    // clone3 is refused with ENOSYS by some seccomp profiles (Docker's) and by valgrind; clone(2)
    // does the same job when no cgroup placement is asked for.
    if cgroup.is_none() && matches!(&ret, Err(e) if e.raw_os_error() == Some(libc::ENOSYS)) {
        // SAFETY: as above: a fork-like clone (no CLONE_VM, stack pointer 0 = keep the parent's
        // stack copy), in a single-threaded process.
        ret = check(unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags | libc::SIGCHLD as u64,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        });
    }
    let ret = ret?;
    Ok(if ret == 0 {
        CloneResult::Child
    } else {
        CloneResult::Parent(ret as libc::pid_t)
    })
}
