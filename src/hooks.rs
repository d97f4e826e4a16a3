//! Runtime-spec hooks: each runs with its path, args, env and timeout, the container state as JSON
//! on stdin. Failing hooks before `start` fail the operation (the caller undoes it); failing
//! poststart/poststop hooks are warnings. A hook's output goes to the runtime's log (stderr without
//! --log), never to the container's stdio.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Runs hooks whose failure is only worth a warning (poststart, poststop).
pub fn run_warn(stage: &str, hooks: &[Hook], state: &HookState<'_>) {
    if let Err(e) = run(stage, hooks, state) {
        crate::log::warn(&e.to_string());
    }
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
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::os("spawning", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is no error.
        let _ = stdin.write_all(input);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::os("waiting", e))? {
            break status;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::invalid(format!(
                "timed out after {} s",
                hook.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut output = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut output);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut output);
    }
    if !output.trim().is_empty() {
        crate::log::info(&format!(
            "hook {}: {}",
            hook.path().display(),
            output.trim_end()
        ));
    }
    if status.success() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "failed ({status}){}",
            if output.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", output.trim_end())
            }
        )))
    }
}
