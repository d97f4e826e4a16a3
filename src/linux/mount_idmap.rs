//! Id-mapped bind mounts (runtime-spec 1.1: `mounts[].uidMappings`/`gidMappings`, and runc's
//! `idmap`/`ridmap` options). Only a process privileged over the source's filesystem (the host's
//! root) may idmap a mount, and only while it is detached, but the container's init may already
//! live in its own user namespace. So the parent prepares each one before the clone: open_tree
//! clones the source detached, mount_setattr(MOUNT_ATTR_IDMAP) gives it the mapping of a user
//! namespace, and the init, which inherits the fd, move_mounts it onto the target it resolved
//! inside the rootfs (mounts.rs). A tree never attached vanishes with its last fd: a failed
//! create leaves nothing mounted.
//!
//! The mapping is the mount's own uid/gidMappings (a throwaway process in a new user namespace
//! with those maps provides it, as in runc and crun), or, for `idmap`/`ridmap` without them, the
//! container's user namespace: its linux.uidMappings/gidMappings, or the one it joins by path.
//! As in the kernel's own terms, a file owned by `containerID + n` on disk shows as
//! `hostID + n` through the mount.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Mount, Spec};

use super::mounts::parse_options;
use crate::error::{Context, Error, Result};
use crate::spec::Bundle;

/// An id-mapped copy of `mounts[index]`'s source, detached, for the init to attach.
pub struct Prepared {
    pub index: usize,
    pub tree: OwnedFd,
}

/// What one mount entry asks for: no idmapping, or whose mapping and how deep.
struct Request<'a> {
    /// The mount's own maps; None: the container's user namespace.
    maps: Option<(&'a [LinuxIdMapping], &'a [LinuxIdMapping])>,
    /// open_tree(AT_RECURSIVE): `rbind` copies the submounts.
    clone_recursive: bool,
    /// mount_setattr(AT_RECURSIVE): `ridmap` maps the submounts too.
    map_recursive: bool,
}

fn nonempty(v: &Option<Vec<LinuxIdMapping>>) -> &[LinuxIdMapping] {
    v.as_deref().unwrap_or_default()
}

/// None when `m` is no id-mapped mount; an error naming the field when it is one that cannot be.
fn request(m: &Mount) -> Result<Option<Request<'_>>> {
    let (uids, gids) = (nonempty(m.uid_mappings()), nonempty(m.gid_mappings()));
    let options = m.options().as_deref().unwrap_or_default();
    let ridmap = options.iter().any(|o| o == "ridmap");
    let idmap = ridmap || options.iter().any(|o| o == "idmap");
    if uids.is_empty() && gids.is_empty() && !idmap {
        return Ok(None);
    }
    let opts = parse_options(options);
    let is_bind =
        opts.flags.contains(nix::mount::MsFlags::MS_BIND) || m.typ().as_deref() == Some("bind");
    if !is_bind {
        return Err(Error::invalid(
            "uidMappings/gidMappings (idmap, ridmap) apply to bind mounts only",
        ));
    }
    if uids.is_empty() != gids.is_empty() {
        return Err(Error::invalid(
            "uidMappings and gidMappings must be given together",
        ));
    }
    for (field, maps) in [("uidMappings", uids), ("gidMappings", gids)] {
        if let Some(j) = maps.iter().position(|m| m.size() == 0) {
            return Err(Error::invalid(format!("{field}[{j}]: size must not be 0")));
        }
    }
    Ok(Some(Request {
        maps: (!uids.is_empty()).then_some((uids, gids)),
        clone_recursive: opts.flags.contains(nix::mount::MsFlags::MS_REC),
        map_recursive: ridmap,
    }))
}

fn field(i: usize, m: &Mount) -> String {
    format!("mounts[{i}] ({})", m.destination().display())
}

fn container_maps(spec: &Spec) -> (&[LinuxIdMapping], &[LinuxIdMapping]) {
    let linux = spec.linux().as_ref();
    (
        linux
            .map(|l| nonempty(l.uid_mappings()))
            .unwrap_or_default(),
        linux
            .map(|l| nonempty(l.gid_mappings()))
            .unwrap_or_default(),
    )
}

fn user_namespace(spec: &Spec) -> Option<&oci_spec::runtime::LinuxNamespace> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::User))
}

