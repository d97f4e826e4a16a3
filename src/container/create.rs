//! The parent side of `create`: state dir, cgroup, clone3 of the init, id maps, then wait until the
//! init reports it is set up (or why it is not). Every step has an undo, run on any failure.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources};

use super::init;
use super::sync::{Channel, Message};
use crate::error::{unsupported_errno, Context, Error, Result};
use crate::hooks;
use crate::linux::cgroups::{self, Cgroup};
use crate::linux::namespaces::{self, ForChildren};
use crate::linux::systemd_cgroup;
use crate::linux::{rootless, terminal};
use crate::proxmox;
use crate::spec::Bundle;
use crate::state::{self, ContainerDir, State};

pub struct CreateOptions<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    /// `run` in the foreground: a terminal, if the spec asks for one, comes back to us.
    pub attach_terminal: bool,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// A unix socket that receives a pidfd of the init (--pidfd-socket).
    pub pidfd_socket: Option<&'a Path>,
    /// --systemd-cgroup: the cgroup is a systemd scope (checked by the command).
    pub systemd_cgroup: bool,
    /// --config: the runtime config file, read only if Proxmox visibility may apply.
    pub config: Option<&'a Path>,
}

/// A container in the "created" state; its init is a child of this process.
pub struct Created {
    pub dir: ContainerDir,
    pub state: State,
    /// The pty master, when the terminal was requested in attach mode.
    pub terminal: Option<OwnedFd>,
}

/// Undoes a half-done create in reverse order, unless disarmed.
struct Undo {
    child: Option<i32>,
    cgroup: Option<Cgroup>,
    proxmox: Option<proxmox::Setup>,
    dir: Option<ContainerDir>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(pid) = self.child.take() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.destroy();
        }
        drop(self.proxmox.take());
        if let Some(dir) = self.dir.take() {
            let _ = dir.remove();
        }
    }
}

