//! Running an engine binary: with a deadline (the ADR's `timeout`), killed with its whole process
//! group when it runs past it, and with its output captured or passed through.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Context, Error, Result};

/// What the engine's stdout and stderr are connected to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Io {
    /// Both captured (the engine starts no container process that could inherit them).
    Capture,
    /// stdout the caller's, stderr captured (the error is folded into ours).
    CaptureStderr,
    /// Everything the caller's: the container (or exec'd process) inherits it.
    Inherit,
}

pub struct Finished {
    /// Exit code, or 128 + signal.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// Runs `cmd`; with a `timeout`, the engine runs in a process group of its own and the group is
/// SIGKILLed at the deadline (`Err` says so).
pub fn run(cmd: &mut Command, io: Io, timeout: Option<Duration>, what: &str) -> Result<Finished> {
    if timeout.is_some() {
        cmd.process_group(0);
    }
    if io != Io::Inherit {
        cmd.stderr(Stdio::piped());
    }
    if io == Io::Capture {
        cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    }
    let mut child = cmd.spawn().ctx(|| what.to_string())?;
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    let code = match wait(&mut child, timeout) {
        Ok(code) => code,
        Err(e) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::SIGKILL,
            );
            let _ = child.wait();
            return Err(e.context(what));
        }
    };
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok(Finished {
        code,
        stdout: collect(out),
        stderr: collect(err),
    })
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Waits for the child's exit through a pidfd (readable when it exits), bounded by `timeout`.
fn wait(child: &mut Child, timeout: Option<Duration>) -> Result<i32> {
    if let Some(limit) = timeout {
        let pidfd = sys::pidfd_open(child.id() as i32).ctx(|| "pidfd_open of the engine")?;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::invalid(format!(
                    "timed out after {} (runtime.timeout) and was killed",
                    seconds(limit)
                )));
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::from(e).context("waiting for the engine")),
            }
        }
    }
    let status = child.wait().ctx(|| "waiting for the engine")?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.3}s")
    }
}

/// The engine's own error from its stderr or log: the last error line, with runc's / crun's log
/// decoration (`time=... level=error msg="..."` or a JSON record) taken off.
pub fn engine_message(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let mut last = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if v["level"] == "error" || v["level"] == "fatal" {
                if let Some(m) = v["msg"].as_str() {
                    last = Some(m.to_string());
                }
            }
            continue;
        }
        if let Some(i) = line.find(" msg=\"") {
            if line.contains("level=error") || line.contains("level=fatal") {
                let m = &line[i + 6..];
                let m = m.strip_suffix('"').unwrap_or(m);
                last = Some(m.replace("\\\"", "\"").replace("\\\\", "\\"));
            }
            continue;
        }
        if line.contains("level=") {
            continue;
        }
        last = Some(line.to_string());
    }
    last.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_messages_lose_their_log_decoration() {
        let runc = br#"time="2026-11-26T01:21:34Z" level=error msg="runc run failed: open \"x\": no such file""#;
        assert_eq!(
            engine_message(runc),
            r#"runc run failed: open "x": no such file"#
        );
        let crun = b"cgroups in hybrid mode not supported, drop all controllers from cgroupv2\n";
        assert_eq!(
            engine_message(crun),
            "cgroups in hybrid mode not supported, drop all controllers from cgroupv2"
        );
        let json = br#"{"level":"warning","msg":"w"}
{"level":"error","msg":"boom","time":"t"}"#;
        assert_eq!(engine_message(json), "boom");
    }

    #[test]
    fn a_command_past_its_timeout_is_killed() {
        let t = Instant::now();
        let err = run(
            Command::new("/bin/sleep").arg("10"),
            Io::Capture,
            Some(Duration::from_millis(200)),
            "sleep",
        )
        .err()
        .expect("timeout");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("timed out after 0.200s"), "{err}");
    }
}
