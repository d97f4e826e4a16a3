//! `pause` / `resume`: freeze and thaw every process of the container through its cgroup
//! (v1 freezer.state, v2 cgroup.freeze). `state` and `list` then report "paused", read back from
//! the freezer itself.

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::linux::cgroups::Cgroup;
use crate::state::{status_of, ContainerDir, Status};

pub fn pause(cli: &Cli, id: &str) -> Result<i32> {
    set_frozen(cli, id, true)
}

pub fn resume(cli: &Cli, id: &str) -> Result<i32> {
    set_frozen(cli, id, false)
}

fn set_frozen(cli: &Cli, id: &str, frozen: bool) -> Result<i32> {
    let dir = ContainerDir::open(&cli.root, id)?;
    let state = dir.load()?;
    let status = status_of(&dir, &state);
    let (verb, needed) = if frozen {
        ("pause", Status::Running)
    } else {
        ("resume", Status::Paused)
    };
    if status != needed {
        return Err(Error::invalid(format!(
            "cannot {verb} container {id:?}: it is {status}, not {needed}"
        )));
    }
    Cgroup::for_state(&state)?.freeze(frozen)?;
    Ok(0)
}
