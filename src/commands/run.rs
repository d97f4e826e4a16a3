//! `run`: create + start, then wait in the foreground forwarding signals to the init, and delete.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::create::options;
use super::{delete, kill, start};
use crate::cli::{Cli, RunArgs};
use crate::container::create::create;
use crate::error::{Context, Result};
use crate::state::{ContainerDir, State, Status};

const FORWARDED: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

pub fn run(cli: &Cli, args: &RunArgs) -> Result<i32> {
    crate::linux::cgroups::check_systemd_flag(cli.systemd_cgroup)?;
    let created = create(&options(cli, &args.create))?;
    if let Err(e) = start::start(&created.dir, Status::Created) {
        let _ = delete::destroy(created.dir, &created.state, Status::Created);
        return Err(e);
    }
    if args.detach {
        return Ok(0);
    }
    // Other commands (kill, state, a delete --force) must get through while we wait.
    let state = created.state;
    drop(created.dir);
    let code = wait_forwarding_signals(&state)?;
    if !args.keep {
        // Someone may have deleted it meanwhile; then there is nothing left to do.
        if let Ok(dir) = ContainerDir::open(&cli.root, &state.id) {
            delete::destroy(dir, &state, Status::Stopped)?;
        }
    }
    Ok(code)
}

/// Waits for the init (our child), passing the signals a user sends to `run` on to it.
/// Returns its exit code, or 128 + the signal that killed it.
fn wait_forwarding_signals(state: &State) -> Result<i32> {
    let pid = state.pid;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for s in FORWARDED {
        mask.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .ctx(|| "sigprocmask")?;
    let sfd = SignalFd::new(&mask).ctx(|| "signalfd")?;
    loop {
        // Check before blocking: the init may have exited before the mask was set.
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(e) => return Err(crate::error::Error::from(e).context("waiting for the container")),
        }
        let Some(info) = sfd.read_signal().ctx(|| "reading signalfd")? else {
            continue;
        };
        let signo = info.ssi_signo as i32;
        if signo != libc::SIGCHLD {
            let _ = kill::signal_init(state, signo);
        }
    }
}
