//! `ps`: the container's processes, found through its cgroup. `--format json` prints their host
//! pids as a JSON array; the table runs the host's ps(1) with the given arguments (`-ef` by
//! default) and keeps the header and the rows of the container's pids, as runc does.

use std::collections::HashSet;
use std::process::Command;

use crate::cli::{Cli, ListFormat, PsArgs};
use crate::error::{Context, Error, Result};
use crate::linux::cgroups::Cgroup;
use crate::state::ContainerDir;

pub fn run(cli: &Cli, args: &PsArgs) -> Result<i32> {
    let state = ContainerDir::open(&cli.root, &args.id)?.load()?;
    let mut pids = Cgroup::for_state(&state)?
        .pids()
        .or_else(|e| crate::linux::rootless::pids_without_cgroup(&state, e))?;
    pids.sort_unstable();
    match args.format {
        ListFormat::Json => {
            let text = serde_json::to_string(&pids).map_err(|e| Error::invalid(e.to_string()))?;
            println!("{text}");
            Ok(0)
        }
        ListFormat::Table => table(&pids, &args.ps_args),
    }
}

fn table(pids: &[i32], ps_args: &[String]) -> Result<i32> {
    let default = ["-ef".to_string()];
    let ps_args = if ps_args.is_empty() {
        &default[..]
    } else {
        ps_args
    };
    let out = Command::new("ps")
        .args(ps_args)
        .output()
        .ctx(|| "running ps")?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "ps {}: {}",
            ps_args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|f| f == "PID")
        .ok_or_else(|| Error::invalid("couldn't find PID field in ps output"))?;
    let wanted: HashSet<i32> = pids.iter().copied().collect();
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|f| f.parse().ok());
        if pid.is_some_and(|p| wanted.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(0)
}
