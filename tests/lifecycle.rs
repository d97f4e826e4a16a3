//! Container lifecycle: create / start / state / delete / run / list / spec.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

/// A script that prints `started`, then waits until the test creates
/// `/tmp/go` in the rootfs (from the host) and exits 0.
const WAIT_FOR_GO: &str =
    "echo started; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo released";

fn release(c: &Container) {
    fs::write(c.rootfs.join("tmp/go"), "").unwrap();
}

/// A loose RFC 3339 check: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    if !(digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    if rest == "Z" || rest == "z" {
        return true;
    }
    let r = rest.as_bytes();
    r.len() == 6
        && (r[0] == b'+' || r[0] == b'-')
        && r[1..3].iter().all(u8::is_ascii_digit)
        && r[3] == b':'
        && r[4..6].iter().all(u8::is_ascii_digit)
}

#[test]
fn state_is_created_then_running_then_stopped_and_gone_after_delete() {
    let mut c = Container::new();
    c.sh(WAIT_FOR_GO);
    let pid_file = c.host.join("pid");
    c.create_with(&["--pid-file", &pid_file.to_string_lossy()])
        .assert_ok();

    // created
    let st = c.state_json();
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], c.id.as_str(), "{st}");
    let pid = st["pid"].as_i64().expect("pid is a number");
    assert!(pid > 0, "{st}");
    let from_file: i64 = fs::read_to_string(&pid_file)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("pid file holds a number");
    assert_eq!(pid, from_file, "state pid vs --pid-file");
    assert!(pid_alive(pid), "created container's pid {pid} is not alive");
    assert!(
        c.cgroup_procs("pids").contains(&pid),
        "pid {pid} is not in the container's pids cgroup {:?}",
        c.cgroup_procs("pids")
    );
    assert!(
        st["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "{st}"
    );
    assert_eq!(st["bundle"], c.bundle.to_string_lossy().as_ref(), "{st}");
    assert_eq!(st["rootfs"], c.rootfs.to_string_lossy().as_ref(), "{st}");
    let created = st["created"].as_str().expect("created is a string");
    assert!(is_rfc3339(created), "created {created:?} is not RFC 3339");
    assert!(st["owner"].is_string(), "owner should be a string: {st}");
    assert!(
        c.state_dir().is_dir(),
        "no state dir {}",
        c.state_dir().display()
    );

    // The user process must not run before `start`.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.container_stdout(), "", "process ran before start");

    // running
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    let st = c.state_json();
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["pid"].as_i64(), Some(pid), "pid changed on start: {st}");
    assert_eq!(st["created"].as_str(), Some(created), "{st}");

    // stopped
    release(&c);
    c.wait_status("stopped", WAIT);
    assert!(c.container_stdout().contains("released"));
    assert!(!pid_alive(pid), "pid {pid} still alive after stop");

    // deleted
    c.delete().assert_ok();
    c.state().assert_fail();
    c.assert_no_debris(Some(pid));
}

#[test]
fn state_has_the_oci_keys() {
    let mut c = Container::new();
    c.sh("sleep 100");
    c.create().assert_ok();
    let st = c.state_json();
    let keys: BTreeSet<&str> = st.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "owner",
    ] {
        assert!(keys.contains(k), "state lacks {k:?}: {st}");
    }
}

#[test]
fn start_twice_fails() {
    let mut c = Container::new();
    c.sh(WAIT_FOR_GO);
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    c.start().assert_fail();
    assert_eq!(c.status(), "running");
    // The process was started exactly once.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.container_stdout().matches("started").count(), 1);
    release(&c);
    c.wait_status("stopped", WAIT);
}

#[test]
fn start_of_a_stopped_container_fails() {
    let mut c = Container::new();
    c.sh("echo once");
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_status("stopped", WAIT);
    let out = c.start();
    out.assert_fail();
    check_our_message(&out, "name the state \"stopped\"", |e| {
        e.contains("stopped")
    });
    assert_eq!(c.container_stdout().matches("once").count(), 1);
}

