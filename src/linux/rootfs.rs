//! The container's root: propagation, the bind of the rootfs onto itself, the mounts and /dev,
//! pivot_root (or move + chroot), then masked and read-only paths and a read-only root.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::devices;
use super::mounts::{self, bind_remount, fd_path, open_in_root, CgroupBind, MountContext};
use crate::error::{Context, Error, Result};
use crate::spec::Bundle;

fn root_propagation(spec: &Spec) -> Option<MsFlags> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(mounts::propagation_flags)
}

/// Everything from the fresh mount namespace up to and including pivot_root.
/// `before_pivot` runs once everything is mounted, before pivot_root (createContainer hooks).
pub fn prepare(
    bundle: &Bundle,
    no_pivot: bool,
    cgroup_binds: &[CgroupBind],
    idmapped: &[super::mount_idmap::Prepared],
    before_pivot: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let spec = &bundle.spec;
    // Nothing the container mounts may propagate back to the host.
    let flag = root_propagation(spec).unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(None::<&str>, "/", None::<&str>, flag, None::<&str>)
        .ctx(|| "setting the propagation of /")?;
    // A recursive slave, private or unbindable propagation leaves no mount shared: only after
    // a shared or non-recursive one can the rootfs's parent still refuse pivot_root.
    if !flag.contains(MsFlags::MS_REC) || flag.contains(MsFlags::MS_SHARED) {
        make_parent_mount_private(&bundle.rootfs)?;
    }
    mount(
        Some(&bundle.rootfs),
        &bundle.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind of rootfs {}", bundle.rootfs.display()))?;

    let root: OwnedFd = fs::File::open(&bundle.rootfs)
        .ctx(|| "opening rootfs")?
        .into();
    let in_user_ns = bundle.has_namespace(LinuxNamespaceType::User);
    let ctx = MountContext {
        root: root.as_fd(),
        in_user_ns,
        cgroup_binds,
        idmapped,
        mount_label: super::lsm::mount_label(spec),
    };
    let mut dev_is_bind = false;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        mounts::mount_entry(&ctx, i, m)?;
        if m.destination() == Path::new("/dev") {
            let bind = m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind");
            dev_is_bind = bind;
        }
    }
    if !dev_is_bind {
        let devs = spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default();
        devices::create_all(root.as_fd(), &devs, in_user_ns)?;
    }
    before_pivot()?;
    enter_root(&bundle.rootfs, &root, no_pivot)
}

/// pivot_root refuses a shared parent mount; make the rootfs's parent mount private.
fn make_parent_mount_private(rootfs: &Path) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading mountinfo")?;
    let mut best: Option<&str> = None;
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        if rootfs.starts_with(mp) && best.is_none_or(|b| mp.len() > b.len()) {
            best = Some(mp);
        }
    }
    let mp = best.unwrap_or("/");
    let shared = info
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(mp) && l.contains(" shared:"));
    if shared {
        mount(
            None::<&str>,
            mp,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .ctx(|| format!("making {mp} private"))?;
    }
    Ok(())
}

fn enter_root(rootfs: &Path, root: &OwnedFd, no_pivot: bool) -> Result<()> {
    if no_pivot {
        chdir(rootfs).ctx(|| "chdir to rootfs")?;
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .ctx(|| "moving rootfs to /")?;
        chroot(".").ctx(|| "chroot")?;
    } else {
        // pivot_root(".", ".") stacks the old root on top of the new one; detaching it then
        // needs no directory for it inside the rootfs. We step into the old root through an fd
        // taken before: what "." means right after pivot_root is up to the kernel.
        let old_root: OwnedFd = fs::File::open("/").ctx(|| "opening /")?.into();
        fchdir(root.as_raw_fd()).ctx(|| "chdir to rootfs")?;
        pivot_root(".", ".").ctx(|| "pivot_root")?;
        fchdir(old_root.as_raw_fd()).ctx(|| "chdir to the old root")?;
        // Make the old root a slave first so that its detach does not propagate to the host.
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| "making old root a slave")?;
        umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching old root")?;
    }
    chdir("/").ctx(|| "chdir /")
}

/// After pivot_root: the root's propagation, masked and read-only paths, a read-only root.
pub fn finalize(spec: &Spec) -> Result<()> {
    let root: OwnedFd = fs::File::open("/").ctx(|| "opening /")?.into();
    let linux = spec.linux().as_ref();
    if let Some(flag) = root_propagation(spec) {
        mount(None::<&str>, "/", None::<&str>, flag, None::<&str>)
            .ctx(|| "linux.rootfsPropagation")?;
    }
    for (i, p) in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        readonly_path(&root, p).ctx(|| format!("linux.readonlyPaths[{i}] {p}"))?;
    }
    for (i, p) in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        mask_path(&root, p).ctx(|| format!("linux.maskedPaths[{i}] {p}"))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        bind_remount(root.as_fd(), MsFlags::MS_RDONLY).ctx(|| "root.readonly")?;
    }
    Ok(())
}

fn open_existing(root: &OwnedFd, path: &str) -> Result<Option<OwnedFd>> {
    match open_in_root(root.as_fd(), Path::new(path)) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(Error::os("resolving", e)),
    }
}

fn readonly_path(root: &OwnedFd, path: &str) -> Result<()> {
    let Some(fd) = open_existing(root, path)? else {
        return Ok(());
    };
    mount(
        Some(fd_path(&fd).as_str()),
        fd_path(&fd).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| "bind")?;
    let mounted = open_in_root(root.as_fd(), Path::new(path)).ctx(|| "reopening")?;
    bind_remount(mounted.as_fd(), MsFlags::MS_RDONLY | MsFlags::MS_REC)
}

fn mask_path(root: &OwnedFd, path: &str) -> Result<()> {
    let Some(fd) = open_existing(root, path)? else {
        return Ok(());
    };
    let is_dir = nix::sys::stat::fstat(fd.as_raw_fd())
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    if is_dir {
        mount(
            Some("tmpfs"),
            fd_path(&fd).as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx(|| "tmpfs")
    } else {
        mount(
            Some("/dev/null"),
            fd_path(&fd).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| "bind of /dev/null")
    }
}
