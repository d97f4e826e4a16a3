//! The child side: the container's init, a clone of the runtime (never a re-exec of its binary).
//! It sets everything up, reports Ready, blocks on the exec fifo until `start`, then execs the
//! container's process. Until that execve it is non-dumpable, so no process in the container can
//! open /proc/<pid>/exe and reach the runtime binary (CVE-2019-5736).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::prctl;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::LinuxNamespaceType;

use super::launch::{self, Launch};
use super::sync::{self, Channel, Message};
use crate::error::{Context, Error, Result};
use crate::hooks;
use crate::linux::seccomp::Filter;
use crate::linux::{process, rootfs, terminal};
use crate::spec::Bundle;

pub struct InitOptions<'a> {
    pub id: &'a str,
    /// The runtime's /proc/self/mountinfo, read once before the clone (the cgroup mounts).
    pub host_mountinfo: &'a str,
    pub fifo: &'a Path,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    pub extra_env: Vec<String>,
    /// Where the pty master goes when process.terminal is set.
    pub console: Option<UnixStream>,
    /// The id-mapped bind mounts the parent made, to attach.
    pub idmapped: Vec<crate::linux::mount_idmap::Prepared>,
}

/// What is left to do after `start`: only the exec.
struct Prepared {
    fifo: File,
    launch: Launch,
    start_container: Vec<oci_spec::runtime::Hook>,
    start_state: Vec<u8>,
}

static NO_ANNOTATIONS: std::sync::LazyLock<std::collections::HashMap<String, String>> =
    std::sync::LazyLock::new(Default::default);

/// Runs the init; never returns.
pub fn run(
    mut channel: Channel,
    bundle: &Bundle,
    opts: &InitOptions<'_>,
    seccomp: Option<Filter>,
) -> ! {
    let prepared = setup(&mut channel, bundle, opts, seccomp);
    let prepared = sync::report_setup(channel, prepared);
    sync::exec_failed(exec(prepared))
}

fn setup(
    channel: &mut Channel,
    bundle: &Bundle,
    opts: &InitOptions<'_>,
    mut seccomp: Option<Filter>,
) -> Result<Prepared> {
    // An unprivileged runtime writes our id maps (or has newuidmap write them) through
    // /proc/<pid>, which a non-dumpable process hands to root: stay dumpable until Go then.
    let maps_by_unprivileged = crate::linux::rootless::caller_unprivileged();
    if !maps_by_unprivileged {
        prctl::set_dumpable(false).ctx(|| "prctl(PR_SET_DUMPABLE)")?;
    }
    // Until Ready, the init must not outlive a `create` that died.
    prctl::set_pdeathsig(Signal::SIGKILL).ctx(|| "prctl(PR_SET_PDEATHSIG)")?;
    sys::reset_signal_dispositions();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .ctx(|| "sigprocmask")?;

    loop {
        match channel.recv()? {
            Some(Message::Go) => break,
            Some(Message::SeccompState(state)) => {
                if let Some(f) = seccomp.as_mut() {
                    f.set_state(state);
                }
            }
            _ => return Err(Error::invalid("the runtime went away during set-up")),
        }
    }
    if maps_by_unprivileged {
        prctl::set_dumpable(false).ctx(|| "prctl(PR_SET_DUMPABLE)")?;
    }
    // Opened now, while the state dir is reachable; read-write so that opening never blocks and
    // `start` finds a reader exactly while this init is alive.
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(opts.fifo)
        .ctx(|| format!("opening {}", opts.fifo.display()))?;

    let spec = &bundle.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("process: missing"))?;
    if !opts.no_new_keyring {
        crate::linux::lsm::set_keyring_label(process)?;
        // Errors are ignored as runc does: keyrings may be disabled or restricted by seccomp.
        if let Ok(name) = std::ffi::CString::new(opts.id) {
            let _ = sys::join_session_keyring(&name);
        }
    }
    let cgroup_binds = crate::linux::mounts::cgroup_binds(opts.host_mountinfo);
    crate::linux::namespaces::join_and_unshare(bundle)?;
    if bundle.has_namespace(LinuxNamespaceType::User) {
        // Become root of the new user namespace where 0 is mapped (it is not always).
        let _ = setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
        let _ = setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    }
    if let Some(name) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(name).ctx(|| format!("hostname {name:?}"))?;
    }
    if let Some(name) = spec.domainname().as_deref().filter(|h| !h.is_empty()) {
        sys::setdomainname(name).ctx(|| format!("domainname {name:?}"))?;
    }
    // process.oomScoreAdj was inherited from the runtime (see create::OomScoreAdj).
    process::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;

    // Our pid as the host sees it, for the hooks' state (the host /proc is still mounted).
    let host_pid = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    let hook_state = |status| hooks::HookState {
        oci_version: spec.version(),
        id: opts.id,
        status,
        pid: host_pid,
        bundle: &bundle.dir,
        annotations: spec.annotations().as_ref().unwrap_or(&NO_ANNOTATIONS),
    };
    let spec_hooks = spec.hooks().clone().unwrap_or_default();
    rootfs::prepare(bundle, opts.no_pivot, &cgroup_binds, &opts.idmapped, || {
        let create_container = spec_hooks.create_container().as_deref().unwrap_or_default();
        hooks::run("createContainer", create_container, &hook_state("creating"))
    })?;
    if let Some(console) = &opts.console {
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        terminal::setup(console, size, process.user().uid())?;
    }
    if let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        // Written by path: /proc/sys must be the kernel's, not a directory the image supplied.
        let proc_sys = File::open("/proc/sys").ctx(|| "linux.sysctl: /proc/sys")?;
        crate::linux::mounts::ensure_procfs(std::os::fd::AsFd::as_fd(&proc_sys))
            .ctx(|| "linux.sysctl: /proc/sys")?;
        process::apply_sysctls(sysctl.iter())?;
    }
    // The cwd may have to be created: before the root turns read-only.
    launch::enter_cwd(process)?;
    rootfs::finalize(spec)?;

    let launch = Launch::prepare(
        process,
        bundle.has_namespace(LinuxNamespaceType::User),
        &opts.extra_env,
        opts.preserve_fds,
        seccomp,
    )?;
    prctl::set_pdeathsig(None).ctx(|| "prctl(PR_SET_PDEATHSIG)")?;

    let start_container = spec_hooks.start_container().clone().unwrap_or_default();
    let start_state = serde_json::to_vec(&hook_state("created")).unwrap_or_default();
    Ok(Prepared {
        fifo,
        launch,
        start_container,
        start_state,
    })
}

/// Waits for `start`, then execs. Returns only on failure.
fn exec(mut p: Prepared) -> Error {
    let mut byte = [0u8; 1];
    match p.fifo.read(&mut byte) {
        Ok(1) => {}
        _ => return Error::invalid("the exec fifo closed before start"),
    }
    // startContainer hooks run here, in the container, between `start` and the user process.
    if let Err(e) = hooks::run_raw("startContainer", &p.start_container, &p.start_state) {
        return e;
    }
    // The fifo stays open (close-on-exec) until the execve: `start` waits for that before it runs
    // the poststart hooks, which the spec puts after the user process is executed.
    let _fifo = p.fifo;
    p.launch.exec()
}
