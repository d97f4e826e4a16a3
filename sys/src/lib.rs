//! Every `unsafe` line of proxmox-lxcri lives here: raw syscalls that `nix` does not wrap (clone3,
//! openat2, close_range, mount_setattr, open_tree, move_mount, pidfd, namespace ioctls, seccomp, xattrs) and the
//! libzfs_core FFI (loaded with dlopen only when a ZFS storage is used), each behind a small safe
//! function.
//! The runtime crate is `#![forbid(unsafe_code)]` and calls only these wrappers.

mod clone;
mod fs;
mod misc;
mod pidfd;
mod scm;
pub mod seccomp;
mod tty;
pub mod xattr;
pub mod zfs;

pub use clone::{clone3, CloneResult};
pub use fs::{
    close_fds_except, close_range_cloexec, mount_setattr, mount_setattr_idmap, move_mount_to,
    open_tree_clone, openat2, MountAttr,
};
pub use misc::{
    exit_now, join_session_keyring, namespace_type, reset_signal_dispositions, setdomainname,
    trim_heap,
};
pub use pidfd::{pidfd_open, pidfd_send_signal};
pub use scm::{recv_fd, send_fd};
pub use tty::{set_controlling_terminal, set_window_size, window_size};

/// Errors are plain errno values; the runtime adds context (which path, which field) on top.
pub type Result<T> = std::result::Result<T, std::io::Error>;

fn check(ret: libc::c_long) -> Result<libc::c_long> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
