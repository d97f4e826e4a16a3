use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::state::{status_of, ContainerDir};

pub fn run(cli: &Cli, id: &str) -> Result<i32> {
    let dir = ContainerDir::open(&cli.root, id)?;
    let state = dir.load()?;
    let public = state.public(status_of(&dir, &state));
    let text = serde_json::to_string_pretty(&public).map_err(|e| Error::invalid(e.to_string()))?;
    println!("{text}");
    Ok(0)
}
