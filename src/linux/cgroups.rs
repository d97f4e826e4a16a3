//! The container's cgroup, behind one small interface: on v1 and hybrid hosts the everyday
//! operations go straight to cgroupfs (cgroupfs.rs) and libcgroups' manager is built only for
//! resource limits; on v2 libcgroups does everything.

use std::cell::OnceCell;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt,
    FreezerState,
};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use super::cgroupfs::Hierarchies;
use crate::error::{Context, Error, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub struct Cgroup {
    pub path: PathBuf,
    id: String,
    /// The container's directories on a v1 (or hybrid) host.
    v1: Option<Hierarchies>,
    /// `slice:prefix:name` when systemd manages the cgroup (a transient scope, see
    /// systemd_cgroup.rs): creation, limits and removal then go over D-Bus.
    systemd: Option<String>,
    manager: OnceCell<AnyCgroupManager>,
    /// With systemd: libcgroups' v2 manager on the scope's directory, for what systemd does not
    /// do (device rules, freezing, statistics) without a D-Bus connection each time.
    fs_manager: OnceCell<AnyCgroupManager>,
}

/// The absolute cgroup path for a container: `linux.cgroupsPath` as given when absolute, else
/// relative to the runtime's own cgroup (as runc does), defaulting to the container id.
pub fn resolve_path(spec_path: Option<&Path>, id: &str) -> PathBuf {
    let rel = spec_path.unwrap_or(Path::new(id));
    if rel.is_absolute() {
        return rel.to_path_buf();
    }
    own_cgroup().join(rel)
}

fn own_cgroup() -> PathBuf {
    let data = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // Prefer the pids hierarchy on v1 (the one kill --all reads), else the unified one.
    let find = |pred: &dyn Fn(&str) -> bool| {
        data.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            pred(ctrls).then(|| PathBuf::from(path))
        })
    };
    if is_unified() {
        find(&|c| c.is_empty())
    } else {
        find(&|c| c.split(',').any(|x| x == "pids"))
    }
    .unwrap_or_else(|| PathBuf::from("/"))
}

/// True on a pure cgroup v2 host.
pub fn is_unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

impl Cgroup {
    pub fn new(path: PathBuf, id: &str) -> Result<Self> {
        Self::with_mountinfo(path, id, None)
    }

    /// As [`Self::new`], with the host's /proc/self/mountinfo when the caller has read it.
    pub fn with_mountinfo(path: PathBuf, id: &str, mountinfo: Option<&str>) -> Result<Self> {
        let v1 = match (is_unified(), mountinfo) {
            (true, _) => None,
            (false, Some(info)) => Some(Hierarchies::from_mountinfo(&path, info)?),
            (false, None) => Some(Hierarchies::discover(&path)?),
        };
        Ok(Cgroup {
            path,
            id: id.to_string(),
            v1,
            systemd: None,
            manager: OnceCell::new(),
            fs_manager: OnceCell::new(),
        })
    }

    /// The cgroup of a container from its state, with the manager it was created with.
    pub fn for_state(state: &crate::state::State) -> Result<Self> {
        let mut cg = Self::new(state.cgroup_path.clone(), &state.id)?;
        cg.systemd = state.systemd_unit.clone();
        Ok(cg)
    }

    /// A cgroup that systemd creates as the scope of `unit` (a pure v2 host only, see
    /// systemd_cgroup::check_flag).
    pub fn systemd(unit: &super::systemd_cgroup::Unit, id: &str) -> Result<Self> {
        let mut cg = Self::new(unit.cgroup_path(), id)?;
        if cg.v1.is_some() {
            return Err(Error::invalid(
                "--systemd-cgroup: needs a pure cgroup v2 host",
            ));
        }
        cg.systemd = Some(unit.spec());
        Ok(cg)
    }

    /// libcgroups' manager, built on first use (it costs a mountinfo read per controller).
    fn manager(&self) -> Result<&AnyCgroupManager> {
        if self.manager.get().is_none() {
            let m = match &self.systemd {
                Some(unit) => create_cgroup_manager(CgroupConfig {
                    cgroup_path: PathBuf::from(unit),
                    systemd_cgroup: true,
                    container_name: self.id.clone(),
                })
                .map_err(|e| Error::invalid(format!("systemd unit {unit}: {e}")))?,
                None => self.new_fs_manager()?,
            };
            let _ = self.manager.set(m);
        }
        self.manager
            .get()
            .ok_or_else(|| Error::invalid("cgroup manager unavailable"))
    }

