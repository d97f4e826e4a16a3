use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::cli::Cli;
use crate::error::{Context, Error, Result};
use crate::hooks;
use crate::state::{status_of, ContainerDir, State, Status};

pub fn run(cli: &Cli, id: &str) -> Result<i32> {
    let dir = ContainerDir::open(&cli.root, id)?;
    let state = dir.load()?;
    start(&dir, &state, status_of(&dir, &state))?;
    Ok(0)
}

/// Releases the init blocked on the exec fifo. Opening without blocking fails with ENXIO exactly
/// when no init holds the fifo, so a dead init is reported instead of waited for.
pub fn start(dir: &ContainerDir, state: &State, status: Status) -> Result<()> {
    if status != Status::Created {
        return Err(Error::invalid(format!(
            "cannot start container {:?}: it is {status}",
            dir.id()
        )));
    }
    let fifo = dir.fifo();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => Error::invalid(format!(
                "cannot start container {:?}: its init is gone",
                dir.id()
            )),
            _ => Error::os(format!("opening {}", fifo.display()), e),
        })?;
    f.write_all(b"0")
        .ctx(|| format!("writing {}", fifo.display()))?;
    std::fs::remove_file(&fifo).ctx(|| format!("removing {}", fifo.display()))?;
    let poststart = state.hooks_of(|h| h.poststart());
    if !poststart.is_empty() {
        wait_for_exec(&f, state);
    }
    hooks::run_warn("poststart", poststart, &state.hook_state("running"));
    Ok(())
}

/// Waits until the init has executed the user process (after its startContainer hooks), or died:
/// both close its end of the fifo, and a fifo's writer sees POLLERR once no reader is left.
fn wait_for_exec(fifo: &std::fs::File, state: &State) {
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => return,
            Err(nix::errno::Errno::EINTR) | Ok(_) => {}
            Err(_) => return,
        }
        if crate::state::process_start_time(state.pid) != Some(state.pid_start_time) {
            return;
        }
    }
}
