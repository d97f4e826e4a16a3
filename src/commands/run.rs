//! `run`: create + start, then wait in the foreground forwarding signals to the init (and, with a
//! terminal, copying between the caller's terminal and the container's pty), then delete.

use super::create::options;
use super::{delete, start};
use crate::cli::{Cli, RunArgs};
use crate::container::create::create;
use crate::container::foreground;
use crate::delegate::{self, Decision, Mode};
use crate::error::Result;
use crate::state::{ContainerDir, Status};

pub fn run(cli: &Cli, args: &RunArgs) -> Result<i32> {
    crate::linux::cgroups::check_systemd_flag(cli.systemd_cgroup)?;
    let mode = Mode::Run {
        detach: args.detach,
        keep: args.keep,
    };
    let c = &args.create;
    let bundle = match delegate::decide(cli, &c.bundle, &c.id, mode)? {
        Decision::Native(b) => b,
        Decision::Delegated(code) => return Ok(code),
    };
    let mut opts = options(cli, c);
    opts.attach_terminal = !args.detach;
    let created = match create(&opts, *bundle) {
        Ok(created) => created,
        Err(e) => return delegate::after_native_failure(cli, &c.bundle, &c.id, mode, e),
    };
    if let Err(e) = start::start(&created.dir, &created.state, Status::Created) {
        let _ = delete::destroy(created.dir, &created.state, Status::Created);
        return Err(e);
    }
    if args.detach {
        return Ok(0);
    }
    // Other commands (kill, state, a delete --force) must get through while we wait.
    let state = created.state;
    drop(created.dir);
    let code = foreground::wait_forwarding(state.pid, created.terminal)?;
    if !args.keep {
        // Someone may have deleted it meanwhile; then there is nothing left to do.
        if let Ok(dir) = ContainerDir::open(&cli.root, &state.id) {
            delete::destroy(dir, &state, Status::Stopped)?;
        }
    }
    Ok(code)
}