    /// `slice:prefix:name` when systemd manages the cgroup.
    pub fn systemd_unit(&self) -> Option<&str> {
        self.systemd.as_deref()
    }

    fn new_fs_manager(&self) -> Result<AnyCgroupManager> {
        create_cgroup_manager(CgroupConfig {
            cgroup_path: self.path.clone(),
            systemd_cgroup: false,
            container_name: self.id.clone(),
        })
        .map_err(|e| self.err(&e))
    }

    /// The manager for file-level work: the scope's directory under systemd, else the one.
    fn fs(&self) -> Result<&AnyCgroupManager> {
        if self.systemd.is_none() {
            return self.manager();
        }
        if self.fs_manager.get().is_none() {
            let _ = self.fs_manager.set(self.new_fs_manager()?);
        }
        self.fs_manager
            .get()
            .ok_or_else(|| Error::invalid("cgroup manager unavailable"))
    }

    fn err(&self, e: &dyn std::fmt::Display) -> Error {
        Error::invalid(format!("cgroup {}: {e}", self.path.display()))
    }

    /// On v2, creates the container's cgroup ahead of the clone, with the controllers enabled
    /// in every ancestor (as libcgroups does when it creates one), and opens it so that clone3
    /// places the init there atomically (CLONE_INTO_CGROUP): the init never runs a single
    /// instruction outside its cgroup, and no later write to cgroup.procs is needed. None on
    /// v1, where a clone cannot be placed.
    /// None too under systemd, which creates the scope with the init's pid in it.
    pub fn open_clone_target(&self) -> Result<Option<OwnedFd>> {
        if self.v1.is_some() || self.systemd.is_some() {
            return Ok(None);
        }
        let leaf = controller_dir(&self.path, "");
        enable_controllers_down_to(&leaf, true)?;
        // O_PATH is enough for clone3; std adds O_CLOEXEC.
        let fd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&leaf)
            .ctx(|| format!("opening cgroup {}", leaf.display()))?;
        Ok(Some(OwnedFd::from(fd)))
    }

    /// Moves `pid` into the cgroup (creating it) and applies the resources; `placed` says that
    /// clone3 already put it there. On v1 the directories must exist before limits can be
    /// written, so the order matters.
    pub fn enter_and_apply(
        &self,
        pid: i32,
        resources: &LinuxResources,
        placed: bool,
    ) -> Result<()> {
        let mut rest = resources.clone();
        if let Some(h) = &self.v1 {
            h.enter(pid)?;
            h.apply_devices(resources.devices().as_deref().unwrap_or_default())?;
            rest.set_devices(None);
            if !needs_manager(&rest) {
                return Ok(());
            }
        } else if self.systemd.is_some() {
            // StartTransientUnit with the pid; systemd makes the slice and the scope.
            self.manager()?
                .add_task(Pid::from_raw(pid))
                .map_err(|e| self.err(&e))?;
            // systemd enables only the controllers it manages (not hugetlb, rdma, misc) down
            // to the scope, and writes only its own bits in cgroup.subtree_control: enable the
            // rest as without systemd (runc does the same), or their limits and statistics
            // have no files.
            enable_controllers_down_to(&controller_dir(&self.path, ""), false)?;
            self.apply_beside_systemd(&mut rest)?;
        } else if !placed {
            self.create_v2_ancestors()?;
            self.manager()?
                .add_task(Pid::from_raw(pid))
                .map_err(|e| self.err(&e))?;
        }
        let io_weight = self.take_v2_io_weight(&mut rest);
        let opts = ControllerOpt {
            resources: &rest,
            disable_oom_killer: resources
                .memory()
                .as_ref()
                .and_then(|m| m.disable_oom_killer())
                .unwrap_or(false),
            oom_score_adj: None,
            freezer_state: None,
        };
        self.manager()?.apply(&opts).map_err(|e| self.err(&e))?;
        self.apply_v2_io_weight(io_weight)?;
        self.disable_v2_swap_if_asked(resources)
    }

    /// libcgroups' systemd manager turns only cpu, cpuset, memory, io, pids and `unified` into
    /// unit properties: device rules (the v2 eBPF program) and hugepage limits are taken out of
    /// `rest` and written to the scope's directory, as without systemd.
    fn apply_beside_systemd(&self, rest: &mut LinuxResources) -> Result<()> {
        let mut fs_only = LinuxResources::default();
        fs_only.set_devices(rest.devices().clone());
        fs_only.set_hugepage_limits(rest.hugepage_limits().clone());
        rest.set_devices(None).set_hugepage_limits(None);
        self.fs()?
            .apply(&ControllerOpt {
                resources: &fs_only,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| self.err(&e))
    }

    /// On v2, takes `blockIO.weight` out of `resources` for [`Self::apply_v2_io_weight`]:
    /// libcgroups 0.7 converts it to io.weight's scale in u16 arithmetic, which overflows for
    /// any weight above 16 (a panic in a debug build, a wrapped value in a release build).
    fn take_v2_io_weight(&self, resources: &mut LinuxResources) -> Option<u16> {
        if self.v1.is_some() {
            return None;
        }
        let mut block_io = resources.block_io().clone()?;
        let weight = block_io.weight();
        block_io.set_weight(None);
        resources.set_block_io(Some(block_io));
        weight
    }

    /// Writes a v2 block IO weight: BFQ's io.bfq.weight takes blkio's own 10..1000 scale, else
    /// io.weight's 1..10000 is mapped linearly from it (runc's conversion).
    fn apply_v2_io_weight(&self, weight: Option<u16>) -> Result<()> {
        let Some(weight) = weight.filter(|w| *w > 0) else {
            return Ok(());
        };
        let dir = controller_dir(&self.path, "io");
        let bfq = dir.join("io.bfq.weight");
        let (file, value) = if bfq.exists() {
            (bfq, u64::from(weight))
        } else {
            let w = u64::from(weight.saturating_sub(10));
            (dir.join("io.weight"), 1 + w * 9999 / 990)
        };
        fs::write(&file, value.to_string())
            .ctx(|| format!("linux.resources.blockIO.weight to {}", file.display()))
    }

    /// Creates the parents of the container's v2 cgroup. libcgroups 0.7 checks for each one
    /// and then creates it, which fails with EEXIST when another container's create makes the
    /// same parent in between (concurrent creates below one parent are the normal case);
    /// `create_dir_all` takes an existing directory as success. libcgroups still enables the
    /// controllers in each parent.
    fn create_v2_ancestors(&self) -> Result<()> {
        let dir = controller_dir(&self.path, "");
        match dir.parent() {
            Some(parent) if parent != Path::new(CGROUP_ROOT) => {
                fs::create_dir_all(parent).ctx(|| format!("creating cgroup {}", parent.display()))
            }
            _ => Ok(()),
        }
    }

    /// On v2, swap is counted apart from memory, so the spec's `swap` (memory + swap) equal to
    /// `limit` means no swap: memory.swap.max 0, as runc writes. libcgroups 0.7 skips writing a
    /// 0 and leaves the container unlimited swap.
    fn disable_v2_swap_if_asked(&self, resources: &LinuxResources) -> Result<()> {
        if self.v1.is_some() {
            return Ok(());
        }
        let Some(m) = resources.memory() else {
            return Ok(());
        };
        match (m.limit(), m.swap()) {
            (Some(limit), Some(swap)) if limit > 0 && swap == limit => {
                let file = controller_dir(&self.path, "memory").join("memory.swap.max");
                // Without swap accounting (no swap configured in the kernel) there is no file.
                if file.exists() {
                    fs::write(&file, "0")
                        .ctx(|| format!("linux.resources.memory.swap to {}", file.display()))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Moves `pid` into the (existing) cgroup without touching its limits: for `exec`.
    pub fn enter(&self, pid: i32) -> Result<()> {
        match &self.v1 {
            Some(h) => h.enter(pid),
            None => self
                .fs()?
                .add_task(Pid::from_raw(pid))
                .map_err(|e| self.err(&e)),
        }
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        match &self.v1 {
            Some(h) => h.pids(),
            None => self
                .fs()?
                .get_all_pids()
                .map(|v| v.into_iter().map(|p| p.as_raw()).collect())
                .map_err(|e| self.err(&e)),
        }
    }

    /// Freezes (or thaws) every process in the cgroup; returns once the kernel reports it done.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        if let Some(h) = &self.v1 {
            return h.freeze(frozen);
        }
        let state = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        self.fs()?
            .freeze(state)
            .map_err(|e| Error::invalid(format!("freezing cgroup {}: {e}", self.path.display())))
    }

    /// Applies limits with the caller's own rights and no device program: a rootless
    /// container's delegated v2 cgroup (see rootless/v2_limits.rs). Refused on v1.
    pub fn apply_unprivileged(&self, resources: &LinuxResources) -> Result<()> {
        if self.v1.is_some() {
            return Err(super::rootless::v1_limits_refused(&self.path));
        }
        let mut rest = resources.clone();
        rest.set_devices(None);
        let io_weight = self.take_v2_io_weight(&mut rest);
        super::rootless::apply_v2_limits(&controller_dir(&self.path, ""), &rest)?;
        self.apply_v2_io_weight(io_weight)
    }

    /// Applies changed limits to the live cgroup (`update`). Device rules are left as they are
    /// (runc's update skips them too), and so is the OOM killer switch, which libcgroups would
    /// otherwise reset with any memory change.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        if !super::rootless::may_write_devices() {
            return self.apply_unprivileged(resources);
        }
        let mut resources = resources.clone();
        resources.set_devices(None);
        if self.systemd.is_some() {
            self.apply_beside_systemd(&mut resources)?;
        }
        let io_weight = self.take_v2_io_weight(&mut resources);
        let opts = ControllerOpt {
            resources: &resources,
            disable_oom_killer: oom_killer_disabled(&self.path),
            oom_score_adj: None,
            freezer_state: None,
        };
        self.manager()?
            .apply(&opts)
            .map_err(|e| Error::invalid(format!("cgroup {}: {e}", self.path.display())))?;
        self.apply_v2_io_weight(io_weight)?;
        self.disable_v2_swap_if_asked(&resources)
    }

    /// The controllers' statistics (libcgroups' shape; `events` converts it to runc's).
    pub fn stats(&self) -> Result<libcgroups::stats::Stats> {
        let dir = controller_dir(&self.path, "");
        match self.fs()?.stats() {
            Ok(stats) => Ok(stats),
            // A v2 controller not enabled for the cgroup (a delegated subtree has only those
            // granted): libcgroups fails as a whole, the files that exist still tell.
            Err(e) if self.v1.is_none() && dir.is_dir() => {
                crate::log::info(&format!("cgroup {}: {e}", self.path.display()));
                Ok(super::rootless::v2_stats(&dir))
            }
            Err(e) => Err(Error::invalid(format!(
                "reading statistics of cgroup {}: {e}",
                self.path.display()
            ))),
        }
    }

    /// Removes the cgroup, killing anything still in it.
    pub fn destroy(self) -> Result<()> {
        if let Some(h) = &self.v1 {
            return h.remove();
        }
        if self.systemd.is_some() {
            return self.destroy_systemd();
        }
        self.manager()?
            .remove()
            .map_err(|e| Error::invalid(format!("removing cgroup {}: {e}", self.path.display())))
    }
}

