//! Namespaces: which ones clone3 creates, which are joined by path and when, and the id maps.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::prctl;
use oci_spec::runtime::LinuxNamespaceType;

use crate::error::{Context, Error, Result};
use crate::spec::Bundle;

fn flag(kind: LinuxNamespaceType) -> CloneFlags {
    CloneFlags::from_bits_retain(kind as i32)
}

/// Namespaces created by clone3 itself. The cgroup namespace is left out: the child unshares it
/// once the parent has moved it into its cgroup, so that the container's cgroup is its root.
/// The time namespace is made by the parent before the clone (offsets must be written before a
/// process enters it).
pub fn clone_flags(bundle: &Bundle) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    let joins_user = bundle
        .joined_namespaces
        .iter()
        .any(|(k, _)| *k == LinuxNamespaceType::User);
    for kind in [
        LinuxNamespaceType::User,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ] {
        // Namespaces made while joining a foreign user namespace must be owned by it: the child
        // unshares those after its setns.
        if bundle.creates_namespace(kind) && !(joins_user && kind != LinuxNamespaceType::Pid) {
            flags |= flag(kind);
        }
    }
    flags
}

/// Namespaces the child unshares after joining a user namespace by path (see clone_flags).
pub fn late_unshare_flags(bundle: &Bundle) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    if bundle.creates_namespace(LinuxNamespaceType::Cgroup) {
        flags |= CloneFlags::CLONE_NEWCGROUP;
    }
    if bundle
        .joined_namespaces
        .iter()
        .any(|(k, _)| *k == LinuxNamespaceType::User)
    {
        for kind in [
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
        ] {
            if bundle.creates_namespace(kind) {
                flags |= flag(kind);
            }
        }
    }
    flags
}

/// pid and time namespaces apply to children only, so the parent enters them (joined by path, or a
/// new time namespace with its offsets) just for the clone, and leaves again afterwards.
pub struct ForChildren {
    restore: Vec<(CloneFlags, OwnedFd)>,
}

impl ForChildren {
    pub fn enter(bundle: &Bundle) -> Result<Self> {
        let mut this = Self::join(&bundle.joined_namespaces)?;
        if bundle.creates_namespace(LinuxNamespaceType::Time) {
            let own = fs::File::open("/proc/self/ns/time_for_children")
                .ctx(|| "/proc/self/ns/time_for_children")?;
            let f = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
            this.restore.push((f, OwnedFd::from(own)));
            unshare(f).ctx(|| "creating time namespace")?;
            write_time_offsets(bundle)?;
        }
        Ok(this)
    }

    /// Enters the pid and time namespaces among `joined` for our next child.
    pub fn join(joined: &[(LinuxNamespaceType, OwnedFd)]) -> Result<Self> {
        let mut restore = Vec::new();
        let user = joined.iter().find(|(k, _)| *k == LinuxNamespaceType::User);
        // Unprivileged, we may enter the container's pid namespace only from inside the user
        // namespace that owns it, and once there there is no way back: we stay (nothing is
        // lost, an unprivileged caller has no privilege outside to keep). Non-dumpable first,
        // so that the container's processes cannot reach the runtime through /proc.
        let stay = match user {
            Some((_, fd)) if crate::linux::rootless::caller_unprivileged() => {
                prctl::set_dumpable(false).ctx(|| "prctl(PR_SET_DUMPABLE)")?;
                setns(fd.as_fd(), CloneFlags::CLONE_NEWUSER)
                    .ctx(|| "joining the container's user namespace")?;
                true
            }
            _ => false,
        };
        for (kind, fd) in joined {
            let (proc_name, f) = match kind {
                LinuxNamespaceType::Pid => ("pid_for_children", CloneFlags::CLONE_NEWPID),
                LinuxNamespaceType::Time => (
                    "time_for_children",
                    CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
                ),
                _ => continue,
            };
            if !stay {
                let own = fs::File::open(format!("/proc/self/ns/{proc_name}"))
                    .ctx(|| format!("/proc/self/ns/{proc_name}"))?;
                restore.push((f, OwnedFd::from(own)));
            }
            setns(fd.as_fd(), f).ctx(|| format!("joining {kind} namespace"))?;
        }
        Ok(ForChildren { restore })
    }

