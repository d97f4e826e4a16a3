//! User namespace id maps: checking `linux.uidMappings`/`gidMappings` before anything exists (what
//! the kernel would refuse half-way through a create, and, for an unprivileged caller, ranges it
//! does not own), and writing them for the container's init.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use oci_spec::runtime::{Linux, LinuxIdMapping};

use super::rootless::{self, SubIds};
use crate::error::{Context, Error, Result};

/// Ranges the kernel accepts in one map since Linux 4.15 (UID_GID_MAP_MAX_EXTENTS); 5 before.
const MAX_RANGES: usize = 340;
const MAX_RANGES_BEFORE_4_15: usize = 5;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uid,
    Gid,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Uid => "linux.uidMappings",
            Kind::Gid => "linux.gidMappings",
        }
    }
    fn proc_file(self) -> &'static str {
        match self {
            Kind::Uid => "uid_map",
            Kind::Gid => "gid_map",
        }
    }
    fn helper(self) -> &'static str {
        match self {
            Kind::Uid => "newuidmap",
            Kind::Gid => "newgidmap",
        }
    }
    /// The caller's own id of this kind (effective: the kernel checks the euid/egid).
    fn own_id(self) -> u32 {
        match self {
            Kind::Uid => nix::unistd::geteuid().as_raw(),
            Kind::Gid => nix::unistd::getegid().as_raw(),
        }
    }
}

/// How the container gets its user namespace, as far as the maps are concerned.
pub enum UserNs<'a> {
    None,
    New,
    /// Joined by path: its maps are fixed already.
    Joined(&'a OwnedFd),
}

/// Checks both maps against the namespace list and the kernel's rules; for an unprivileged
/// caller also that every host range is its own id or inside its subordinate ids.
pub fn validate(linux: &Linux, userns: UserNs) -> Result<()> {
    let uid = linux.uid_mappings().as_deref().unwrap_or_default();
    let gid = linux.gid_mappings().as_deref().unwrap_or_default();
    match userns {
        // What clone3 would refuse with a bare EPERM (runc: "rootless container requires user
        // namespaces").
        UserNs::None if rootless::caller_unprivileged() => {
            return Err(Error::invalid(format!(
                "linux.namespaces: run as uid {} (not root), the container needs a user \
                 namespace (see `spec --rootless`)",
                nix::unistd::geteuid()
            )));
        }
        UserNs::None if !uid.is_empty() || !gid.is_empty() => {
            let field = if uid.is_empty() { Kind::Gid } else { Kind::Uid }.field();
            return Err(Error::invalid(format!(
                "{field}: given without a user namespace in linux.namespaces"
            )));
        }
        UserNs::New => {
            for (maps, kind) in [(uid, Kind::Uid), (gid, Kind::Gid)] {
                if maps.is_empty() {
                    return Err(Error::invalid(format!(
                        "{}: a new user namespace needs them (or a path to join in \
                         linux.namespaces)",
                        kind.field()
                    )));
                }
            }
        }
        UserNs::Joined(fd) => check_joined(fd, uid, gid)?,
        UserNs::None => {}
    }
    let max = max_ranges();
    let subids = if !rootless::caller_unprivileged() {
        None
    } else {
        Some(SubIds::of_caller())
    };
    for (maps, kind) in [(uid, Kind::Uid), (gid, Kind::Gid)] {
        check_ranges(maps, kind.field(), max)?;
        if let Some(subids) = &subids {
            if matches!(userns, UserNs::New) {
                check_owned(maps, kind, subids)?;
            }
        }
    }
    Ok(())
}

/// Maps given for a user namespace joined by path must be the ones it has (runc 1.2 checks the
/// same): the runtime cannot change them, and a config that says otherwise is wrong about the
/// ownership of everything in the container. They are read from a process in that namespace;
/// with none to be found (a namespace kept only by a bind mount) they cannot be checked.
fn check_joined(fd: &OwnedFd, uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<()> {
    if uid.is_empty() && gid.is_empty() {
        return Ok(());
    }
    let Some(pid) = process_in_namespace(fd) else {
        return Ok(());
    };
    for (maps, kind) in [(uid, Kind::Uid), (gid, Kind::Gid)] {
        if maps.is_empty() {
            continue;
        }
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/{}", kind.proc_file())) else {
            continue;
        };
        let mut have: Vec<[u64; 3]> = text
            .lines()
            .filter_map(|l| {
                let n: Vec<u64> = l
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                (n.len() == 3).then(|| [n[0], n[1], n[2]])
            })
            .collect();
        let mut want: Vec<[u64; 3]> = maps
            .iter()
            .map(|m| [m.container_id().into(), m.host_id().into(), m.size().into()])
            .collect();
        have.sort_unstable();
        want.sort_unstable();
        if have != want {
            return Err(Error::invalid(format!(
                "{}: the user namespace joined by path maps {}, not what is given",
                kind.field(),
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            )));
        }
    }
    Ok(())
}