impl Cgroup {
    /// Stops the scope (systemd kills what is left and removes its cgroup), waiting a bounded
    /// time for the directory to go; whatever stays (systemd unreachable, a slow stop) is
    /// removed through cgroupfs so that delete leaves nothing behind.
    fn destroy_systemd(&self) -> Result<()> {
        let dir = controller_dir(&self.path, "");
        let stopped = self
            .manager()
            .and_then(|m| m.remove().map_err(|e| self.err(&e)));
        for _ in 0..100 {
            if !dir.exists() {
                return stopped;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.fs()?
            .remove()
            .map_err(|e| Error::invalid(format!("removing cgroup {}: {e}", self.path.display())))?;
        stopped
    }
}

/// Enables every controller of the v2 root in each ancestor of `leaf` (as libcgroups does when
/// it creates a cgroup), creating the directories when `create` says so.
fn enable_controllers_down_to(leaf: &Path, create: bool) -> Result<()> {
    let root = Path::new(CGROUP_ROOT);
    let rel = leaf.strip_prefix(root).unwrap_or(leaf);
    let wanted = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let mut dir = root.to_path_buf();
    for component in rel.components() {
        enable_controllers(&dir, &wanted);
        dir.push(component);
        if !create {
            continue;
        }
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::os(format!("creating cgroup {}", dir.display()), e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Enables the `wanted` controllers (a cgroup.controllers line) for the children of `dir` that
/// are not enabled yet. Errors are left for the limit that needs the controller to report, as
/// libcgroups does: a controller the host cannot delegate must not fail a container without
/// limits.
fn enable_controllers(dir: &Path, wanted: &str) {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file).unwrap_or_default();
    for c in wanted.split_whitespace() {
        if !enabled.split_whitespace().any(|e| e == c) {
            let _ = fs::write(&file, format!("+{c}"));
        }
    }
}

/// Whether any limit beyond device rules is asked for (only then is libcgroups' manager built).
pub fn needs_manager(r: &LinuxResources) -> bool {
    r.memory().is_some()
        || r.cpu().is_some()
        || r.pids().is_some()
        || r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        || r.network().is_some()
        || r.rdma().as_ref().is_some_and(|h| !h.is_empty())
        || r.unified().as_ref().is_some_and(|h| !h.is_empty())
}

/// The device rules the container's cgroup gets: the spec's own, then the default devices and
/// `linux.devices` allowed, as runc does, so that a deny-all spec still has a working /dev.
pub fn device_rules(
    spec_rules: &[LinuxDeviceCgroup],
    extra: &[(LinuxDeviceType, i64, i64)],
) -> Vec<LinuxDeviceCgroup> {
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true)
            .set_typ(Some(typ))
            .set_major(major)
            .set_minor(minor)
            .set_access(Some(access.to_string()));
        r
    };
    let mut rules = spec_rules.to_vec();
    // mknod of any device is allowed; opening is what the rules guard.
    rules.push(rule(LinuxDeviceType::C, None, None, "m"));
    rules.push(rule(LinuxDeviceType::B, None, None, "m"));
    for (major, minor) in crate::linux::devices::DEFAULT_DEVICE_NUMBERS {
        rules.push(rule(LinuxDeviceType::C, Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(LinuxDeviceType::C, Some(5), Some(1), "rwm")); // /dev/console
    rules.push(rule(LinuxDeviceType::C, Some(5), Some(2), "rwm")); // /dev/ptmx
    rules.push(rule(LinuxDeviceType::C, Some(136), None, "rwm")); // /dev/pts/*
    for (typ, major, minor) in extra {
        rules.push(rule(*typ, Some(*major), Some(*minor), "rwm"));
    }
    rules
}

/// Whether the container's freezer says FROZEN (v1) or cgroup.freeze is 1 (v2).
pub fn is_frozen(path: &Path) -> bool {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if is_unified() {
        let f = Path::new(CGROUP_ROOT).join(rel).join("cgroup.freeze");
        fs::read_to_string(f).is_ok_and(|s| s.trim() == "1")
    } else {
        let f = Path::new(CGROUP_ROOT)
            .join("freezer")
            .join(rel)
            .join("freezer.state");
        fs::read_to_string(f).is_ok_and(|s| s.trim() == "FROZEN")
    }
}

/// The directory of the container's cgroup in the hierarchy of `controller` (v1), or in the
/// unified hierarchy on a pure v2 host.
pub fn controller_dir(path: &Path, controller: &str) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if is_unified() {
        Path::new(CGROUP_ROOT).join(rel)
    } else {
        Path::new(CGROUP_ROOT).join(controller).join(rel)
    }
}

/// Whether the v1 memory controller has the OOM killer disabled for the cgroup.
fn oom_killer_disabled(path: &Path) -> bool {
    if is_unified() {
        return false;
    }
    fs::read_to_string(controller_dir(path, "memory").join("memory.oom_control"))
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "oom_kill_disable 1"))
}

/// `--systemd-cgroup` where systemd does not run, or on a v1/hybrid host: an error, never a
/// silent fallback to the cgroupfs manager.
pub fn check_systemd_flag(systemd_cgroup: bool) -> Result<()> {
    super::systemd_cgroup::check_flag(systemd_cgroup)
}
