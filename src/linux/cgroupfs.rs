//! The cgroup v1 fast path: the file operations every container needs (make the directories, move
//! a process in, device rules, list, freeze, remove) done directly on cgroupfs after one read of
//! mountinfo. libcgroups' manager re-reads mountinfo and /proc/self/cgroup once per controller
//! (26 reads of mountinfo for a create + delete), so it is only built when the spec asks for a
//! resource beyond devices (see cgroups.rs).

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Context, Error, Result};

/// The v1 controllers the runtime places containers in (libcgroups' list), when mounted.
const CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// The container's directory in each mounted v1 hierarchy, keyed by controller.
pub struct Hierarchies {
    dirs: Vec<(&'static str, PathBuf)>,
}

impl Hierarchies {
    /// One read of /proc/self/mountinfo: where each controller is mounted.
    pub fn discover(path: &Path) -> Result<Self> {
        let info =
            fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading /proc/self/mountinfo")?;
        Self::from_mountinfo(path, &info)
    }

    /// As [`Self::discover`], from mountinfo text the caller has read already.
    pub fn from_mountinfo(path: &Path, info: &str) -> Result<Self> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let mut dirs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let mut post = post.split(' ');
            if post.next() != Some("cgroup") {
                continue;
            }
            let super_opts = post.nth(1).unwrap_or("");
            let Some(mountpoint) = pre.split(' ').nth(4) else {
                continue;
            };
            let dir = Path::new(mountpoint).join(rel);
            for opt in super_opts.split(',') {
                if let Some(c) = CONTROLLERS.iter().find(|c| **c == opt) {
                    // A controller mounted twice (bind mounts) is used once.
                    if seen.insert(*c) {
                        dirs.push((*c, dir.clone()));
                    }
                }
            }
        }
        if dirs.is_empty() {
            return Err(Error::invalid("no cgroup v1 controller is mounted"));
        }
        Ok(Hierarchies { dirs })
    }

    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Distinct directories (co-mounted controllers share one).
    fn unique_dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for (_, d) in &self.dirs {
            if !out.contains(&d.as_path()) {
                out.push(d);
            }
        }
        out
    }

    /// Creates the directories and moves `pid` in. A new cpuset cgroup starts with no cpus and
    /// mems (adding a task then fails), so those are copied down from the parent first.
    pub fn enter(&self, pid: i32) -> Result<()> {
        for dir in self.unique_dirs() {
            let created_from = first_missing_ancestor(dir);
            fs::create_dir_all(dir).ctx(|| format!("creating cgroup {}", dir.display()))?;
            if let Some(top) = created_from {
                if dir.join("cpuset.cpus").exists() {
                    fill_cpuset_down(&top, dir)?;
                }
            }
            let procs = dir.join("cgroup.procs");
            fs::write(&procs, pid.to_string())
                .ctx(|| format!("adding pid {pid} to {}", procs.display()))?;
        }
        Ok(())
    }

    /// Writes the device rules in order (allow to devices.allow, deny to devices.deny).
    pub fn apply_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        let Some(dir) = self.dir("devices") else {
            return Ok(());
        };
        // Each write(2) is one rule; the two files stay open across the rules.
        let (mut allow, mut deny) = (None, None);
        for (i, r) in rules.iter().enumerate() {
            let (file, slot) = if r.allow() {
                ("devices.allow", &mut allow)
            } else {
                ("devices.deny", &mut deny)
            };
            let line = device_rule(r);
            let what = || format!("linux.resources.devices[{i}] ({line}) to {file}");
            let f = match slot {
                Some(f) => f,
                None => slot.insert(
                    fs::OpenOptions::new()
                        .write(true)
                        .open(dir.join(file))
                        .ctx(what)?,
                ),
            };
            f.write_all(line.as_bytes()).ctx(what)?;
        }
        Ok(())
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = self
            .dir("pids")
            .or_else(|| self.dirs.first().map(|(_, d)| d.as_path()))
            .ok_or_else(|| Error::invalid("no cgroup hierarchy"))?;
        read_pids(&dir.join("cgroup.procs"))
    }

    /// Freezes or thaws through the freezer controller, waiting until the kernel says done.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let dir = self
            .dir("freezer")
            .ok_or_else(|| Error::invalid("the freezer cgroup controller is not mounted"))?;
        let file = dir.join("freezer.state");
        let want = if frozen { "FROZEN" } else { "THAWED" };
        for _ in 0..1000 {
            fs::write(&file, want).ctx(|| format!("writing {}", file.display()))?;
            let now = fs::read_to_string(&file).ctx(|| format!("reading {}", file.display()))?;
            if now.trim() == want {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(Error::invalid(format!(
            "{}: never reached {want}",
            file.display()
        )))
    }

    /// Kills what is left and removes the directories, retrying while the kernel still counts
    /// exiting tasks in them.
    pub fn remove(&self) -> Result<()> {
        for dir in self.unique_dirs() {
            if !dir.exists() {
                continue;
            }
            for pid in read_pids(&dir.join("cgroup.procs")).unwrap_or_default() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
            remove_dir_retrying(dir)?;
        }
        Ok(())
    }
}

fn device_rule(r: &LinuxDeviceCgroup) -> String {
    let typ = match r.typ() {
        None | Some(LinuxDeviceType::A) => "a",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::P) => "p",
    };
    let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
    format!(
        "{typ} {}:{} {}",
        num(r.major()),
        num(r.minor()),
        r.access().as_deref().unwrap_or("rwm")
    )
}

fn read_pids(file: &Path) -> Result<Vec<i32>> {
    let text = fs::read_to_string(file).ctx(|| format!("reading {}", file.display()))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

fn first_missing_ancestor(dir: &Path) -> Option<PathBuf> {
    let mut missing = None;
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing = Some(d.to_path_buf());
        cur = d.parent();
    }
    missing
}

/// Copies cpuset.cpus and cpuset.mems from each parent into the directories from `top` down to
/// `dir` that were just created.
fn fill_cpuset_down(top: &Path, dir: &Path) -> Result<()> {
    let rest = dir.strip_prefix(top).unwrap_or(Path::new(""));
    let mut cur = top.to_path_buf();
    let mut steps = vec![cur.clone()];
    for c in rest.components() {
        cur.push(c);
        steps.push(cur.clone());
    }
    for d in steps {
        let Some(parent) = d.parent() else { continue };
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let value = fs::read_to_string(parent.join(file))
                .ctx(|| format!("reading {}", parent.join(file).display()))?;
            fs::write(d.join(file), value.trim())
                .ctx(|| format!("writing {}", d.join(file).display()))?;
        }
    }
    Ok(())
}

fn remove_dir_retrying(dir: &Path) -> Result<()> {
    let mut delay = Duration::from_micros(500);
    for _ in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(Error::os(format!("removing cgroup {}", dir.display()), e)),
        }
    }
    Err(Error::invalid(format!(
        "cgroup {} stays busy",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_render_as_the_kernel_expects() {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(false).set_access(Some("rwm".into()));
        assert_eq!(device_rule(&r), "a *:* rwm");
        r.set_typ(Some(LinuxDeviceType::C))
            .set_major(Some(136))
            .set_minor(None)
            .set_access(Some("rw".into()));
        assert_eq!(device_rule(&r), "c 136:* rw");
    }
}