/// A process whose user namespace is the one behind `fd`.
fn process_in_namespace(fd: &OwnedFd) -> Option<u32> {
    let ns = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/user"))
                .is_ok_and(|m| m.ino() == ns.st_ino && m.dev() == ns.st_dev)
        })
}

/// The kernel's rules for one id map (also those of an idmapped mount's `uidMappings`); errors
/// name `field[i]`. `max` is [`max_ranges`].
pub fn check_ranges(maps: &[LinuxIdMapping], field: &str, max: usize) -> Result<()> {
    if maps.len() > max {
        return Err(Error::invalid(format!(
            "{field}: {} ranges, the kernel accepts at most {max}",
            maps.len()
        )));
    }
    // The kernel takes a map in one write() of less than a page.
    let text = render(maps);
    let page = page_size();
    if text.len() >= page {
        return Err(Error::invalid(format!(
            "{field}: {} ranges make {} bytes of id map, the kernel takes less than {page}",
            maps.len(),
            text.len(),
        )));
    }
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            return Err(Error::invalid(format!("{field}[{i}]: size is 0")));
        }
        for (side, start) in [("containerID", m.container_id()), ("hostID", m.host_id())] {
            // The last id of a range must stay below 4294967295 ((uid_t)-1, "no id").
            if u64::from(start) + u64::from(m.size()) > u64::from(u32::MAX) {
                return Err(Error::invalid(format!(
                    "{field}[{i}]: {side} {start} + size {} runs past the largest id {}",
                    m.size(),
                    u32::MAX - 1
                )));
            }
        }
        for (j, earlier) in maps[..i].iter().enumerate() {
            for (side, a, b) in [
                ("container", m.container_id(), earlier.container_id()),
                ("host", m.host_id(), earlier.host_id()),
            ] {
                if overlaps(a, m.size(), b, earlier.size()) {
                    return Err(Error::invalid(format!(
                        "{field}[{i}]: {side} ids {} overlap those of {field}[{j}] ({})",
                        span(a, m.size()),
                        span(b, earlier.size())
                    )));
                }
            }
        }
    }
    Ok(())
}

fn overlaps(a: u32, a_len: u32, b: u32, b_len: u32) -> bool {
    let (a, a_end) = (u64::from(a), u64::from(a) + u64::from(a_len));
    let (b, b_end) = (u64::from(b), u64::from(b) + u64::from(b_len));
    a < b_end && b < a_end
}

fn span(start: u32, size: u32) -> String {
    let last = u64::from(start) + u64::from(size) - 1;
    if size == 1 {
        start.to_string()
    } else {
        format!("{start}-{last}")
    }
}

/// An unprivileged caller may map its own id (alone, size 1) or ids inside its subordinate ranges,
/// exactly what newuidmap/newgidmap grant.
fn check_owned(maps: &[LinuxIdMapping], kind: Kind, subids: &SubIds) -> Result<()> {
    let own = kind.own_id();
    let ranges = match kind {
        Kind::Uid => &subids.uids,
        Kind::Gid => &subids.gids,
    };
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 1 && m.host_id() == own {
            continue;
        }
        if !rootless::covered(ranges, m.host_id(), m.size()) {
            let file = match kind {
                Kind::Uid => "/etc/subuid",
                Kind::Gid => "/etc/subgid",
            };
            let have = if ranges.is_empty() {
                "none".to_string()
            } else {
                ranges
                    .iter()
                    .map(|(s, n)| span(*s, *n))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Error::invalid(format!(
                "{}[{i}]: host ids {} are neither the caller's own id {own} nor inside its \
                 subordinate ids in {file} ({have})",
                kind.field(),
                span(m.host_id(), m.size()),
            )));
        }
    }
    Ok(())
}

/// How many ranges this kernel takes in one map.
pub fn max_ranges() -> usize {
    let Ok(uts) = nix::sys::utsname::uname() else {
        return MAX_RANGES;
    };
    let release = uts.release().to_string_lossy().into_owned();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    match (nums.next(), nums.next()) {
        (Some(major), Some(minor)) if (major, minor) < (4, 15) => MAX_RANGES_BEFORE_4_15,
        _ => MAX_RANGES,
    }
}