#[test]
fn delete_of_a_running_container_without_force_fails_and_names_the_state() {
    let mut c = Container::new();
    c.sh(WAIT_FOR_GO);
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    let pid = c.pid();

    let out = c.delete();
    out.assert_fail();
    check_our_message(&out, "name the state \"running\"", |e| {
        e.contains("running")
    });
    assert_eq!(c.status(), "running");
    assert!(pid_alive(pid));
    assert!(c.state_dir().exists());

    c.delete_force().assert_ok();
    c.state().assert_fail();
    c.assert_no_debris(Some(pid));
}

#[test]
fn delete_of_a_created_container_removes_it_without_running_the_process() {
    let mut c = Container::new();
    c.sh("echo must-not-run");
    c.create().assert_ok();
    let pid = c.pid();
    c.delete().assert_ok();
    c.state().assert_fail();
    c.assert_no_debris(Some(pid));
    assert!(!c.container_stdout().contains("must-not-run"));
}

#[test]
fn delete_force_of_a_running_container_kills_it_and_leaves_no_debris() {
    let mut c = Container::new();
    // Children too, and an init that ignores TERM.
    c.sh("trap '' TERM; sleep 1000 & sleep 1000 & echo started; wait");
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    let pid = c.pid();
    let procs = c.cgroup_procs("pids");
    assert!(procs.len() >= 3, "expected init and two sleeps: {procs:?}");

    c.delete_force().assert_ok();
    c.state().assert_fail();
    c.assert_no_debris(Some(pid));
    for p in procs {
        assert!(
            wait_until(WAIT, || !pid_alive(p)),
            "container process {p} survived delete --force"
        );
    }
}

#[test]
fn kill_of_a_stopped_container_fails() {
    let mut c = Container::new();
    c.sh("true");
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_status("stopped", WAIT);
    let out = c.kill(Some("KILL"));
    out.assert_fail();
    check_our_message(&out, "name the state \"stopped\"", |e| {
        e.contains("stopped")
    });
    assert_eq!(c.status(), "stopped");
}

#[test]
fn delete_of_a_stopped_container_leaves_no_state_dir_mount_process_or_cgroup() {
    let mut c = Container::new();
    c.sh("echo started; sleep 1000");
    c.create().assert_ok();
    let pid = c.pid();
    assert!(
        !c.cgroup_dirs().is_empty(),
        "no cgroup made for the container"
    );
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    c.kill(Some("KILL")).assert_ok();
    c.wait_status("stopped", WAIT);
    c.delete().assert_ok();
    c.state().assert_fail();
    c.assert_no_debris(Some(pid));
}

#[test]
fn run_returns_the_output_and_removes_the_container_afterwards() {
    let mut c = Container::new();
    c.sh("echo hello from $$");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "hello from 1\n", "{out}");
    c.state().assert_fail();
    let left = c.root_leftovers();
    assert!(left.is_empty(), "root dir still has {left:?}");
    c.assert_no_debris(None);
}

#[test]
fn run_detach_returns_and_leaves_the_container_running() {
    let mut c = Container::new();
    c.sh(WAIT_FOR_GO);
    let out = c.run_detached();
    out.assert_ok();
    c.wait_container_stdout("started", WAIT);
    let st = c.state_json();
    assert_eq!(st["status"], "running", "{st}");
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid_alive(pid));
    release(&c);
    c.wait_status("stopped", WAIT);
    c.delete().assert_ok();
    c.assert_no_debris(Some(pid));
}

#[test]
fn list_quiet_shows_the_ids() {
    let mut a = Container::new();
    a.sh("sleep 100");
    a.create().assert_ok();
    let out = a.rt(&["list", "-q"]);
    out.assert_ok();
    assert_eq!(out.lines(), vec![a.id.as_str()], "{out}");
}

#[test]
fn list_no_longer_shows_a_deleted_container() {
    let mut c = Container::new();
    c.sh("sleep 100");
    c.create().assert_ok();
    let out = c.rt(&["list", "-q"]);
    assert_eq!(out.assert_ok().lines(), vec![c.id.as_str()], "{out}");
    c.delete_force().assert_ok();
    let out = c.rt(&["list", "-q"]);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "", "{out}");
}