    pub fn leave(self) -> Result<()> {
        for (f, fd) in self.restore {
            setns(fd.as_fd(), f).ctx(|| "restoring the runtime's namespace")?;
        }
        Ok(())
    }
}

fn write_time_offsets(bundle: &Bundle) -> Result<()> {
    let Some(offsets) = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
    else {
        return Ok(());
    };
    let mut text = String::new();
    for (clock, off) in offsets {
        let name = match clock.as_str() {
            "monotonic" | "boottime" => clock.as_str(),
            other => {
                return Err(Error::invalid(format!(
                    "linux.timeOffsets: unknown clock {other:?}"
                )))
            }
        };
        text.push_str(&format!(
            "{name} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    fs::write("/proc/self/timens_offsets", text).ctx(|| "linux.timeOffsets: writing timens_offsets")
}

/// In the child: joins the namespaces given by path (the user namespace first, so that the
/// others are joined with its privileges), then unshares what is left to create.
pub fn join_and_unshare(bundle: &Bundle) -> Result<()> {
    join_all(&bundle.joined_namespaces)?;
    let late = late_unshare_flags(bundle);
    if !late.is_empty() {
        unshare(late).ctx(|| "unsharing namespaces")?;
    }
    Ok(())
}

/// setns into each of `joined` but pid and time (those the parent entered for the clone).
pub fn join_all(joined: &[(LinuxNamespaceType, OwnedFd)]) -> Result<()> {
    let order = |k: &LinuxNamespaceType| u8::from(*k != LinuxNamespaceType::User);
    let mut joins: Vec<_> = joined.iter().collect();
    joins.sort_by_key(|(k, _)| order(k));
    for (kind, fd) in joins {
        if matches!(kind, LinuxNamespaceType::Pid | LinuxNamespaceType::Time) {
            continue;
        }
        // The parent of an unprivileged runtime may have taken us in already (ForChildren).
        if *kind == LinuxNamespaceType::User && is_current(fd, "user") {
            continue;
        }
        setns(fd.as_fd(), flag(*kind)).ctx(|| format!("joining {kind} namespace"))?;
    }
    Ok(())
}

/// Whether `fd` is the namespace we are in (setns into it again would fail with EINVAL).
fn is_current(fd: &OwnedFd, proc_name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(ours), Ok(theirs)) = (
        fs::metadata(format!("/proc/self/ns/{proc_name}")),
        nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(fd)),
    ) else {
        return false;
    };
    ours.ino() == theirs.st_ino && ours.dev() == theirs.st_dev
}

/// The namespaces of a running process that differ from ours: what `exec` must join.
pub fn of_process(pid: i32) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>> {
    use std::os::unix::fs::MetadataExt;
    let kinds = [
        (LinuxNamespaceType::User, "user"),
        (LinuxNamespaceType::Mount, "mnt"),
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Network, "net"),
        (LinuxNamespaceType::Ipc, "ipc"),
        (LinuxNamespaceType::Uts, "uts"),
        (LinuxNamespaceType::Cgroup, "cgroup"),
        (LinuxNamespaceType::Time, "time"),
    ];
    let mut out = Vec::new();
    for (kind, name) in kinds {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let Ok(file) = fs::File::open(&theirs) else {
            continue; // a namespace type this kernel lacks
        };
        let ours = fs::metadata(format!("/proc/self/ns/{name}")).ok();
        let meta = file.metadata().ctx(|| theirs.clone())?;
        if ours.is_some_and(|o| o.ino() == meta.ino() && o.dev() == meta.dev()) {
            continue;
        }
        out.push((kind, OwnedFd::from(file)));
    }
    Ok(out)
}
