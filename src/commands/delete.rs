use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::cli::{Cli, DeleteArgs};
use crate::error::{Error, Result};
use crate::hooks;
use crate::linux::cgroups::Cgroup;
use crate::state::{status_of, ContainerDir, State, Status};

pub fn run(cli: &Cli, args: &DeleteArgs) -> Result<i32> {
    crate::state::validate_id(&args.id)?;
    if args.force && !cli.root.join(&args.id).is_dir() {
        return Ok(0); // runc: deleting a container that is already gone is no error with --force
    }
    let dir = ContainerDir::open(&cli.root, &args.id)?;
    let state = match dir.load() {
        Ok(s) => s,
        // A create that died half-way left only a directory: with --force, clear it.
        Err(_) if args.force => return dir.remove().map(|_| 0),
        Err(e) => return Err(e),
    };
    let status = status_of(&dir, &state);
    if matches!(status, Status::Running | Status::Paused) && !args.force {
        return Err(Error::invalid(format!(
            "cannot delete container {:?}: it is {status} (stop it first or use --force)",
            args.id
        )));
    }
    destroy(dir, &state, status)?;
    Ok(0)
}

/// Kills what is left of the container and removes its cgroup and state directory.
pub fn destroy(dir: ContainerDir, state: &State, status: Status) -> Result<()> {
    let cgroup = Cgroup::for_state(state)?;
    if status == Status::Paused {
        // Frozen processes die only once thawed: queue the kill first so none runs on.
        let _ = crate::commands::kill::signal_init(state, libc::SIGKILL);
        cgroup.freeze(false)?;
    }
    if status != Status::Stopped {
        kill_and_wait(state)?;
    }
    // The monitor leaves with the init; waiting for it here means its socket is gone on return.
    if let Some(m) = &state.monitor {
        crate::proxmox::monitor::stop(m);
    }
    if !state.own_pid_namespace {
        for pid in cgroup.pids().unwrap_or_default() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    cgroup.destroy()?;
    if let Some(record) = &state.proxmox {
        crate::proxmox::teardown(&state.id, record)?;
    }
    dir.remove()?;
    hooks::run_warn(
        "poststop",
        state.hooks_of(|h| h.poststop()),
        &state.hook_state("stopped"),
    );
    Ok(())
}

/// SIGKILL to the init (in a pid namespace of its own that takes every process with it), then
/// wait until it is gone: a pidfd becomes readable when its process exits.
fn kill_and_wait(state: &State) -> Result<()> {
    let Ok(pidfd) = sys::pidfd_open(state.pid) else {
        return Ok(());
    };
    if crate::state::process_start_time(state.pid) != Some(state.pid_start_time) {
        return Ok(());
    }
    let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => return Ok(()),
            _ if Instant::now() > deadline => {
                return Err(Error::invalid(format!(
                    "container {:?}: init {} did not die",
                    state.id, state.pid
                )))
            }
            _ => {}
        }
    }
}
