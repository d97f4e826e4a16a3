use std::os::fd::AsFd;

use crate::cli::{Cli, KillArgs};
use crate::error::{Error, Result};
use crate::linux::cgroups::Cgroup;
use crate::linux::signals;
use crate::state::{status_of, ContainerDir, State, Status};

pub fn run(cli: &Cli, args: &KillArgs) -> Result<i32> {
    let signal = signals::parse(&args.signal)?;
    let dir = ContainerDir::open(&cli.root, &args.id)?;
    let state = dir.load()?;
    let status = status_of(&dir, &state);
    if status == Status::Stopped {
        return Err(Error::invalid(format!(
            "cannot kill container {:?}: it is stopped",
            args.id
        )));
    }
    if args.all {
        signal_all(&state, signal)?;
    } else {
        signal_init(&state, signal)?;
    }
    Ok(0)
}

/// Signals the init through a pidfd, which cannot hit a process that reused its pid.
pub fn signal_init(state: &State, signal: i32) -> Result<()> {
    let pidfd = sys::pidfd_open(state.pid)
        .map_err(|e| Error::os(format!("pidfd_open {}", state.pid), e))?;
    if crate::state::process_start_time(state.pid) != Some(state.pid_start_time) {
        return Err(Error::invalid(format!(
            "container {:?} is stopped",
            state.id
        )));
    }
    sys::pidfd_send_signal(pidfd.as_fd(), signal)
        .map_err(|e| Error::os(format!("signalling pid {}", state.pid), e))
}

/// Signals every process in the container's cgroup, frozen meanwhile (as runc does) so that no
/// process can fork a child past the signal.
pub fn signal_all(state: &State, signal: i32) -> Result<()> {
    let cgroup = Cgroup::for_state(state)?;
    // A paused container stays paused: only a freeze of our own is undone.
    let frozen =
        !crate::linux::cgroups::is_frozen(&state.cgroup_path) && cgroup.freeze(true).is_ok();
    let pids = cgroup
        .pids()
        .or_else(|e| crate::linux::rootless::pids_without_cgroup(state, e));
    let result = pids.map(|pids| {
        for pid in pids {
            if let Ok(fd) = sys::pidfd_open(pid) {
                let _ = sys::pidfd_send_signal(fd.as_fd(), signal);
            }
        }
    });
    if frozen {
        cgroup.freeze(false)?;
    }
    result
}
