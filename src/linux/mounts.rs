//! `mounts` entries and path resolution inside the rootfs. Every target is resolved with openat2
//! RESOLVE_IN_ROOT (a symlink can never lead out of the rootfs, CVE-2019-19921/CVE-2021-30465) and
//! mounted through `/proc/self/fd/N` of the resolved fd, so no path is looked up twice.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{fstatvfs, FsFlags};
use oci_spec::runtime::Mount;

use super::lsm;
use super::mount_idmap::Prepared;
use crate::error::{Context, Error, Result};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Resolves `path` inside `root` (absolute symlinks are taken relative to `root`).
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path) -> std::io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    sys::openat2(
        root,
        rel,
        libc::O_PATH,
        0,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Resolves `path` inside `root`, creating missing components (directories, and a file for the
/// last one when `kind` is File) without ever leaving `root`.
pub fn open_or_create_in_root(root: BorrowedFd<'_>, path: &Path, kind: Kind) -> Result<OwnedFd> {
    match open_in_root(root, path) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(Error::os(path.display().to_string(), e)),
    }
    let comps: Vec<_> = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    // The deepest ancestor that exists, searched upwards: usually the parent (a mount point in
    // a directory the rootfs has), so one lookup instead of one per component.
    let prefix = |n: usize| -> PathBuf {
        std::iter::once(Component::RootDir)
            .chain(comps[..n].iter().copied())
            .collect()
    };
    let mut existing = comps.len().saturating_sub(1);
    let mut parent = loop {
        let ancestor = prefix(existing);
        match open_in_root(root, &ancestor) {
            Ok(fd) => break fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && existing > 0 => existing -= 1,
            Err(e) => return Err(Error::os(ancestor.display().to_string(), e)),
        }
    };
    let mut sofar = prefix(existing);
    for (i, comp) in comps.iter().enumerate().skip(existing) {
        sofar.push(comp);
        let last = i + 1 == comps.len();
        // `parent` is an O_PATH fd: create through its /proc/self/fd path.
        let parent_path = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd()));
        let target = parent_path.join(comp);
        let res = if last && kind == Kind::File {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(0o755) // as runc: a mount-point file is made like a directory
                .open(&target)
                .map(drop)
        } else {
            fs::DirBuilder::new().mode(0o755).create(&target)
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::os(format!("creating {}", sofar.display()), e)),
        }
        parent = open_in_root(root, &sofar).ctx(|| sofar.display().to_string())?;
    }
    Ok(parent)
}

/// `/proc/self/fd/N`: how an fd is handed to mount(2) as a path without a second lookup.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