#[test]
fn list_format_json_is_an_array_with_id_pid_status_bundle() {
    let mut c = Container::new();
    c.sh("sleep 100");
    c.create().assert_ok();
    let pid = c.pid();
    let out = c.rt(&["list", "--format", "json"]);
    out.assert_ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    let arr = v.as_array().expect("list --format json is an array");
    assert_eq!(arr.len(), 1, "{out}");
    let e = &arr[0];
    assert_eq!(e["id"], c.id.as_str());
    assert_eq!(e["pid"].as_i64(), Some(pid));
    assert_eq!(e["status"], "created");
    assert_eq!(e["bundle"], c.bundle.to_string_lossy().as_ref());
    assert!(e["created"].as_str().is_some_and(is_rfc3339), "{e}");
}

#[test]
fn list_table_has_a_header_and_a_row_per_container() {
    let mut c = Container::new();
    c.sh("sleep 100");
    c.create().assert_ok();
    let out = c.rt(&["list"]);
    out.assert_ok();
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header[..3], ["ID", "PID", "STATUS"], "{out}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], c.id);
    assert_eq!(row[1], c.pid().to_string());
    assert_eq!(row[2], "created");
}

#[test]
fn spec_writes_a_config_json_in_the_cwd() {
    let c = Container::new();
    let dir = c.host.join("spec");
    fs::create_dir_all(&dir).unwrap();
    let out = c.rt_opts(
        &["spec"],
        &ExecOpts {
            cwd: Some(dir.clone()),
            ..Default::default()
        },
    );
    out.assert_ok();
    let text = fs::read_to_string(dir.join("config.json")).expect("config.json written");
    let v: Value = serde_json::from_str(&text).expect("config.json is JSON");
    assert!(
        v["ociVersion"]
            .as_str()
            .is_some_and(|s| s.starts_with("1.")),
        "{v}"
    );
    assert_eq!(v["root"]["path"], "rootfs");
    assert_eq!(v["process"]["args"], serde_json::json!(["sh"]));
    assert!(v["linux"]["namespaces"].is_array());
    assert!(v["mounts"].as_array().is_some_and(|m| !m.is_empty()));
}

#[test]
fn spec_bundle_writes_the_config_json_into_the_bundle() {
    let c = Container::new();
    let dir = c.host.join("spec-bundle");
    fs::create_dir_all(&dir).unwrap();
    c.rt(&["spec", "--bundle", &dir.to_string_lossy()])
        .assert_ok();
    let text = fs::read_to_string(dir.join("config.json")).expect("config.json written");
    serde_json::from_str::<Value>(&text).expect("config.json is JSON");
}

#[test]
fn spec_refuses_to_overwrite_an_existing_config_json() {
    let c = Container::new();
    let dir = c.host.join("spec");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.json"), "precious").unwrap();
    let out = c.rt_opts(
        &["spec"],
        &ExecOpts {
            cwd: Some(dir.clone()),
            ..Default::default()
        },
    );
    out.assert_fail();
    assert_eq!(
        fs::read_to_string(dir.join("config.json")).unwrap(),
        "precious"
    );
    check_our_message(&out, "name config.json", |e| e.contains("config.json"));
}

#[test]
fn the_process_runs_in_the_cgroups_path_in_every_hierarchy() {
    let mut c = Container::new();
    c.sh("echo started; sleep 100");
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    let pid = c.pid();
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want = format!("/{CGROUP_PARENT}/{}", c.id);
    if unified_host() {
        // One hierarchy: the single `0::PATH` line.
        assert_eq!(text.trim(), format!("0::{want}"), "{text}");
        assert!(c.cgroup_procs("").contains(&pid));
        return;
    }
    for hierarchy in ["pids", "memory", "cpu", "devices", "freezer"] {
        let line = text
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|ctrls| ctrls.split(',').any(|x| x == hierarchy))
            })
            .unwrap_or_else(|| panic!("no {hierarchy} line in\n{text}"));
        assert!(line.ends_with(&format!(":{want}")), "{line}");
        assert!(c.cgroup_procs(hierarchy).contains(&pid), "{hierarchy}");
    }
}
