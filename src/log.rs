//! Logging as runc does it: errors on stderr, and with --log also lines in the log file
//! (`--log-format json` writes `{"level":"error","msg":...,"time":...}`, the line containerd reads).
//! Warnings go to the log file, or stderr without one; info lines only to the log file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::cli::{Cli, LogFormat};

struct Target {
    file: Option<PathBuf>,
    format: LogFormat,
    debug: bool,
}

static TARGET: OnceLock<Target> = OnceLock::new();

pub fn init(cli: &Cli) {
    let _ = TARGET.set(Target {
        file: cli.log.clone(),
        format: cli.log_format,
        debug: cli.debug,
    });
}

fn write(level: &str, msg: &str) -> bool {
    let Some(target) = TARGET.get() else {
        return false;
    };
    let Some(path) = &target.file else {
        return false;
    };
    let time = crate::state::now_rfc3339();
    let line = match target.format {
        LogFormat::Json => {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        }
        LogFormat::Text => format!("time={time:?} level={level} msg={msg:?}"),
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"))
        .is_ok()
}

/// Before the command line parsed: finds --log and --log-format by hand to record `msg`.
pub fn usage_error(msg: &str) {
    let args: Vec<String> = std::env::args().collect();
    let value_of = |flag: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{flag}="))
                .map(str::to_string)
                .or_else(|| (a == flag).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let format = match value_of("--log-format").as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let _ = TARGET.set(Target {
        file: value_of("--log").map(PathBuf::from),
        format,
        debug: false,
    });
    let first_line = msg.lines().next().unwrap_or(msg);
    write("error", first_line.trim_start_matches("error: "));
}

pub fn error(msg: &str) {
    eprintln!("proxmox-lxcri: {msg}");
    write("error", msg);
}

pub fn warn(msg: &str) {
    if !write("warning", msg) {
        eprintln!("proxmox-lxcri: warning: {msg}");
    }
}

pub fn info(msg: &str) {
    let logged = write("info", msg);
    if !logged && TARGET.get().is_some_and(|t| t.debug) {
        eprintln!("proxmox-lxcri: {msg}");
    }
}
