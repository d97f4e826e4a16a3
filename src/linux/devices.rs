//! /dev inside the container: the default nodes, `linux.devices`, and the standard symlinks.
//! Without a user namespace nodes are made with mknod; inside one (where mknod is refused) the
//! host's nodes are bind-mounted instead, as runc does.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::mounts::{open_in_root, open_or_create_in_root, Kind};
use crate::error::{Context, Error, Result};

/// (major, minor) of null, random, full, tty, zero, urandom (runc's order).
pub const DEFAULT_DEVICE_NUMBERS: [(i64, i64); 6] =
    [(1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9)];
const DEFAULT_DEVICE_NAMES: [&str; 6] = ["null", "random", "full", "tty", "zero", "urandom"];

struct Node<'a> {
    path: &'a Path,
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Creates the default devices and `linux.devices` under `root`, plus /dev's symlinks.
pub fn create_all(root: BorrowedFd<'_>, devices: &[LinuxDevice], in_user_ns: bool) -> Result<()> {
    let old_umask = nix::sys::stat::umask(Mode::empty());
    let result = (|| {
        for (name, (major, minor)) in DEFAULT_DEVICE_NAMES.iter().zip(DEFAULT_DEVICE_NUMBERS) {
            let path = Path::new("/dev").join(name);
            create(
                root,
                &Node {
                    path: &path,
                    typ: LinuxDeviceType::C,
                    major,
                    minor,
                    mode: 0o666,
                    uid: 0,
                    gid: 0,
                },
                in_user_ns,
            )
            .ctx(|| format!("creating {}", path.display()))?;
        }
        for (i, d) in devices.iter().enumerate() {
            let node = Node {
                path: d.path(),
                typ: d.typ(),
                major: d.major(),
                minor: d.minor(),
                mode: d.file_mode().unwrap_or(0o666),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            };
            create(root, &node, in_user_ns)
                .ctx(|| format!("linux.devices[{i}] {}", d.path().display()))?;
        }
        symlinks(root)
    })();
    nix::sys::stat::umask(old_umask);
    result
}

fn create(root: BorrowedFd<'_>, node: &Node<'_>, in_user_ns: bool) -> Result<()> {
    let parent_path = node.path.parent().unwrap_or(Path::new("/"));
    let name = node
        .path
        .file_name()
        .ok_or_else(|| Error::invalid("device path has no file name"))?;
    let parent = open_or_create_in_root(root, parent_path, Kind::Dir)?;
    if in_user_ns {
        let target = open_or_create_in_root(root, node.path, Kind::File)?;
        let host = Path::new("/dev").join(name);
        let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());
        return mount(
            Some(&host),
            target_path.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("bind-mounting {}", host.display()));
    }
    let kind = match node.typ {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return Err(Error::invalid("device type 'a' cannot be created")),
    };
    let perm = Mode::from_bits_truncate(node.mode & 0o7777);
    let dev = makedev(node.major as u64, node.minor as u64);
    // An existing node (e.g. from the image) is replaced so that its numbers are the spec's.
    let _ = nix::unistd::unlinkat(
        Some(parent.as_raw_fd()),
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    mknodat(Some(parent.as_raw_fd()), name, kind, perm, dev).ctx(|| "mknod")?;
    fchownat(
        Some(parent.as_raw_fd()),
        name,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ctx(|| "chown")?;
    fchmodat(
        Some(parent.as_raw_fd()),
        name,
        perm,
        FchmodatFlags::FollowSymlink,
    )
    .ctx(|| "chmod")?;
    Ok(())
}

fn symlinks(root: BorrowedFd<'_>) -> Result<()> {
    let dev = open_in_root(root, Path::new("/dev")).ctx(|| "/dev")?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        if name == "ptmx" {
            let _ = nix::unistd::unlinkat(
                Some(dev.as_raw_fd()),
                name,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        match symlinkat(target, Some(dev.as_fd().as_raw_fd()), name) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(Error::from(e).context(format!("symlink /dev/{name}"))),
        }
    }
    Ok(())
}
