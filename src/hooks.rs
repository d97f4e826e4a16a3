//! Runtime-spec hooks: each runs with its path, args, env and timeout, the container state as JSON
//! on stdin. Failing hooks before `start` fail the operation (the caller undoes it); failing
//! poststart/poststop hooks are warnings. A hook's output goes to the runtime's log (stderr without
//! --log), never to the container's stdio.

use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::Hook;
use serde::Serialize;

use crate::error::{Error, Result};

/// The state a hook reads on stdin (the runtime-spec's state object).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: &'a str,
    pub pid: i32,
    pub bundle: &'a std::path::Path,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    pub annotations: &'a std::collections::HashMap<String, String>,
}

/// Runs `hooks` of stage `stage` in order; the first failure stops them and is returned.
pub fn run(stage: &str, hooks: &[Hook], state: &HookState<'_>) -> Result<()> {
    if hooks.is_empty() {
        return Ok(());
    }
    let input = serde_json::to_vec(state).map_err(|e| Error::invalid(e.to_string()))?;
    run_raw(stage, hooks, &input)
}

/// Like `run`, with the state already serialized.
pub fn run_raw(stage: &str, hooks: &[Hook], input: &[u8]) -> Result<()> {
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, input)
            .map_err(|e| e.context(format!("hooks.{stage}[{i}] {}", hook.path().display())))?;
    }
    Ok(())
}

/// Runs hooks whose failure is only worth a warning (poststart, poststop): every hook runs, the
/// ones after a failing one too ("as if the hook had succeeded").
pub fn run_warn(stage: &str, hooks: &[Hook], state: &HookState<'_>) {
    if hooks.is_empty() {
        return;
    }
    let input = match serde_json::to_vec(state) {
        Ok(v) => v,
        Err(e) => return crate::log::warn(&format!("hooks.{stage}: {e}")),
    };
    for (i, hook) in hooks.iter().enumerate() {
        if let Err(e) = run_one(hook, &input) {
            let e = e.context(format!("hooks.{stage}[{i}] {}", hook.path().display()));
            crate::log::warn(&e.to_string());
        }
    }
}

/// An anonymous in-memory file: the hook's stdin, or where its output goes.
fn memfd(name: &CStr) -> Result<File> {
    memfd_create(name, MemFdCreateFlag::MFD_CLOEXEC)
        .map(File::from)
        .map_err(|e| Error::from(e).context("memfd_create"))
}

fn run_one(hook: &Hook, input: &[u8]) -> Result<()> {
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            cmd.arg0(argv0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    // The state and the output go through files, not pipes: a hook that does not read its stdin
    // cannot raise SIGPIPE in the runtime (whose SIGPIPE is not ignored in the init), nor block it
    // on a big state; a hook that writes more than a pipe holds cannot hang it.
    let mut stdin = memfd(c"hook-state")?;
    stdin
        .write_all(input)
        .and_then(|_| stdin.seek(SeekFrom::Start(0)))
        .map_err(|e| Error::os("writing the hook's state", e))?;
    let mut output = memfd(c"hook-output")?;
    let dup = |f: &File| {
        f.try_clone()
            .map(Stdio::from)
            .map_err(|e| Error::os("dup of the hook's output", e))
    };
    // A group of its own, so that a timeout kills whatever the hook started, too.
    cmd.process_group(0);
    let mut child = cmd
        .stdin(Stdio::from(stdin))
        .stdout(dup(&output)?)
        .stderr(dup(&output)?)
        .spawn()
        .map_err(|e| Error::os("spawning", e))?;
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::os("waiting", e))? {
            break status;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            return Err(Error::invalid(format!(
                "timed out after {} s",
                hook.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut text = String::new();
    let _ = output.seek(SeekFrom::Start(0));
    let _ = output.read_to_string(&mut text);
    let text = text.trim_end();
    if !text.is_empty() {
        crate::log::info(&format!("hook {}: {text}", hook.path().display()));
    }
    if status.success() {
        Ok(())
    } else if text.is_empty() {
        Err(Error::invalid(format!("failed ({status})")))
    } else {
        Err(Error::invalid(format!("failed ({status}): {text}")))
    }
}