/// Creates the container from a bundle already loaded and validated (the engine choice reads it
/// first, see delegate::decide).
pub fn create(opts: &CreateOptions<'_>, mut bundle: Bundle) -> Result<Created> {
    crate::state::validate_id(opts.id)?;
    // Checked before anything exists: a bad vmid annotation or lxcpath is the caller's error.
    let annotated_vmid = crate::proxmox::monitor::pct_vmid(&bundle.spec)?;
    let process = bundle
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("process: missing"))?;
    let wants_terminal = process.terminal().unwrap_or(false);
    // (the init's end, our end in attach mode)
    let (console, console_back) =
        match (wants_terminal, opts.console_socket) {
            (false, None) => (None, None),
            (false, Some(path)) => {
                return Err(Error::invalid(format!(
                    "--console-socket {} given but process.terminal is false",
                    path.display()
                )))
            }
            (true, Some(path)) => (Some(terminal::connect(path)?), None),
            (true, None) if opts.attach_terminal => {
                let (a, b) = UnixStream::pair().ctx(|| "socketpair for the terminal")?;
                (Some(a), Some(b))
            }
            (true, None) => return Err(Error::invalid(
                "process.terminal is true: --console-socket is required to receive the terminal",
            )),
        };

    // Compiled (or read from the cache) before anything exists that would need undoing.
    let seccomp = crate::linux::seccomp::Filter::for_spec(&bundle.spec, opts.root)?;
    crate::linux::lsm::check_spec(&bundle.spec)?;
    crate::linux::mount_idmap::validate(&bundle.spec)?;

    let dir = ContainerDir::create(opts.root, opts.id)?;
    let mut undo = Undo {
        child: None,
        cgroup: None,
        proxmox: None,
        dir: None,
    };
    let fifo = dir.fifo();
    undo.dir = Some(dir);
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
        .ctx(|| format!("mkfifo {}", fifo.display()))?;
    // Proxmox visibility (when asked for) swaps the rootfs for a copy on a Proxmox volume.
    undo.proxmox = proxmox::setup(opts.config, opts.id, &mut bundle)?;

    let linux = bundle
        .spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::invalid("linux: missing"))?;
    // Read once: the v1 hierarchies here, the cgroup bind mounts in the init.
    let host_mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading /proc/self/mountinfo")?;
    let cgroup = if opts.systemd_cgroup {
        if rootless::active() {
            return Err(Error::invalid(
                "--systemd-cgroup: not supported for rootless containers",
            ));
        }
        let unit = systemd_cgroup::Unit::parse(linux.cgroups_path().as_deref(), opts.id)?;
        Cgroup::systemd(&unit, opts.id)?
    } else {
        let path = cgroups::resolve_path(linux.cgroups_path().as_deref(), opts.id);
        Cgroup::with_mountinfo(path, opts.id, Some(&host_mountinfo))?
    };
    let cgroup_path = cgroup.path.clone();
    let systemd_unit = cgroup.systemd_unit().map(str::to_string);

    // Made detached here, with the host's privilege; the init attaches them.
    let idmapped = crate::linux::mount_idmap::prepare(&bundle)?;
    let (mut to_child, child_end) = Channel::pair()?;
    let listen_fds = listen_fds();
    let init_opts = init::InitOptions {
        fifo: &fifo,
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
        preserve_fds: opts.preserve_fds.max(listen_fds),
        console,
        idmapped,
        id: opts.id,
        host_mountinfo: &host_mountinfo,
        extra_env: if listen_fds > 0 {
            vec![format!("LISTEN_FDS={listen_fds}"), "LISTEN_PID=1".into()]
        } else {
            Vec::new()
        },
    };

    // Undone from here on: open_clone_target creates the cgroup on v2. An unprivileged
    // caller's cgroup is entered (or not) after the clone, see rootless::enter_cgroup.
    let cgroup = undo.cgroup.insert(cgroup);
    let clone_target = if rootless::active() {
        None
    } else {
        cgroup.open_clone_target()?
    };
    let oom_score_adj = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.oom_score_adj());
    let oom = OomScoreAdj::set(oom_score_adj)?;
    let for_children = ForChildren::enter(&bundle)?;
    let (cloned, placed) = match injected_native_failure() {
        Some(err) => (Err(err), false),
        None => clone_init(namespaces::clone_flags(&bundle).bits() as u64, clone_target),
    };
    let pid = match cloned {
        Ok(sys::CloneResult::Child) => {
            drop(to_child);
            init::run(child_end, &bundle, &init_opts, seccomp)
        }
        Ok(sys::CloneResult::Parent(pid)) => pid,
        Err(e) => {
            let _ = for_children.leave();
            let what = "clone3 of the container init";
            return Err(if unsupported_errno(what, e.raw_os_error()) {
                Error::unsupported(what, e)
            } else {
                Error::os(what, e)
            });
        }
    };
    undo.child = Some(pid);
    drop(child_end);
    drop(init_opts);
    drop(oom);
    for_children.leave()?;

    if bundle.creates_namespace(LinuxNamespaceType::User) {
        crate::linux::idmap::write(
            pid,
            linux.uid_mappings().as_deref().unwrap_or_default(),
            linux.gid_mappings().as_deref().unwrap_or_default(),
        )?;
    }
    if let Some(cg) = undo.cgroup.as_ref() {
        let resources = resources_with_default_devices(&bundle);
        if !rootless::active() {
            cg.enter_and_apply(pid, &resources, placed)?;
        } else if !rootless::enter_cgroup(cg, pid, &resources)? {
            // Nothing of it is left: later commands find no cgroup directory.
            let _ = undo.cgroup.take().map(Cgroup::destroy);
        }
    }

    if let Some(state) = seccomp
        .as_ref()
        .and_then(|f| f.process_state(&bundle.spec, opts.id, pid, &bundle.dir))
    {
        to_child.send(&Message::SeccompState(state))?;
    }
    // The init holds its own connection to the seccomp listener.
    drop(seccomp);
    // The start time is read now, while the init surely lives (it waits for Go).
    let pid_start_time = state::process_start_time(pid)
        .ok_or_else(|| Error::invalid("the container init died during set-up"))?;
    let mut state = State {
        oci_version: bundle.spec.version().clone(),
        id: opts.id.to_string(),
        pid,
        pid_start_time,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: state::now_rfc3339(),
        owner: String::new(),
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        cgroup_path,
        systemd_unit,
        own_pid_namespace: bundle.creates_namespace(LinuxNamespaceType::Pid),
        hooks: bundle.spec.hooks().clone(),
        proxmox: undo.proxmox.as_ref().and_then(proxmox::Setup::record),
        monitor: None,
    };
    if undo.proxmox.is_some() {
        proxmox::fail_point("created")?;
    }
    if let Err(e) = run_hooks_and_init(&state, &mut to_child) {
        // runtime-spec lifecycle: a failure here "continues the lifecycle" at the destroy step,
        // which the poststop hooks follow (runc runs them too).
        drop(undo);
        hooks::run_warn(
            "poststop",
            state.hooks_of(|h| h.poststop()),
            &state.hook_state("stopped"),
        );
        return Err(e);
    }
    let terminal = console_back
        .map(|sock| sys::recv_fd(sock.as_fd()).map(|(fd, _)| fd))
        .transpose()
        .ctx(|| "receiving the terminal from the init")?;
    if let Some(path) = opts.pidfd_socket {
        send_pidfd(path, pid)?;
    }
    // pct-visible (a vmid allocated above, or one given by annotation): Proxmox learns that the
    // container runs from the LXC command socket.
    let pct = match &state.proxmox {
        Some(r) => Some((r.vmid, r.lxcpath.to_string_lossy().into_owned())),
        None => annotated_vmid
            .map(|v| crate::proxmox::monitor::lxcpath().map(|p| (v, p)))
            .transpose()?,
    };
    if let Some((vmid, lxcpath)) = pct {
        let target = crate::proxmox::monitor::Target {
            vmid,
            lxcpath: &lxcpath,
            init_pid: pid,
            state_dir: &opts.root.join(opts.id),
            cgroup_path: &state.cgroup_path,
        };
        state.monitor = Some(crate::proxmox::monitor::start(&target)?);
    }
    let dir = undo
        .dir
        .take()
        .ok_or_else(|| Error::invalid("state dir lost"))?;
    if let Err(e) = dir
        .save(&state)
        .and_then(|_| write_pid_file(opts.pid_file, pid))
    {
        undo.dir = Some(dir);
        if let Some(m) = &state.monitor {
            crate::proxmox::monitor::stop(m);
        }
        return Err(e);
    }
    undo.child = None;
    undo.cgroup = None;
    if let Some(p) = undo.proxmox.take() {
        p.commit();
    }
    Ok(Created {
        dir,
        state,
        terminal,
    })
}