pub fn propagation_flags(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// What the `options` of one mount entry mean.
#[derive(Debug)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub recursive: sys::MountAttr,
    pub data: Vec<String>,
    /// `tmpcopyup` (podman, CRI-O): a new tmpfs starts with a copy of what it covers.
    pub tmpcopyup: bool,
    /// `idmap` / `ridmap`: an id-mapped bind mount (see mount_idmap.rs).
    pub idmap: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            recursive: sys::MountAttr::default(),
            data: Vec::new(),
            tmpcopyup: false,
            idmap: false,
        }
    }
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR__ATIME: u64 = 0x70;
const MOUNT_ATTR_RELATIME: u64 = 0x0;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x200000;
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// Options that set or clear mount(2) flags: (name, set, cleared).
const FLAG_OPTIONS: &[(&str, MsFlags, MsFlags)] = &[
    ("defaults", MsFlags::empty(), MsFlags::empty()),
    ("ro", MsFlags::MS_RDONLY, MsFlags::empty()),
    ("rw", MsFlags::empty(), MsFlags::MS_RDONLY),
    ("nosuid", MsFlags::MS_NOSUID, MsFlags::empty()),
    ("suid", MsFlags::empty(), MsFlags::MS_NOSUID),
    ("nodev", MsFlags::MS_NODEV, MsFlags::empty()),
    ("dev", MsFlags::empty(), MsFlags::MS_NODEV),
    ("noexec", MsFlags::MS_NOEXEC, MsFlags::empty()),
    ("exec", MsFlags::empty(), MsFlags::MS_NOEXEC),
    ("sync", MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
    ("async", MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
    ("dirsync", MsFlags::MS_DIRSYNC, MsFlags::empty()),
    ("remount", MsFlags::MS_REMOUNT, MsFlags::empty()),
    ("mand", MsFlags::MS_MANDLOCK, MsFlags::empty()),
    ("nomand", MsFlags::empty(), MsFlags::MS_MANDLOCK),
    ("atime", MsFlags::empty(), MsFlags::MS_NOATIME),
    ("noatime", MsFlags::MS_NOATIME, MsFlags::empty()),
    ("diratime", MsFlags::empty(), MsFlags::MS_NODIRATIME),
    ("nodiratime", MsFlags::MS_NODIRATIME, MsFlags::empty()),
    ("relatime", MsFlags::MS_RELATIME, MsFlags::empty()),
    ("norelatime", MsFlags::empty(), MsFlags::MS_RELATIME),
    ("strictatime", MsFlags::MS_STRICTATIME, MsFlags::empty()),
    ("nostrictatime", MsFlags::empty(), MsFlags::MS_STRICTATIME),
    ("lazytime", MsFlags::MS_LAZYTIME, MsFlags::empty()),
    ("nolazytime", MsFlags::empty(), MsFlags::MS_LAZYTIME),
    ("iversion", MsFlags::MS_I_VERSION, MsFlags::empty()),
    ("noiversion", MsFlags::empty(), MsFlags::MS_I_VERSION),
    ("silent", MsFlags::MS_SILENT, MsFlags::empty()),
    ("loud", MsFlags::empty(), MsFlags::MS_SILENT),
    ("nosymfollow", MS_NOSYMFOLLOW, MsFlags::empty()),
    ("symfollow", MsFlags::empty(), MS_NOSYMFOLLOW),
    ("bind", MsFlags::MS_BIND, MsFlags::empty()),
    (
        "rbind",
        MsFlags::MS_BIND.union(MsFlags::MS_REC),
        MsFlags::empty(),
    ),
];

pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions::default();
    for opt in options {
        if let Some((_, set, clear)) = FLAG_OPTIONS.iter().find(|(n, _, _)| n == opt) {
            o.flags |= *set;
            // remove(), not `&= !`: `!` drops the bits nix has no name for (MS_NOSYMFOLLOW).
            o.flags.remove(*clear);
            o.cleared |= *clear;
        } else if opt == "tmpcopyup" {
            o.tmpcopyup = true;
        } else if opt == "idmap" || opt == "ridmap" {
            o.idmap = true;
        } else if let Some(p) = propagation_flags(opt) {
            o.propagation.push(p);
        } else if let Some((set, clear)) = recursive_attr(opt) {
            o.recursive.set |= set;
            o.recursive.clear |= clear;
        } else {
            o.data.push(opt.clone());
        }
    }
    o
}

/// Every option name the runtime understands itself (the rest go to the filesystem as data):
/// for `features`.
pub fn known_options() -> Vec<&'static str> {
    let mut names: Vec<&str> = FLAG_OPTIONS.iter().map(|(n, _, _)| *n).collect();
    names.extend(PROPAGATION_OPTIONS);
    names.extend(["tmpcopyup", "idmap", "ridmap"]);
    names.extend(RECURSIVE_OPTIONS);
    names
}

const PROPAGATION_OPTIONS: [&str; 8] = [
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];

const RECURSIVE_OPTIONS: [&str; 15] = [
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rrelatime",
    "rnoatime",
    "rstrictatime",
    "rnosymfollow",
    "rsymfollow",
];

