//! `exec`: a new process in a running container. The runtime clones a child that joins the
//! container's namespaces (pid and time through the parent, for its children) and cgroup, then
//! gets the same confinement as the init (rlimits, user, capabilities, no_new_privs) and execs.
//! Like the init it is non-dumpable until execve, so the container cannot reach the runtime binary
//! through it.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::prctl;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{setresgid, setresuid, Gid, Pid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::launch::{self, Launch};
use super::sync::{self, Channel, Message};
use crate::error::{Context, Error, Result};
use crate::linux::cgroups::Cgroup;
use crate::linux::namespaces::{self, ForChildren};
use crate::linux::seccomp::Filter;
use crate::linux::{process, terminal};
use crate::state::State;

pub struct ExecOptions<'a> {
    pub console_socket: Option<&'a Path>,
    /// Without --detach a terminal comes back to us.
    pub attach_terminal: bool,
    pub preserve_fds: u32,
}

/// The started process: its host pid, and the pty master in attach mode.
pub struct Started {
    pub pid: i32,
    pub terminal: Option<OwnedFd>,
}

/// `seccomp` is the container's filter, compiled here in the parent (the cache is under --root).
pub fn exec(
    state: &State,
    process: &Process,
    opts: &ExecOptions<'_>,
    seccomp: Option<Filter>,
) -> Result<Started> {
    let wants_terminal = process.terminal().unwrap_or(false);
    let (console, console_back) = match (wants_terminal, opts.console_socket) {
        (false, Some(p)) => {
            return Err(Error::invalid(format!(
                "--console-socket {} given without --tty",
                p.display()
            )))
        }
        (false, None) => (None, None),
        (true, Some(p)) => (Some(terminal::connect(p)?), None),
        (true, None) if opts.attach_terminal => {
            let (a, b) = UnixStream::pair().ctx(|| "socketpair for the terminal")?;
            (Some(a), Some(b))
        }
        (true, None) => {
            return Err(Error::invalid(
                "--tty with --detach needs --console-socket to receive the terminal",
            ))
        }
    };
    let joined = namespaces::of_process(state.pid)?;
    let in_user_ns = joined.iter().any(|(k, _)| *k == LinuxNamespaceType::User);
    let cgroup = Cgroup::for_state(state)?;
    let (mut to_child, child_end) = Channel::pair()?;

    let for_children = ForChildren::join(&joined)?;
    let pid = match sys::clone3(0, None) {
        Ok(sys::CloneResult::Child) => {
            drop(to_child);
            child(
                child_end, &joined, in_user_ns, process, console, opts, seccomp,
            )
        }
        Ok(sys::CloneResult::Parent(pid)) => pid,
        Err(e) => {
            let _ = for_children.leave();
            return Err(Error::os("clone3 for exec", e));
        }
    };
    drop(child_end);
    drop(console);
    let kill_child = |e: Error| {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        e
    };
    for_children.leave().map_err(kill_child)?;
    // A rootless container may have no cgroup (see rootless::enter_cgroup).
    if let Err(e) = cgroup.enter(pid) {
        if !crate::linux::rootless::active() {
            return Err(kill_child(e));
        }
    }
    to_child.send(&Message::Go).map_err(kill_child)?;
    match to_child.recv().map_err(kill_child)? {
        Some(Message::Ready) => {}
        Some(Message::Failed(msg)) => return Err(kill_child(Error::invalid(msg))),
        _ => {
            return Err(kill_child(Error::invalid(
                "the exec'd process died during set-up",
            )))
        }
    }
    let terminal = console_back
        .map(|sock| sys::recv_fd(sock.as_fd()).map(|(fd, _)| fd))
        .transpose()
        .ctx(|| "receiving the terminal")?;
    Ok(Started { pid, terminal })
}

fn child(
    mut channel: Channel,
    joined: &[(LinuxNamespaceType, OwnedFd)],
    in_user_ns: bool,
    process: &Process,
    console: Option<UnixStream>,
    opts: &ExecOptions<'_>,
    seccomp: Option<Filter>,
) -> ! {
    let launch = setup(
        &mut channel,
        joined,
        in_user_ns,
        process,
        console,
        opts,
        seccomp,
    );
    let launch = sync::report_setup(channel, launch);
    sync::exec_failed(launch.exec())
}

fn setup(
    channel: &mut Channel,
    joined: &[(LinuxNamespaceType, OwnedFd)],
    in_user_ns: bool,
    process: &Process,
    console: Option<UnixStream>,
    opts: &ExecOptions<'_>,
    seccomp: Option<Filter>,
) -> Result<Launch> {
    prctl::set_dumpable(false).ctx(|| "prctl(PR_SET_DUMPABLE)")?;
    prctl::set_pdeathsig(Signal::SIGKILL).ctx(|| "prctl(PR_SET_PDEATHSIG)")?;
    sys::reset_signal_dispositions();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .ctx(|| "sigprocmask")?;
    match channel.recv()? {
        Some(Message::Go) => {}
        _ => return Err(Error::invalid("the runtime went away during set-up")),
    }
    namespaces::join_all(joined)?;
    if in_user_ns {
        let _ = setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
        let _ = setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    }
    if let Some(console) = &console {
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        terminal::setup(console, size, process.user().uid())?;
    }
    drop(console);
    if let Some(adj) = process.oom_score_adj() {
        process::set_oom_score_adj(adj)?;
    }
    process::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    launch::enter_cwd(process)?;
    let launch = Launch::prepare(process, in_user_ns, &[], opts.preserve_fds, seccomp)?;
    prctl::set_pdeathsig(None).ctx(|| "prctl(PR_SET_PDEATHSIG)")?;
    Ok(launch)
}
