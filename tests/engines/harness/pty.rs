//! Running an engine command on a real terminal: util-linux `script` allocates a pty, makes it the
//! command's controlling terminal and copies our input to it and its output back.

use super::env::CMD_TIMEOUT;
use crate::common::{self, Out};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Terminal size the outer pty is given; `podman run -it` passes it on as `consoleSize`.
pub const ROWS: u16 = 33;
pub const COLS: u16 = 91;

/// Runs `program args...` on a fresh `ROWS`×`COLS` pty, typing `input`. stdout is everything the
/// terminal showed (with `\r\n` line ends, the echoed input included); the exit code is the
/// command's.
#[track_caller]
pub fn run(program: &str, args: &[String], input: &str, io_dir: &Path) -> Out {
    let mut cmd = common::shell_quote(program.as_ref());
    for a in args {
        cmd.push(' ');
        cmd.push_str(&common::shell_quote(a.as_ref()));
    }
    let inner = format!("stty rows {ROWS} cols {COLS}; exec {cmd}");
    fs::create_dir_all(io_dir).expect("create io dir");
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let stdout_path = io_dir.join(format!("pty{n}.out"));
    let stderr_path = io_dir.join(format!("pty{n}.err"));
    let mut child = Command::new("/usr/bin/script")
        .args(["--quiet", "--return", "--command", &inner, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&stdout_path).expect("create pty.out"))
        .stderr(fs::File::create(&stderr_path).expect("create pty.err"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run /usr/bin/script: {e}"));
    // The pty buffers what we type until the container's shell reads it.
    let mut stdin = child.stdin.take().expect("script's stdin");
    stdin
        .write_all(input.as_bytes())
        .expect("write to script's stdin");
    drop(stdin);
    let cmdline = format!("script -qec {}", common::shell_quote(inner.as_ref()));
    let mut status = None;
    let done = common::wait_until(CMD_TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !done {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = Out {
        cmdline,
        stdout: fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
        code: status.map_or(i32::MIN, common::exit_code),
    };
    assert!(
        done,
        "command on the pty timed out after {CMD_TIMEOUT:?}:\n{out}"
    );
    out
}

/// The terminal output's lines, without `\r`, and without the `^@` the terminal echoes at the start
/// when `script` passes on the end of our input (a NUL) while the line discipline echoes control
/// characters.
pub fn lines(out: &Out) -> Vec<String> {
    out.stdout
        .lines()
        .map(|l| {
            let mut l = l.trim_end_matches('\r').trim_start_matches('\0');
            while let Some(rest) = l.strip_prefix("^@") {
                l = rest;
            }
            l.to_string()
        })
        .collect()
}