/// The `r*` options (rro, rnosuid, ...) that only mount_setattr(AT_RECURSIVE) can apply.
fn recursive_attr(opt: &str) -> Option<(u64, u64)> {
    Some(match opt {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// Flags the kernel locks on a mount seen from a user namespace: a bind remount must repeat them.
pub fn locked_flags(fd: BorrowedFd<'_>) -> MsFlags {
    let Ok(st) = fstatvfs(fd) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (vfs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(vfs) {
            out |= ms;
        }
    }
    out
}

/// Remounts the bind mount at `fd` with `flags` (plus what the kernel has locked on it).
pub fn bind_remount(fd: BorrowedFd<'_>, flags: MsFlags) -> Result<()> {
    let flags = flags | locked_flags(fd) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    mount(
        None::<&str>,
        fd_path(&fd).as_str(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .ctx(|| "bind remount")
}

/// Everything the mount step needs to know about the container beyond the entry itself.
pub struct MountContext<'a> {
    pub root: BorrowedFd<'a>,
    pub in_user_ns: bool,
    pub cgroup_binds: &'a [CgroupBind],
    /// The id-mapped bind mounts, made detached by the parent (mount_idmap.rs).
    pub idmapped: &'a [Prepared],
    /// `linux.mountLabel` (SELinux), checked to be applicable at create.
    pub mount_label: Option<&'a str>,
}

/// Mounts entry `i` of `mounts` into the rootfs.
pub fn mount_entry(ctx: &MountContext<'_>, i: usize, m: &Mount) -> Result<()> {
    let field = || format!("mounts[{i}] ({})", m.destination().display());
    let idmapped = ctx.idmapped.iter().find(|p| p.index == i);
    mount_one(ctx, m, idmapped).ctx(field)
}

/// Files below /proc that may be bind-mounted (what lxcfs provides; runc's list).
const PROC_BINDS_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// `path` with `.` and `..` resolved lexically (as seen from the container's root).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The runtime trusts /proc after mounting it (fd paths, sysctls, masking): only a procfs may
/// go on /proc, and below it only the files lxcfs provides (CVE-2019-16884, CVE-2019-19921).
fn check_proc_destination(m: &Mount, typ: &str) -> Result<()> {
    let dest = lexical(m.destination());
    if dest == Path::new("/proc") && typ != "proc" {
        return Err(Error::invalid(format!(
            "only a procfs may be mounted on /proc, not {typ:?}"
        )));
    }
    if dest.starts_with("/proc") && dest != Path::new("/proc") {
        let allowed = PROC_BINDS_ALLOWED.iter().any(|p| dest == Path::new(p));
        if !allowed {
            return Err(Error::invalid(format!(
                "{}: nothing may be mounted below /proc but {}",
                dest.display(),
                PROC_BINDS_ALLOWED.join(", ")
            )));
        }
    }
    Ok(())
}

/// Fails unless `fd` is on a procfs: what was just mounted as proc, or what is about to be
/// trusted as /proc, must not be a directory the image or a volume supplied.
pub fn ensure_procfs(fd: BorrowedFd<'_>) -> Result<()> {
    let st = nix::sys::statfs::fstatfs(fd).ctx(|| "fstatfs")?;
    if st.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(Error::invalid("not a procfs"));
    }
    Ok(())
}

fn mount_one(ctx: &MountContext<'_>, m: &Mount, idmapped: Option<&Prepared>) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    check_proc_destination(m, typ)?;
    let is_bind = opts.flags.contains(MsFlags::MS_BIND) || typ == "bind";
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(ctx, m, &opts);
    }
    let source = m.source().as_deref();
    let kind = match source {
        Some(src) if is_bind && !src.is_dir() => Kind::File,
        _ => Kind::Dir,
    };
    if is_bind {
        let src = source.ok_or_else(|| Error::invalid("bind mount without a source"))?;
        fs::metadata(src).ctx(|| format!("source {}", src.display()))?;
    }
    let mapped = opts.idmap || m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty());
    if mapped && idmapped.is_none() {
        // The parent prepares every mount mount_idmap.rs recognises; never mount it unmapped.
        return Err(Error::invalid("id-mapped mount was not prepared"));
    }
    let dest = open_or_create_in_root(ctx.root, m.destination(), kind)?;
    let mut data = opts.data.clone();
    if let Some(context) = ctx.mount_label.and_then(|l| lsm::mount_context(typ, l)) {
        if !is_bind {
            data.push(context);
        }
    }
    let data = data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if let Some(prepared) = idmapped {
        sys::move_mount_to(prepared.tree.as_fd(), dest.as_fd())
            .ctx(|| "move_mount of the id-mapped tree")?;
    } else if is_bind {
        let rec = opts.flags & MsFlags::MS_REC;
        mount(
            source,
            fd_path(&dest).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .ctx(|| "bind mount")?;
    }
    if is_bind {
        let extra = opts
            .flags
            .difference(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        let mounted = open_in_root(ctx.root, m.destination()).ctx(|| "reopening")?;
        if !extra.is_empty() {
            bind_remount(mounted.as_fd(), extra)?;
        }
        set_propagation_and_attrs(&mounted, &opts)
    } else {
        let flags = opts.flags.difference(MsFlags::MS_REMOUNT);
        let res = mount(
            source.or(Some(Path::new(typ))),
            fd_path(&dest).as_str(),
            Some(typ),
            flags,
            data,
        );
        match res {
            Ok(()) => {}
            // sysfs cannot be mounted in a user namespace without its own network namespace:
            // runc falls back to a recursive bind of the host's /sys, read-only.
            Err(nix::Error::EPERM) if typ == "sysfs" && ctx.in_user_ns => {
                mount(
                    Some("/sys"),
                    fd_path(&dest).as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .ctx(|| "bind of /sys")?;
            }
            Err(e) => return Err(Error::from(e).context(format!("mount {typ}"))),
        }
        if opts.tmpcopyup && typ == "tmpfs" {
            // `dest` still refers to the directory the tmpfs now covers.
            let covered = PathBuf::from(fd_path(&dest));
            let mounted = open_in_root(ctx.root, m.destination()).ctx(|| "reopening")?;
            let target = PathBuf::from(fd_path(&mounted));
            copy_tree(&covered, &target).ctx(|| "tmpcopyup")?;
            copy_owner_and_mode(&covered, &target).ctx(|| "tmpcopyup")?;
        }
        let mounted = open_in_root(ctx.root, m.destination()).ctx(|| "reopening")?;
        if typ == "proc" {
            ensure_procfs(mounted.as_fd()).ctx(|| "after mounting proc")?;
        }
        if let (Some(label), "mqueue") = (ctx.mount_label, typ) {
            lsm::label_mount_root(Path::new(&fd_path(&mounted)), label)?;
        }
        set_propagation_and_attrs(&mounted, &opts)
    }
}

/// Copies a directory tree (files, directories, symlinks, with modes and owners) without ever
/// following a symlink.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for entry in fs::read_dir(from).ctx(|| from.display().to_string())? {
        let entry = entry.ctx(|| from.display().to_string())?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src).ctx(|| src.display().to_string())?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&src).ctx(|| src.display().to_string())?;
            std::os::unix::fs::symlink(&target, &dst).ctx(|| dst.display().to_string())?;
        } else if ft.is_dir() {
            fs::create_dir(&dst).ctx(|| dst.display().to_string())?;
            copy_tree(&src, &dst)?;
        } else if ft.is_file() {
            fs::copy(&src, &dst).ctx(|| dst.display().to_string())?;
        } else {
            continue; // device nodes, fifos and sockets are not copied up (as runc)
        }
        if !ft.is_symlink() {
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .ctx(|| dst.display().to_string())?;
        }
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))
            .ctx(|| dst.display().to_string())?;
    }
    Ok(())
}

