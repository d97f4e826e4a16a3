//! `checkpoint`: CRIU dumps of a container, served by the engine that owns it (runc, built with
//! CRIU). A delegated container never reaches this module (main routes it to its engine); a native
//! one cannot be checkpointed.

use crate::cli::{CheckpointArgs, Cli};
use crate::error::{Error, Result};
use crate::state::ContainerDir;

pub fn run(cli: &Cli, args: &CheckpointArgs) -> Result<i32> {
    // Unknown ids get the usual "does not exist".
    let _dir = ContainerDir::open(&cli.root, &args.id)?;
    Err(Error::invalid(format!(
        "cannot checkpoint container {:?}: it runs on the native engine, which has no CRIU \
         support; checkpoint/restore need a container delegated to an engine built with CRIU \
         (set runtime.primary to \"runc\" in the configuration before creating it)",
        args.id
    )))
}
