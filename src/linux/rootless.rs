//! Rootless mode: the runtime run by an unprivileged user. It owns what differs from a root run:
//! the --rootless switch (runc's auto/true/false), the default state root under
//! $XDG_RUNTIME_DIR, the caller's subordinate ids (/etc/subuid, /etc/subgid), the rule that a
//! cgroup the caller cannot write is skipped unless the spec asks for resource limits, and the
//! limits of a container in a cgroup v2 subtree delegated to the caller (v2_limits.rs) and its
//! statistics there (v2_stats.rs).

mod v2_limits;
mod v2_stats;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use oci_spec::runtime::LinuxResources;

use super::cgroups::{is_unified, needs_manager, Cgroup};
use crate::error::{Error, Result};

static MODE: OnceLock<bool> = OnceLock::new();
static UNPRIVILEGED: OnceLock<bool> = OnceLock::new();

/// Sets the mode from the global `--rootless` flag (runc: auto, the default, means "when not
/// root", or when root of a user namespace that does not map the host's root).
pub fn init(flag: Option<&str>) -> Result<()> {
    // auto is worked out on first use (a read of /proc/self/uid_map that most commands skip).
    let on = match flag.unwrap_or("auto") {
        "auto" => None,
        "true" => Some(true),
        "false" => Some(false),
        other => {
            return Err(Error::invalid(format!(
                "--rootless {other:?}: expected auto, true or false"
            )))
        }
    };
    if let Some(on) = on {
        let _ = MODE.set(on);
    }
    caller_unprivileged();
    Ok(())
}

/// Whether the runtime runs without root's euid, fixed at start-up: a clone in a new user
/// namespace keeps the answer of its parent (its own euid is the overflow id until mapped).
pub fn caller_unprivileged() -> bool {
    *UNPRIVILEGED.get_or_init(|| !nix::unistd::geteuid().is_root())
}

/// Whether the runtime works in rootless mode (cgroup set-up failures tolerated when no limits
/// are asked for).
pub fn active() -> bool {
    *MODE.get_or_init(detect)
}

fn detect() -> bool {
    caller_unprivileged() || in_partial_user_namespace()
}

/// Root of a user namespace whose uid map is not the initial one's ("0 0 4294967295").
fn in_partial_user_namespace() -> bool {
    fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// The state root when --root is not given: as runc's $XDG_RUNTIME_DIR/runc, an unprivileged
/// caller keeps its containers under $XDG_RUNTIME_DIR/proxmox-lxcri.
pub fn default_root() -> PathBuf {
    match xdg_runtime_dir() {
        Some(dir) if !nix::unistd::geteuid().is_root() => dir.join("proxmox-lxcri"),
        _ => PathBuf::from(crate::cli::DEFAULT_ROOT),
    }
}

fn xdg_runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Why the default root cannot serve an unprivileged caller, if it cannot.
pub fn default_root_problem() -> Option<String> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return None;
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        None => Some(format!(
            "running as uid {euid} without --root, and $XDG_RUNTIME_DIR is not set: give --root \
             a directory this user may write, or set XDG_RUNTIME_DIR"
        )),
        Some(d) if !PathBuf::from(&d).is_absolute() => Some(format!(
            "running as uid {euid} without --root, and $XDG_RUNTIME_DIR {d:?} is not an \
             absolute path"
        )),
        Some(d) if !PathBuf::from(&d).is_dir() => Some(format!(
            "running as uid {euid} without --root, and $XDG_RUNTIME_DIR {d:?} is not a directory"
        )),
        Some(_) => None,
    }
}

/// Puts the init in its cgroup when the caller may (a delegated or writable cgroup). Returns
/// whether it is in one. A failure to enter is an error only when the spec asks for limits
/// (runc's rule). Without privilege the device rules are left out: neither v1's devices.allow
/// nor a v2 BPF device program is allowed there, and the user namespace keeps device nodes out
/// anyway; the other limits are written by [`v2_limits`] into a delegated v2 cgroup.
pub fn enter_cgroup(cg: &Cgroup, pid: i32, resources: &LinuxResources) -> Result<bool> {
    let mut limits = resources.clone();
    limits.set_devices(None);
    let wanted = needs_manager(&limits);
    if may_write_devices() {
        return entered(cg, wanted, cg.enter_and_apply(pid, resources, false));
    }
    if wanted && !is_unified() {
        return Err(v1_limits_refused(&cg.path));
    }
    if !entered(cg, wanted, cg.enter(pid))? {
        return Ok(false);
    }
    if wanted {
        cg.apply_unprivileged(&limits)?;
    }
    Ok(true)
}