fn copy_owner_and_mode(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::metadata(from).ctx(|| from.display().to_string())?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .ctx(|| to.display().to_string())?;
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))
        .ctx(|| to.display().to_string())
}

fn set_propagation_and_attrs(mounted: &OwnedFd, opts: &MountOptions) -> Result<()> {
    for p in &opts.propagation {
        mount(
            None::<&str>,
            fd_path(mounted).as_str(),
            None::<&str>,
            *p,
            None::<&str>,
        )
        .ctx(|| "setting propagation")?;
    }
    if opts.recursive != sys::MountAttr::default() {
        sys::mount_setattr(mounted.as_fd(), Path::new(""), true, opts.recursive)
            .ctx(|| "mount_setattr of recursive options")?;
    }
    Ok(())
}

/// The cgroup filesystem: on v2 a cgroup2 mount (in a cgroup namespace it shows the container's
/// cgroup as its root), else a bind of the container's cgroup; on v1 and hybrid hosts a tmpfs
/// holding a bind of each hierarchy's container cgroup, as runc does.
fn mount_cgroup(ctx: &MountContext<'_>, m: &Mount, opts: &MountOptions) -> Result<()> {
    let dest = open_or_create_in_root(ctx.root, m.destination(), Kind::Dir)?;
    let flags = opts
        .flags
        .difference(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    let hardening = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if super::cgroups::is_unified() {
        let fresh = mount(
            Some("cgroup2"),
            fd_path(&dest).as_str(),
            Some("cgroup2"),
            flags,
            None::<&str>,
        );
        if fresh.is_ok() {
            return Ok(());
        }
        let src = ctx
            .cgroup_binds
            .iter()
            .find(|b| b.unified)
            .map(|b| b.source.as_path())
            .unwrap_or(Path::new("/sys/fs/cgroup"));
        return bind_at(ctx, &dest, m.destination(), src, flags | hardening);
    }
    mount(
        Some("tmpfs"),
        fd_path(&dest).as_str(),
        Some("tmpfs"),
        hardening,
        Some("mode=755"),
    )
    .ctx(|| "tmpfs for the cgroup hierarchies")?;
    // The tmpfs itself stays writable and the unified hierarchy of a hybrid host is left out,
    // as runc does: each v1 hierarchy is a read-only (per `options`) bind of its own.
    for bind in ctx.cgroup_binds.iter().filter(|b| !b.unified) {
        let sub = m.destination().join(&bind.name);
        let target = open_or_create_in_root(ctx.root, &sub, Kind::Dir)?;
        bind_at(ctx, &target, &sub, &bind.source, flags | hardening)?;
    }
    Ok(())
}

fn bind_at(
    ctx: &MountContext<'_>,
    target: &OwnedFd,
    path: &Path,
    src: &Path,
    flags: MsFlags,
) -> Result<()> {
    mount(
        Some(src),
        fd_path(target).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind of {}", src.display()))?;
    let mounted = open_in_root(ctx.root, path).ctx(|| "reopening")?;
    bind_remount(mounted.as_fd(), flags)
}

/// One cgroup hierarchy as the container should see it: `name` below /sys/fs/cgroup, and the
/// host directory of the container's cgroup in it.
pub struct CgroupBind {
    pub name: String,
    pub source: PathBuf,
    pub unified: bool,
}

/// The host's view of the init's cgroups, from the runtime's mountinfo (read before the clone)
/// and the init's /proc/self/cgroup; called before the cgroup namespace is entered, since
/// inside it /proc/self/cgroup is relative to the new root.
pub fn cgroup_binds(host_mountinfo: &str) -> Vec<CgroupBind> {
    let own: Vec<(String, String)> = fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let _ = p.next()?;
            Some((p.next()?.to_string(), p.next()?.to_string()))
        })
        .collect();
    let info = host_mountinfo;
    let mut binds = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let super_opts = post.nth(1).unwrap_or("");
        let f: Vec<&str> = pre.split(' ').collect();
        let (Some(root), Some(mountpoint)) = (f.get(3), f.get(4)) else {
            continue;
        };
        // The hierarchy's line in /proc/self/cgroup: "" for cgroup2, else its controllers
        // (and name=...) as the super options list them.
        let key: Vec<&str> = match fstype {
            "cgroup2" => Vec::new(),
            "cgroup" => super_opts
                .split(',')
                .filter(|o| *o != "rw" && *o != "ro" && !o.starts_with("release_agent"))
                .collect(),
            _ => continue,
        };
        let Some((_, path)) = own.iter().find(|(ctrls, _)| {
            let mut c: Vec<&str> = ctrls.split(',').filter(|s| !s.is_empty()).collect();
            let mut k = key.clone();
            c.sort_unstable();
            k.sort_unstable();
            c == k
        }) else {
            continue;
        };
        let rel = Path::new(path)
            .strip_prefix(root)
            .unwrap_or(Path::new(path));
        let source = Path::new(mountpoint).join(rel.strip_prefix("/").unwrap_or(rel));
        let name = Path::new(mountpoint)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        binds.push(CgroupBind {
            name,
            source,
            unified: fstype == "cgroup2",
        });
    }
    binds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_option_is_understood_by_the_parser() {
        for name in known_options() {
            let o = parse_options(&[name.to_string()]);
            assert!(o.data.is_empty(), "{name} would be passed as fs data");
        }
    }

    #[test]
    fn options_set_and_clear_flags_in_order() {
        let o = parse_options(&["ro".into(), "rw".into(), "nosuid".into(), "size=1m".into()]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.flags.contains(MsFlags::MS_NOSUID));
        assert_eq!(o.data, vec!["size=1m".to_string()]);
        // MS_NOSYMFOLLOW has no name in nix: clearing other flags must keep it.
        let n = parse_options(&["nosymfollow".into(), "rw".into(), "nosuid".into()]);
        assert!(n.flags.contains(MS_NOSYMFOLLOW | MsFlags::MS_NOSUID));
        let r = parse_options(&["rro".into(), "rnoatime".into()]);
        assert_eq!(r.recursive.set, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOATIME);
        assert_eq!(r.recursive.clear, MOUNT_ATTR__ATIME);
    }
}