/// Writes the init's maps from the parent. Root writes /proc/<pid>/{uid,gid}_map itself; an
/// unprivileged caller may write only a single range of its own id (after "deny" to setgroups,
/// for the gid map), anything else goes through the setuid helpers newuidmap/newgidmap.
pub fn write(pid: i32, uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<()> {
    let privileged = !rootless::caller_unprivileged();
    for (maps, kind) in [(uid, Kind::Uid), (gid, Kind::Gid)] {
        if maps.is_empty() {
            continue;
        }
        let own_only = maps.len() == 1 && maps[0].size() == 1 && maps[0].host_id() == kind.own_id();
        if privileged {
            write_direct(pid, maps, kind)?;
        } else if own_only {
            if kind == Kind::Gid {
                fs::write(format!("/proc/{pid}/setgroups"), "deny")
                    .ctx(|| "linux.gidMappings: writing \"deny\" to setgroups")?;
            }
            write_direct(pid, maps, kind)?;
        } else {
            write_with_helper(pid, maps, kind)?;
        }
    }
    Ok(())
}

fn render(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(4096)
}

fn write_direct(pid: i32, maps: &[LinuxIdMapping], kind: Kind) -> Result<()> {
    fs::write(format!("/proc/{pid}/{}", kind.proc_file()), render(maps))
        .ctx(|| format!("{}: writing {}", kind.field(), kind.proc_file()))
}

fn write_with_helper(pid: i32, maps: &[LinuxIdMapping], kind: Kind) -> Result<()> {
    let helper = kind.helper();
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.container_id().to_string(),
            m.host_id().to_string(),
            m.size().to_string(),
        ]);
    }
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(format!(
                "{}: mapping more than the caller's own id without root needs {helper} \
                 (Debian package uidmap), which is not installed",
                kind.field()
            ))
        } else {
            Error::os(format!("{}: running {helper}", kind.field()), e)
        }
    })?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "{}: {helper} failed ({}): {}",
            kind.field(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(c: u32, h: u32, n: u32) -> LinuxIdMapping {
        oci_spec::runtime::LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(n)
            .build()
            .expect("a complete mapping")
    }

    fn err(maps: &[LinuxIdMapping]) -> String {
        check_ranges(maps, "linux.uidMappings", MAX_RANGES)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn kernel_rules_are_checked_with_the_range_named() {
        assert!(check_ranges(&[map(0, 100000, 65536), map(65536, 0, 1)], "f", 340).is_ok());
        assert!(err(&[map(0, 1, 1), map(1, 2, 0)]).starts_with("linux.uidMappings[1]: size is 0"));
        assert!(err(&[map(u32::MAX - 1, 0, 2)]).contains("[0]: containerID"));
        assert!(err(&[map(0, u32::MAX - 5, 6)]).contains("[0]: hostID"));
        // 0 0 4294967295 (the whole range, as in the initial namespace) is fine.
        assert!(err(&[map(0, 0, u32::MAX)]).is_empty());
        let e = err(&[map(0, 1000, 10), map(5, 2000, 10)]);
        assert!(
            e.contains("[1]: container ids 5-14 overlap") && e.contains("[0]"),
            "{e}"
        );
        let e = err(&[map(0, 1000, 10), map(10, 1009, 10)]);
        assert!(e.contains("[1]: host ids 1009-1018"), "{e}");
        let many: Vec<_> = (0..341).map(|i| map(i, 1000 + i, 1)).collect();
        assert!(err(&many).contains("341 ranges"));
        let long: Vec<_> = (0..300).map(|i| map(i, 10_000_000 + i, 1)).collect();
        assert!(err(&long).contains("bytes of id map"), "{}", err(&long));
    }

    #[test]
    fn unprivileged_ranges_must_be_own_or_subordinate() {
        let subids = SubIds {
            uids: vec![(100000, 65536)],
            gids: vec![],
        };
        let own = nix::unistd::geteuid().as_raw();
        assert!(check_owned(&[map(0, own, 1), map(1, 100000, 65536)], Kind::Uid, &subids).is_ok());
        let e = check_owned(&[map(0, own, 1), map(1, 100000, 65537)], Kind::Uid, &subids)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("linux.uidMappings[1]: host ids 100000-165536"),
            "{e}"
        );
        assert!(e.contains("/etc/subuid (100000-165535)"), "{e}");
    }
}
