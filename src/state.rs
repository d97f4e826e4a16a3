//! The state store: `<root>/<id>/state.json`, written atomically, one flock per container so that
//! concurrent commands on one container serialize. Liveness is judged by pid *and* start time, so a
//! recycled pid is never mistaken for the container's init.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What the runtime remembers about a container between commands.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22).
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Absolute cgroup path (below each hierarchy's mount point).
    pub cgroup_path: PathBuf,
    /// `slice:prefix:name` when the cgroup is a systemd scope (--systemd-cgroup at create):
    /// later commands use systemd's manager whether or not they are given the flag, as runc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// Whether the container has a pid namespace of its own (then killing the init kills all).
    pub own_pid_namespace: bool,
    /// The spec's hooks, kept for poststart/poststop (so later commands need not re-read the bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// Its Proxmox side (vmid, pct config, volume), for a pct-visible container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<crate::proxmox::Record>,
    /// The LXC command-socket monitor of a pct-visible container (proxmox/monitor.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<crate::proxmox::monitor::MonitorRecord>,
}

/// runc's `state` output (and each entry of `list --format json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: Status,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'a str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
}

impl State {
    pub fn hook_state(&self, status: &'static str) -> crate::hooks::HookState<'_> {
        crate::hooks::HookState {
            oci_version: &self.oci_version,
            id: &self.id,
            status,
            pid: self.pid,
            bundle: &self.bundle,
            annotations: &self.annotations,
        }
    }

    /// Hooks of one stage (empty when there are none).
    pub fn hooks_of(
        &self,
        stage: fn(&oci_spec::runtime::Hooks) -> &Option<Vec<oci_spec::runtime::Hook>>,
    ) -> &[oci_spec::runtime::Hook] {
        self.hooks
            .as_ref()
            .and_then(|h| stage(h).as_deref())
            .unwrap_or_default()
    }

    pub fn public(&self, status: Status) -> PublicState<'_> {
        PublicState {
            oci_version: &self.oci_version,
            id: &self.id,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            owner: &self.owner,
            annotations: &self.annotations,
        }
    }
}

/// runc's rule for ids: letters, digits and `_ + - .`, and never `.` or `..` (the id names a
/// directory under --root, so it must not walk out of it).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid container id {id:?}: use letters, digits and _ + - . only"
        )))
    }
}

/// A container's directory under --root, held under an exclusive flock for the life of the value.
pub struct ContainerDir {
    pub path: PathBuf,
    _lock: Flock<File>,
}

impl ContainerDir {
    /// Makes the directory for a new container; fails if the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<Self> {
        validate_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .ctx(|| format!("creating state root {}", root.display()))?;
        let path = root.join(id);
        match fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::invalid(format!("container {id:?} already exists")))
            }
            Err(e) => return Err(Error::os(format!("creating {}", path.display()), e)),
        }
        let lock = lock_dir(&path)?;
        Ok(ContainerDir { path, _lock: lock })
    }

    /// Opens and locks the directory of an existing container.
    pub fn open(root: &Path, id: &str) -> Result<Self> {
        validate_id(id)?;
        let path = root.join(id);
        if !path.is_dir() {
            return Err(Error::invalid(format!("container {id:?} does not exist")));
        }
        let lock = lock_dir(&path)?;
        Ok(ContainerDir { path, _lock: lock })
    }

    pub fn load(&self) -> Result<State> {
        let file = self.path.join(STATE_FILE);
        let data = match fs::read(&file) {
            Ok(d) => d,
            // The lock is ours, so a missing state file means a create that died half-way.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::invalid(format!(
                    "container {:?} has no state (an interrupted create?): delete it",
                    self.id()
                )))
            }
            Err(e) => return Err(Error::os(format!("reading {}", file.display()), e)),
        };
        serde_json::from_slice(&data)
            .map_err(|e| Error::invalid(format!("corrupt state file {}: {e}", file.display())))
    }

    /// Writes state.json atomically: a temp file in the same directory, then rename. No fsync:
    /// --root lives on tmpfs (/run), where it would buy nothing and cost time on every create.
    pub fn save(&self, state: &State) -> Result<()> {
        let data = serde_json::to_vec(state).map_err(|e| Error::invalid(e.to_string()))?;
        crate::fsutil::write_atomic(&self.path.join(STATE_FILE), &data, 0o600)
    }

    pub fn id(&self) -> &str {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    pub fn fifo(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    /// Removes the directory and everything in it.
    pub fn remove(self) -> Result<()> {
        fs::remove_dir_all(&self.path).ctx(|| format!("removing {}", self.path.display()))
    }
}

fn lock_dir(path: &Path) -> Result<Flock<File>> {
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .ctx(|| format!("opening {}", path.display()))?;
    Flock::lock(dir, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::from(e).context(format!("locking {}", path.display())))
}

/// The start time of `pid` (clock ticks since boot), or None if it is gone or a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); starttime is field 22.
    fields.nth(18)?.parse().ok()
}

/// Where a container is in its life, judged from the kernel rather than from stored words.
pub fn status_of(dir: &ContainerDir, state: &State) -> Status {
    if state.pid <= 0 || process_start_time(state.pid) != Some(state.pid_start_time) {
        return Status::Stopped;
    }
    if dir.fifo().exists() {
        Status::Created
    } else if crate::linux::cgroups::is_frozen(&state.cgroup_path) {
        Status::Paused
    } else {
        Status::Running
    }
}

/// The current time as RFC 3339 in UTC with nanoseconds, as runc writes `created`.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a (year, month, day) civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_would_escape_root_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "abc-1_2.3+4", "..a"] {
            assert!(validate_id(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn start_time_of_self_is_read_and_stable() {
        let pid = std::process::id() as i32;
        let t = process_start_time(pid).expect("own stat");
        assert_eq!(process_start_time(pid), Some(t));
    }
}
