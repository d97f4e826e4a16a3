//! Global options and output conventions of the command line: `--log`,
//! `--log-format`, quiet success.

mod common;

use common::*;
use serde_json::Value;
use std::fs;

#[test]
fn log_format_json_writes_errors_as_json_lines_to_the_log_file() {
    let c = Container::new();
    fs::create_dir_all(&c.root).unwrap();
    let log = c.host.join("log.json");
    let out = c.rt(&[
        "--log",
        &log.to_string_lossy(),
        "--log-format",
        "json",
        "state",
        &c.id,
    ]);
    out.assert_fail();
    let text = fs::read_to_string(&log).expect("log file written");
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let errors: Vec<&Value> = entries.iter().filter(|e| e["level"] == "error").collect();
    assert!(!errors.is_empty(), "no error entry in the log:\n{text}");
    for e in &errors {
        assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        assert!(e["time"].is_string(), "{e}");
    }
    check_our_text(&text, "log that the container does not exist", |l| {
        l.contains("does not exist")
    });
    // The message is on stderr too.
    assert!(!out.stderr.trim().is_empty(), "{out}");
}

#[test]
fn log_format_text_writes_errors_to_the_log_file() {
    let c = Container::new();
    fs::create_dir_all(&c.root).unwrap();
    let log = c.host.join("log.txt");
    let out = c.rt(&["--log", &log.to_string_lossy(), "state", &c.id]);
    out.assert_fail();
    let text = fs::read_to_string(&log).expect("log file written");
    assert!(text.contains("level=error"), "{text}");
    assert!(!out.stderr.trim().is_empty(), "{out}");
}

#[test]
fn log_options_work_for_the_whole_lifecycle() {
    let mut c = Container::new();
    let log = c.host.join("log.json");
    let log = log.to_string_lossy().into_owned();
    let g = ["--log", log.as_str(), "--log-format", "json"];
    c.sh("echo hi");
    c.write_config();
    let b = c.bundle.to_string_lossy().into_owned();
    let out = c.rt(&[&g[..], &["run", "--bundle", &b, &c.id]].concat());
    out.assert_ok();
    assert_eq!(out.stdout, "hi\n");
    // Whatever was logged is JSON lines.
    for l in fs::read_to_string(&log).unwrap_or_default().lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
}

#[test]
fn a_successful_lifecycle_prints_nothing_on_stderr() {
    let mut c = Container::new();
    c.sh("echo started; sleep 100");
    for out in [c.create(), c.start()] {
        out.assert_ok();
        assert_eq!(out.stderr, "", "{out}");
    }
    c.wait_container_stdout("started", WAIT);
    for out in [c.state(), c.kill(Some("KILL"))] {
        out.assert_ok();
        assert_eq!(out.stderr, "", "{out}");
    }
    c.wait_status("stopped", WAIT);
    let out = c.delete();
    out.assert_ok();
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(out.stdout, "", "{out}");
}

/// containerd's shim and conmon read the runtime's error from the --log file: an unknown
/// subcommand or flag must be recorded there too, not only printed.
#[test]
fn usage_errors_reach_the_log_file() {
    let c = Container::new();
    fs::create_dir_all(&c.host).unwrap();
    let log = c.host.join("usage.json");
    let log_arg = format!("--log={}", log.to_string_lossy());
    let out = c.rt(&[&log_arg, "--log-format", "json", "no-such-command", &c.id]);
    out.assert_fail();
    let text = fs::read_to_string(&log).expect("log file written");
    let entry: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(entry["level"], "error", "{text}");
    assert!(
        entry["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-command")),
        "{text}"
    );
}