/// Checks every id-mapped mount of `spec`, before anything exists.
pub fn validate(spec: &Spec) -> Result<()> {
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(req) = request(m).ctx(|| field(i, m))? else {
            continue;
        };
        if !nix::unistd::geteuid().is_root() {
            // The kernel idmaps only for a process privileged over the source's filesystem.
            return Err(Error::invalid(format!(
                "{}: id-mapped mounts need the runtime to run as root (not rootless)",
                field(i, m)
            )));
        }
        if req.maps.is_some() {
            continue;
        }
        match user_namespace(spec) {
            None => {
                return Err(Error::invalid(format!(
                    "{}: idmap without uidMappings/gidMappings takes the container's user \
                     namespace, and linux.namespaces has none",
                    field(i, m)
                )))
            }
            Some(ns) if ns.path().is_none() && container_maps(spec).0.is_empty() => {
                return Err(Error::invalid(format!(
                    "{}: idmap without uidMappings/gidMappings takes the container's \
                     linux.uidMappings/gidMappings, and there are none",
                    field(i, m)
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Makes the detached, id-mapped copy of every such mount of the bundle (in the parent, before
/// the clone of the init).
pub fn prepare(bundle: &Bundle) -> Result<Vec<Prepared>> {
    let spec = &bundle.spec;
    let mut out = Vec::new();
    // One user namespace per distinct mapping, shared by the mounts that use it.
    let mut namespaces: HashMap<String, OwnedFd> = HashMap::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(req) = request(m).ctx(|| field(i, m))? else {
            continue;
        };
        let joined = bundle
            .joined_namespaces
            .iter()
            .find(|(k, _)| *k == LinuxNamespaceType::User)
            .map(|(_, fd)| fd.as_fd());
        let userns: BorrowedFd<'_> = match (req.maps, joined) {
            (None, Some(fd)) => fd,
            (maps, _) => {
                let (uids, gids) = maps.unwrap_or_else(|| container_maps(spec));
                let key = format!("{}|{}", render(uids), render(gids));
                if !namespaces.contains_key(&key) {
                    let what = if maps.is_some() {
                        field(i, m) + ".uidMappings/gidMappings"
                    } else {
                        "linux.uidMappings/gidMappings".to_string()
                    };
                    let fd = userns_with(uids, gids).ctx(|| what)?;
                    namespaces.insert(key.clone(), fd);
                }
                namespaces[&key].as_fd()
            }
        };
        let tree = idmapped_tree(m, &req, userns).ctx(|| field(i, m))?;
        out.push(Prepared { index: i, tree });
    }
    Ok(out)
}

fn idmapped_tree(m: &Mount, req: &Request<'_>, userns: BorrowedFd<'_>) -> Result<OwnedFd> {
    let src = m
        .source()
        .as_deref()
        .ok_or_else(|| Error::invalid("bind mount without a source"))?;
    let tree = sys::open_tree_clone(src, req.clone_recursive)
        .ctx(|| format!("source {}: open_tree", src.display()))?;
    sys::mount_setattr_idmap(tree.as_fd(), req.map_recursive, userns).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EINVAL) => format!(
                "the filesystem of {} (or this kernel) cannot idmap mounts",
                src.display()
            ),
            _ => format!("idmapping {}", src.display()),
        };
        Error::os(format!("{why} (mount_setattr MOUNT_ATTR_IDMAP)"), e)
    })?;
    Ok(tree)
}

fn render(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// A user namespace with these maps, as an fd: a child made in a new user namespace waits on a
/// pipe while we write its maps and open its namespace, then exits.
fn userns_with(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<OwnedFd> {
    let (wait_r, wait_w) = nix::unistd::pipe().ctx(|| "pipe")?;
    let pid = match sys::clone3(libc::CLONE_NEWUSER as u64, None) {
        Ok(sys::CloneResult::Child) => {
            drop(wait_w);
            let mut b = [0u8; 1];
            // Returns at EOF: when the parent is done, or gone.
            let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&wait_r), &mut b);
            sys::exit_now(0)
        }
        Ok(sys::CloneResult::Parent(pid)) => pid,
        Err(e) => return Err(Error::os("clone3 of a user namespace helper", e)),
    };
    drop(wait_r);
    let result = (|| {
        fs::write(format!("/proc/{pid}/uid_map"), render(uids)).ctx(|| "writing uid_map")?;
        fs::write(format!("/proc/{pid}/gid_map"), render(gids)).ctx(|| "writing gid_map")?;
        let ns = fs::File::open(format!("/proc/{pid}/ns/user")).ctx(|| "opening its ns/user")?;
        Ok(OwnedFd::from(ns))
    })();
    drop(wait_w);
    if result.is_err() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = waitpid(Pid::from_raw(pid), None);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mount(v: serde_json::Value) -> Mount {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn what_makes_an_idmapped_mount() {
        let plain = mount(json!({"destination": "/a", "type": "bind", "source": "/a"}));
        assert!(request(&plain).unwrap().is_none());
        let r = mount(json!({"destination": "/a", "source": "/a", "options": ["rbind", "ridmap"]}));
        let r = request(&r).unwrap().unwrap();
        assert!(r.maps.is_none() && r.clone_recursive && r.map_recursive);
        let tmpfs = mount(
            json!({"destination": "/a", "type": "tmpfs", "source": "tmpfs",
            "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
        );
        assert!(request(&tmpfs).is_err());
        let half = mount(json!({"destination": "/a", "type": "bind", "source": "/a",
            "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}));
        assert!(request(&half).is_err());
    }
}
