//! `--systemd-cgroup`: the container's cgroup is a transient scope unit that systemd creates
//! (StartTransientUnit over D-Bus, libcgroups' native client) from runc's
//! `linux.cgroupsPath` form `slice:prefix:name`. Only on a pure v2 host where systemd runs:
//! libcgroups' systemd manager is v2-only, and anything else is an error, never a silent
//! fallback to cgroupfs.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Our scope prefix when `linux.cgroupsPath` is absent (runc uses "runc").
pub const DEFAULT_PREFIX: &str = "proxmox-lxcri";

/// A validated `slice:prefix:name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    slice: String,
    prefix: String,
    name: String,
}

/// Whether systemd runs as this host's init (sd_booted(3)'s test).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Refuses `--systemd-cgroup` where it cannot be honoured.
pub fn check_flag(systemd_cgroup: bool) -> Result<()> {
    if !systemd_cgroup {
        Ok(())
    } else if !booted() {
        Err(Error::invalid(
            "--systemd-cgroup: systemd is not running on this host",
        ))
    } else if super::rootless::caller_unprivileged() {
        // runc talks to the caller's user manager then (systemdUser); not done here.
        Err(Error::invalid(
            "--systemd-cgroup: an unprivileged caller would need systemd's user manager, \
             which proxmox-lxcri does not use; drop the flag (a delegated cgroup works without it)",
        ))
    } else if !super::cgroups::is_unified() {
        Err(Error::invalid(
            "--systemd-cgroup: needs a pure cgroup v2 host (this one has cgroup v1 \
             hierarchies); drop the flag to use cgroupfs",
        ))
    } else {
        Ok(())
    }
}

impl Unit {
    /// Parses `linux.cgroupsPath` for systemd (runc's rules): absent or empty means
    /// `system.slice:proxmox-lxcri:<id>`; an empty slice means system.slice.
    pub fn parse(spec_path: Option<&Path>, id: &str) -> Result<Self> {
        let raw = match spec_path.map(|p| p.to_str()) {
            None => "",
            Some(Some(s)) => s,
            Some(None) => return Err(Error::invalid("linux.cgroupsPath is not valid UTF-8")),
        };
        if raw.is_empty() {
            return Ok(Unit {
                slice: "system.slice".into(),
                prefix: DEFAULT_PREFIX.into(),
                name: id.into(),
            });
        }
        let bad = |why: &str| {
            Error::invalid(format!(
                "linux.cgroupsPath {raw:?}: {why} (--systemd-cgroup expects \"slice:prefix:name\")"
            ))
        };
        let parts: Vec<&str> = raw.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return Err(bad("not three ':'-separated fields"));
        };
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        slice_path(slice).ok_or_else(|| bad("the slice is not a valid systemd slice name"))?;
        if prefix.is_empty() || !unit_chars(prefix) {
            return Err(bad("the prefix must be non-empty, of [A-Za-z0-9_.-]"));
        }
        if name.is_empty() || !unit_chars(name) {
            return Err(bad("the name must be non-empty, of [A-Za-z0-9_.-]"));
        }
        if name.ends_with(".slice") {
            return Err(bad("a slice as the container's unit is not supported"));
        }
        Ok(Unit {
            slice: slice.into(),
            prefix: prefix.into(),
            name: name.into(),
        })
    }

    /// The form libcgroups takes (and the state keeps).
    pub fn spec(&self) -> String {
        format!("{}:{}:{}", self.slice, self.prefix, self.name)
    }

    pub fn unit_name(&self) -> String {
        format!("{}-{}.scope", self.prefix, self.name)
    }

    /// The scope's cgroup: below systemd's own root, the slice's expansion, then the unit.
    pub fn cgroup_path(&self) -> PathBuf {
        let slice = slice_path(&self.slice).unwrap_or_default();
        systemd_root()
            .join(slice.strip_prefix("/").unwrap_or(&slice))
            .join(self.unit_name())
    }
}

/// systemd's cgroup root: the parent of pid 1's init.scope ("/" on a host; deeper when systemd
/// runs in a container).
fn systemd_root() -> PathBuf {
    let data = fs::read_to_string("/proc/1/cgroup").unwrap_or_default();
    data.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.strip_suffix("/init.scope").unwrap_or(p)))
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn unit_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// systemd's slice hierarchy: `a-b.slice` lives in `/a.slice/a-b.slice`; `-.slice` is the root.
fn slice_path(slice: &str) -> Option<PathBuf> {
    let base = slice.strip_suffix(".slice")?;
    if base == "-" {
        return Some(PathBuf::from("/"));
    }
    if base.is_empty() || !unit_chars(base) {
        return None;
    }
    let mut path = PathBuf::from("/");
    let mut prefix = String::new();
    for part in base.split('-') {
        if part.is_empty() {
            return None;
        }
        path.push(format!("{prefix}{part}.slice"));
        prefix.push_str(part);
        prefix.push('-');
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runc_forms() {
        let u = Unit::parse(Some(Path::new("machine-ct.slice:crio:abc")), "x").unwrap();
        assert_eq!(u.unit_name(), "crio-abc.scope");
        assert_eq!(
            slice_path("machine-ct.slice").unwrap(),
            PathBuf::from("/machine.slice/machine-ct.slice")
        );
        let d = Unit::parse(None, "c1").unwrap();
        assert_eq!(d.spec(), "system.slice:proxmox-lxcri:c1");
        let e = Unit::parse(Some(Path::new(":p:n")), "x").unwrap();
        assert_eq!(e.spec(), "system.slice:p:n");
    }

    #[test]
    fn refuses_malformed_paths_naming_the_field() {
        for bad in [
            "/abs/path",
            "a:b",
            "a.slice:b:c:d",
            "nosuffix:p:n",
            "a--b.slice:p:n",
            "system.slice::n",
            "system.slice:p:",
            "system.slice:p:n/x",
            "system.slice:p:sub.slice",
        ] {
            let e = Unit::parse(Some(Path::new(bad)), "x").unwrap_err();
            assert!(e.to_string().contains("linux.cgroupsPath"), "{bad}: {e}");
        }
    }
}
