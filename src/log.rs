//! Error reporting as runc does it: the message on stderr, and, with --log, a line in the log file
//! (`--log-format json` writes `{"level":"error","msg":...,"time":...}`, the line containerd reads).

use std::io::Write;

use crate::cli::{Cli, LogFormat};

pub fn error(cli: &Cli, msg: &str) {
    write(cli, "error", msg);
}

pub fn warn(cli: &Cli, msg: &str) {
    write(cli, "warning", msg);
}

fn write(cli: &Cli, level: &str, msg: &str) {
    if level == "error" {
        eprintln!("proxmox-lxcri: {msg}");
    } else {
        eprintln!("proxmox-lxcri: {level}: {msg}");
    }
    let Some(path) = &cli.log else { return };
    let time = crate::state::now_rfc3339();
    let line = match cli.log_format {
        LogFormat::Json => {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        }
        LogFormat::Text => format!("time={time:?} level={level} msg={msg:?}"),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