/// Whether the runtime may write device rules: root of the initial user namespace.
pub fn may_write_devices() -> bool {
    !caller_unprivileged() && !in_partial_user_namespace()
}

fn entered(cg: &Cgroup, wanted: bool, result: Result<()>) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if wanted => Err(e.context(format!(
            "linux.resources: limits are asked for, but uid {} cannot set up cgroup {} \
             (delegate it to this user, or drop the limits)",
            nix::unistd::geteuid(),
            cg.path.display()
        ))),
        Err(e) => {
            crate::log::info(&format!("rootless: running without a cgroup: {e}"));
            Ok(false)
        }
    }
}

/// Limits without privilege on a v1 (or hybrid) host: libcgroups writes v1 device rules with
/// any limit, which takes CAP_SYS_ADMIN, so a chowned (delegated) v1 cgroup cannot get them.
pub fn v1_limits_refused(path: &Path) -> Error {
    Error::invalid(format!(
        "linux.resources: limits are asked for, but uid {} can set them only in a cgroup v2 \
         hierarchy delegated to it, and this host has cgroup v1 controllers (cgroup {}): drop \
         the limits, or run as root",
        nix::unistd::geteuid(),
        path.display()
    ))
}

/// Writes limits (no device rules) into a delegated v2 cgroup directory, with the caller's rights.
pub fn apply_v2_limits(dir: &Path, resources: &LinuxResources) -> Result<()> {
    v2_limits::apply(dir, resources)
}

/// What a v2 cgroup directory shows when libcgroups cannot read all of it (see v2_stats.rs).
pub fn v2_stats(dir: &Path) -> libcgroups::stats::Stats {
    v2_stats::read(dir)
}

/// The container's processes when it has no cgroup to list them (rootless, not delegated): with
/// a pid namespace of its own, every process in it (as /proc shows them); else only the init.
/// Outside rootless mode the cgroup's error stands.
pub fn pids_without_cgroup(state: &crate::state::State, cgroup_error: Error) -> Result<Vec<i32>> {
    if !active() {
        return Err(cgroup_error);
    }
    if !state.own_pid_namespace {
        return Ok(vec![state.pid]);
    }
    let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(init_ns) = ns(&state.pid.to_string()) else {
        return Ok(Vec::new());
    };
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .map_err(|e| Error::os("reading /proc", e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|name| ns(name).as_ref() == Some(&init_ns))
        .filter_map(|name| name.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The caller's subordinate ids: (start, count) ranges from /etc/subuid and /etc/subgid.
pub struct SubIds {
    pub uids: Vec<(u32, u32)>,
    pub gids: Vec<(u32, u32)>,
}

impl SubIds {
    pub fn of_caller() -> Self {
        let uid = nix::unistd::getuid();
        let name = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name);
        let keys: Vec<String> = name.into_iter().chain([uid.to_string()]).collect();
        SubIds {
            uids: read_ranges("/etc/subuid", &keys),
            gids: read_ranges("/etc/subgid", &keys),
        }
    }
}

/// The `name:start:count` lines of `file` whose name is one of `keys` (a user name or uid).
fn read_ranges(file: &str, keys: &[String]) -> Vec<(u32, u32)> {
    parse_ranges(&fs::read_to_string(file).unwrap_or_default(), keys)
}

fn parse_ranges(text: &str, keys: &[String]) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if !keys.iter().any(|k| k == who) {
                return None;
            }
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Whether `ranges` together cover `start..start+size` (adjacent ranges may share the work, as
/// newuidmap allows).
pub fn covered(ranges: &[(u32, u32)], start: u32, size: u32) -> bool {
    let end = u64::from(start) + u64::from(size);
    let mut at = u64::from(start);
    while at < end {
        let next = ranges.iter().find_map(|(s, n)| {
            let (s, e) = (u64::from(*s), u64::from(*s) + u64::from(*n));
            (s <= at && at < e).then_some(e)
        });
        match next {
            Some(e) => at = e,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lines_are_matched_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:300000:10\nbob:200000:65536\nbad line\nalice:x:1\n";
        let keys = ["alice".to_string(), "1001".to_string()];
        assert_eq!(
            parse_ranges(text, &keys),
            vec![(100000, 65536), (300000, 10)]
        );
    }

    #[test]
    fn coverage_may_span_adjacent_ranges_only() {
        let r = [(100, 10), (110, 10), (200, 5)];
        assert!(covered(&r, 100, 20));
        assert!(covered(&r, 105, 10));
        assert!(!covered(&r, 100, 21));
        assert!(!covered(&r, 99, 2));
        assert!(covered(&r, 200, 5));
        assert!(!covered(&r, 200, 6));
    }
}