/// clone3 of the init, into its cgroup when `cgroup` is given (v2). Where the kernel or a
/// seccomp filter around us refuses CLONE_INTO_CGROUP, the clone is retried without it and the
/// init is moved afterwards; the second value says whether the init is already in place.
fn clone_init(flags: u64, cgroup: Option<OwnedFd>) -> (std::io::Result<sys::CloneResult>, bool) {
    if let Some(fd) = &cgroup {
        match sys::clone3(flags, Some(fd.as_fd())) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::EINVAL | libc::EPERM)
                ) => {}
            other => return (other, true),
        }
    }
    (sys::clone3(flags, None), false)
}

/// process.oomScoreAdj, set on the runtime itself just for the clone: the init inherits it. From
/// inside a new user namespace the init could not lower it (that takes CAP_SYS_RESOURCE in the
/// initial one) nor, non-dumpable, open its own /proc file. Our own value comes back on drop.
struct OomScoreAdj(Option<String>);

impl OomScoreAdj {
    fn set(adj: Option<i32>) -> Result<Self> {
        let Some(adj) = adj else {
            return Ok(OomScoreAdj(None));
        };
        let own = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ctx(|| "reading /proc/self/oom_score_adj")?;
        crate::linux::process::set_oom_score_adj(adj)?;
        Ok(OomScoreAdj(Some(own)))
    }
}

impl Drop for OomScoreAdj {
    fn drop(&mut self) {
        if let Some(own) = self.0.take() {
            // An unprivileged runtime may not lower it back: it exits soon anyway.
            let _ = std::fs::write("/proc/self/oom_score_adj", own.trim());
        }
    }
}

/// Test hook (debug builds only): `PROXMOX_LXCRI_TEST_FAIL_NATIVE=unsupported` makes clone3 fail
/// as on a kernel without it, after the state dir and cgroup exist, so that the fallback and the
/// undo of a half-done native create can be tested on any host.
fn injected_native_failure() -> Option<std::io::Error> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let wanted = std::env::var_os("PROXMOX_LXCRI_TEST_FAIL_NATIVE")?;
    (wanted == "unsupported").then(|| std::io::Error::from_raw_os_error(libc::ENOSYS))
}

/// --pidfd-socket: a pidfd of the init for the caller (containerd uses it to watch the init
/// without pid races).
pub fn send_pidfd(path: &Path, pid: i32) -> Result<()> {
    let sock = UnixStream::connect(path).ctx(|| format!("--pidfd-socket {}", path.display()))?;
    let pidfd = sys::pidfd_open(pid).ctx(|| format!("pidfd_open {pid}"))?;
    sys::send_fd(sock.as_fd(), b"", pidfd.as_fd())
        .ctx(|| format!("--pidfd-socket {}", path.display()))
}

/// The runtime-namespace hooks (the namespaces exist, nothing is mounted yet), then the init's
/// set-up, up to its Ready.
fn run_hooks_and_init(state: &State, to_child: &mut Channel) -> Result<()> {
    let creating = state.hook_state("creating");
    hooks::run("prestart", state.hooks_of(|h| h.prestart()), &creating)?;
    hooks::run(
        "createRuntime",
        state.hooks_of(|h| h.create_runtime()),
        &creating,
    )?;
    to_child.send(&Message::Go)?;
    match to_child.recv()? {
        Some(Message::Ready) => Ok(()),
        Some(Message::Failed(msg)) => Err(Error::from_init(msg)),
        _ => Err(Error::invalid("the container init exited during set-up")),
    }
}

/// LISTEN_FDS from systemd socket activation is passed on to the container, as runc does.
fn listen_fds() -> u32 {
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn resources_with_default_devices(bundle: &Bundle) -> LinuxResources {
    let linux = bundle.spec.linux().as_ref();
    let mut resources = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let extra: Vec<_> = linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        // A fifo is no device: the devices cgroup has no rule for it.
        .filter(|d| d.typ() != oci_spec::runtime::LinuxDeviceType::P)
        .map(|d| (d.typ(), d.major(), d.minor()))
        .collect();
    let rules = cgroups::device_rules(resources.devices().as_deref().unwrap_or_default(), &extra);
    resources.set_devices(Some(rules));
    resources
}

/// The pid file is written atomically: engines poll for it and must never read half a number.
pub fn write_pid_file(path: Option<&Path>, pid: i32) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    crate::fsutil::write_atomic(&path, pid.to_string().as_bytes(), 0o644).ctx(|| "--pid-file")
}
