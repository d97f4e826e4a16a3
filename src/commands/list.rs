use std::fs;

use crate::cli::{Cli, ListArgs, ListFormat};
use crate::error::{Error, Result};
use crate::state::{status_of, ContainerDir, Status};

pub fn run(cli: &Cli, args: &ListArgs) -> Result<i32> {
    let mut rows = Vec::new();
    if let Ok(entries) = fs::read_dir(&cli.root) {
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if crate::state::validate_id(&id).is_err() || !entry.path().is_dir() {
                continue;
            }
            let Ok(dir) = ContainerDir::open(&cli.root, &id) else {
                continue;
            };
            let Ok(state) = dir.load() else { continue };
            let status = status_of(&dir, &state);
            rows.push((state, status));
        }
    }
    rows.extend(crate::delegate::list_rows(cli));
    rows.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    if args.quiet {
        for (s, _) in &rows {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match args.format {
        ListFormat::Json => {
            let list: Vec<_> = rows.iter().map(|(s, st)| s.public(*st)).collect();
            println!(
                "{}",
                serde_json::to_string(&list).map_err(|e| Error::invalid(e.to_string()))?
            );
        }
        ListFormat::Table => {
            println!(
                "{:<12} {:<10} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for (s, st) in &rows {
                let pid = if *st == Status::Stopped { 0 } else { s.pid };
                println!(
                    "{:<12} {:<10} {:<10} {:<40} {:<32} {}",
                    s.id,
                    pid,
                    st,
                    s.bundle.display(),
                    s.created,
                    s.owner
                );
            }
        }
    }
    Ok(0)
}
