//! File-system syscalls newer than nix's wrappers: openat2 (resolution confined to a root),
//! close_range, and the mount API calls (mount_setattr, open_tree, move_mount).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::{check, Result};

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// openat2(2): opens `path` relative to `dir` with `flags` (O_*) and `resolve` (RESOLVE_*).
/// O_CLOEXEC is always added so that no runtime fd can leak into a container.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Result<OwnedFd> {
    let path = cstring(path)?;
    let mut how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve,
    };
    // SAFETY: `path` is NUL-terminated and `how` is a valid open_how of the size passed; the
    // returned fd is new and owned by nobody else.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &mut how as *mut OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: the kernel just returned this fd to us; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Marks every fd from `first` upwards close-on-exec, so that nothing the runtime opened reaches
/// the container's process, whatever its number.
pub fn close_range_cloexec(first: u32) -> Result<()> {
    // SAFETY: close_range only changes fd flags; no memory is passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    })?;
    Ok(())
}

/// Closes every fd from 3 upwards except those in `keep`: a process that outlives the command
/// that forked it (the LXC command-socket monitor) must not hold the caller's pipes, the
/// container's state-dir lock or anything else the runtime had open.
///
/// Safe to call, but the caller must not use (or drop) any value that owned one of the closed fds
/// afterwards: it is meant for a fork child that only ever leaves through `exit_now`.
pub fn close_fds_except(keep: &[i32]) -> Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd >= 3)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > first {
            let last = if fd == u32::MAX { u32::MAX } else { fd - 1 };
            // SAFETY: close_range takes plain integers and passes no memory. Closing fds that
            // Rust values still own is no memory hazard; the caller's contract (above) keeps
            // those values from being used again.
            check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) })?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}

/// The mount attributes of mount_setattr(2).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountAttr {
    pub set: u64,
    pub clear: u64,
    pub propagation: u64,
}

#[repr(C)]
struct RawMountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) on the mount at `path` relative to `dir` (AT_EMPTY_PATH when `path` is empty);
/// `recursive` applies it to the whole subtree (AT_RECURSIVE), which mount(2) cannot do for flags.
pub fn mount_setattr(
    dir: BorrowedFd<'_>,
    path: &Path,
    recursive: bool,
    attr: MountAttr,
) -> Result<()> {
    let cpath = cstring(path)?;
    let mut flags = 0;
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    let raw = RawMountAttr {
        attr_set: attr.set,
        attr_clr: attr.clear,
        propagation: attr.propagation,
        userns_fd: 0,
    };
    raw_mount_setattr(dir, &cpath, flags, raw)
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// mount_setattr(MOUNT_ATTR_IDMAP) on the detached mount `tree` (from `open_tree`): its files show
/// the ids of the user namespace `userns` maps them to. `recursive` idmaps every mount below too.
pub fn mount_setattr_idmap(
    tree: BorrowedFd<'_>,
    recursive: bool,
    userns: BorrowedFd<'_>,
) -> Result<()> {
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    let raw = RawMountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    raw_mount_setattr(tree, c"", flags, raw)
}

fn raw_mount_setattr(
    dir: BorrowedFd<'_>,
    cpath: &std::ffi::CStr,
    flags: libc::c_int,
    mut raw: RawMountAttr,
) -> Result<()> {
    // SAFETY: `cpath` is NUL-terminated and `raw` is a valid mount_attr of the size passed; the
    // fds it names are borrowed for the duration of the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir.as_raw_fd(),
            cpath.as_ptr(),
            flags,
            &mut raw as *mut RawMountAttr,
            std::mem::size_of::<RawMountAttr>(),
        )
    })?;
    Ok(())
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;

/// open_tree(OPEN_TREE_CLONE): a detached copy of the mount at `path` (of its whole subtree when
/// `recursive`), as an fd. Nothing is attached anywhere until `move_mount`; closing the fd
/// unmounts the copy.
pub fn open_tree_clone(path: &Path, recursive: bool) -> Result<OwnedFd> {
    let cpath = cstring(path)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `cpath` is NUL-terminated and outlives the call; the returned fd is new.
    let fd = check(unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, cpath.as_ptr(), flags)
    })?;
    // SAFETY: the kernel just returned this fd to us; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// move_mount(2) of the detached mount `tree` onto the directory or file `target` (an fd, O_PATH
/// is enough): no path is looked up, so the target is exactly what the caller resolved.
pub fn move_mount_to(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: both paths are the empty NUL-terminated string; the fds are borrowed for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}
