//! The runtime ADR's monitoring: every command appends one JSON line to
//! `<root>/runtime/events.log` — `{time, command, id, engine, duration_us, outcome, error,
//! fallback_reason}` — with a single write(2) on an O_APPEND descriptor (so concurrent commands
//! never interleave), rotated to `events.log.1` when a line would take it past the size cap.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::delegate::config;
use crate::error::Result;

pub const DIR: &str = "runtime";
pub const FILE: &str = "events.log";
const ERROR_MAX: usize = 200;

/// One line of the log.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Event {
    pub time: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub engine: String,
    pub duration_us: u64,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// What the command learned while it ran: the engine that served it and why it was not native.
static NOTE: Mutex<(Option<String>, Option<String>)> = Mutex::new((None, None));

pub fn note(engine: Option<&str>, fallback_reason: Option<&str>) {
    if let Ok(mut n) = NOTE.lock() {
        if let Some(e) = engine {
            n.0 = Some(e.to_string());
        }
        if let Some(r) = fallback_reason {
            n.1 = Some(r.to_string());
        }
    }
}

pub fn path(root: &Path) -> PathBuf {
    root.join(DIR).join(FILE)
}

/// Appends the command's line. Never fails the command: a log that cannot be written is warned
/// about.
pub fn record(
    root: &Path,
    command: &str,
    id: Option<&str>,
    started: Instant,
    result: &Result<i32>,
) {
    let (enabled, cap) = match config::get() {
        Ok(c) => (c.performance_monitoring, c.events_log_max_size),
        // The command itself reports a broken configuration; record with the defaults.
        Err(_) => (true, config::RuntimeConfig::default().events_log_max_size),
    };
    if !enabled {
        return;
    }
    let (engine, fallback_reason) = NOTE.lock().map(|n| n.clone()).unwrap_or_default();
    let event = Event {
        time: crate::state::now_rfc3339(),
        command: command.to_string(),
        id: id.map(str::to_string),
        engine: engine.unwrap_or_else(|| "native".into()),
        duration_us: started.elapsed().as_micros() as u64,
        outcome: if result.is_ok() { "ok" } else { "error" }.into(),
        error: result.as_ref().err().map(|e| short(&e.to_string())),
        fallback_reason,
    };
    let Ok(mut line) = serde_json::to_vec(&event) else {
        return;
    };
    line.push(b'\n');
    if let Err(e) = append(&path(root), &line, cap) {
        crate::log::warn(&format!("events log {}: {e}", path(root).display()));
    }
}

fn short(msg: &str) -> String {
    if msg.len() <= ERROR_MAX {
        return msg.to_string();
    }
    let mut end = ERROR_MAX;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &msg[..end])
}

fn open(path: &Path) -> std::io::Result<File> {
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// open + fstat + one write; rotation (rare) under an flock of the full file so that only one of
/// several concurrent writers renames it.
pub fn append(path: &Path, line: &[u8], cap: u64) -> std::io::Result<()> {
    let mut f = match open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            open(path)?
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if meta.len() > 0 && meta.len() + line.len() as u64 > cap {
        f = rotate(path, f, meta.ino())?;
    }
    f.write_all(line)
}

fn rotate(path: &Path, full: File, ino: u64) -> std::io::Result<File> {
    let locked = Flock::lock(full, FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from_raw_os_error(e as i32))?;
    // Another writer may have rotated meanwhile: then the path is a new, small file.
    let still_ours = fs::metadata(path).map(|m| m.ino() == ino).unwrap_or(false);
    if still_ours {
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        fs::rename(path, rotated)?;
    }
    drop(locked);
    open(path)
}

/// Every event still on disk, oldest first (events.log.1, then events.log); lines that do not
/// parse (a torn line after a crash) are skipped.
pub fn read_all(root: &Path) -> Vec<Event> {
    let current = path(root);
    let mut old = current.as_os_str().to_owned();
    old.push(".1");
    let mut events = Vec::new();
    for p in [PathBuf::from(old), current] {
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        events.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Event>(l).ok()),
        );
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_at_its_cap_and_keeps_whole_lines() {
        let dir = std::env::temp_dir().join(format!("lxcri-eventlog-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let p = dir.join("runtime").join(FILE);
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for _ in 0..45 {
            append(&p, &line, 4096).unwrap();
        }
        let size = fs::metadata(&p).unwrap().len();
        let old = fs::metadata(dir.join("runtime").join("events.log.1"))
            .unwrap()
            .len();
        assert_eq!(
            old, 4000,
            "rotated when the 41st line would pass 4096 bytes"
        );
        assert_eq!(size, 500);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let s = short(&"é".repeat(300));
        assert!(s.len() <= ERROR_MAX + '…'.len_utf8());
    }
}
