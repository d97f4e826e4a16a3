//! Checks shared by the cgroup suites of v1/hybrid hosts (tests/cgroups.rs) and of pure v2 hosts
//! (tests/cgroups_v2.rs): the scenarios are the same, only the files differ.

use std::time::Duration;

use serde_json::{json, Value};

use super::{check_our_message, is_ours, Container, Out};

/// A busybox command that really holds `mib` MiB: `tail` keeps the whole newline-free input as
/// its "last line". It runs in a subshell that makes itself the OOM killer's first choice, so
/// that a kill never takes the container's shell (which then could not report it).
pub fn allocate(mib: u32) -> String {
    format!("(echo 1000 >/proc/self/oom_score_adj; head -c {mib}m /dev/zero | tail >/dev/null)")
}

/// The value of `key` in a flat-keyed cgroup file's `text` (`memory.events`, `cpu.stat`, ...).
#[track_caller]
pub fn flat_key(text: &str, file: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {file}:\n{text}"))
}

/// `create` failed cleanly: non-zero exit, the field named, no state and no cgroup left.
#[track_caller]
pub fn assert_refused(c: &Container, out: &Out, named: &str) {
    out.assert_fail();
    check_our_message(out, &format!("name {named}"), |e| e.contains(named));
    c.assert_no_debris(None);
}

/// The records `events --interval INTERVAL` prints for a detached container until it stops.
/// Ours ends the stream by itself once the container's init is gone; runc streams on, so for
/// runc the output so far is taken once the container is stopped.
#[track_caller]
pub fn events_until_stopped(c: &Container, interval: &str, timeout: Duration) -> (Out, Vec<Value>) {
    let events = c.spawn_rt(&["events", "--interval", interval, &c.id]);
    let out = if is_ours() {
        let out = events.wait(timeout);
        out.assert_ok();
        out
    } else {
        c.wait_status("stopped", timeout);
        std::thread::sleep(Duration::from_millis(1000));
        Out {
            cmdline: events.cmdline.clone(),
            stdout: events.stdout_so_far(),
            stderr: String::new(),
            code: 0,
        }
    };
    let records = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out, records)
}

/// At least one OOM record, each exactly runc's `{"type": "oom", "id": ID}`. The kernel may
/// signal one kill more than once (each time the cgroup is under OOM).
#[track_caller]
pub fn assert_oom_records(c: &Container, records: &[Value], out: &Out) {
    let oom: Vec<_> = records.iter().filter(|r| r["type"] == "oom").collect();
    assert!(!oom.is_empty(), "no oom record:\n{out}");
    for r in oom {
        assert_eq!(r, &json!({ "type": "oom", "id": c.id }));
    }
}

/// Runs `c` detached printing "tick" every 50 ms, and waits for the first tick.
#[track_caller]
pub fn run_ticking(c: &mut Container) {
    c.sh("while :; do echo tick; sleep 0.05; done");
    c.run_detached().assert_ok();
    c.wait_container_stdout("tick", super::WAIT);
}

/// A paused ticking container prints nothing for `quiet`; returns its output's length.
#[track_caller]
pub fn assert_silent_while_paused(c: &Container, quiet: Duration) -> usize {
    let frozen_at = c.container_stdout().len();
    std::thread::sleep(quiet);
    assert_eq!(
        c.container_stdout().len(),
        frozen_at,
        "the container printed while paused"
    );
    frozen_at
}

/// A resumed ticking container is `running` and prints again.
#[track_caller]
pub fn assert_ticking_again(c: &Container, frozen_at: usize) {
    assert_eq!(c.status(), "running");
    assert!(
        super::wait_until(super::WAIT, || c.container_stdout().len() > frozen_at),
        "no output after resume"
    );
}

/// `events --stats` of `c`: the record's `data`, after checking its type and id.
pub fn stats(c: &Container) -> Value {
    let out = c.rt(&["events", "--stats", &c.id]);
    out.assert_ok();
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    assert_eq!(v["type"], "stats", "{v}");
    assert_eq!(v["id"], c.id.as_str(), "{v}");
    v["data"].clone()
}

/// `events --stats` numbers follow the container: cpu time grows by at least `min_growth_ns`
/// over `busy` of a busy loop, pids count the processes, memory shows its limit and a usage.
pub fn assert_stats_move(busy: Duration, min_growth_ns: u64) {
    let mut c = Container::new();
    c.set("/linux/resources/pids", json!({ "limit": 50 }))
        .set("/linux/resources/memory", json!({ "limit": 256u64 << 20 }))
        .sh("sleep 1000 & echo ready; while :; do :; done");
    c.run_detached().assert_ok();
    c.wait_container_stdout("ready", super::WAIT);
    let a = stats(&c);
    std::thread::sleep(busy);
    let b = stats(&c);
    let total = |v: &Value| v["cpu"]["usage"]["total"].as_u64().unwrap_or(0);
    assert!(
        total(&b) > total(&a) + min_growth_ns,
        "cpu time did not grow by {min_growth_ns} ns in {busy:?} of a busy loop: {} -> {}",
        total(&a),
        total(&b)
    );
    assert_eq!(b["pids"]["current"], 2, "{}", b["pids"]);
    assert_eq!(b["pids"]["limit"], 50, "{}", b["pids"]);
    assert_eq!(
        b["memory"]["usage"]["limit"],
        256u64 << 20,
        "{}",
        b["memory"]
    );
    assert!(b["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0);
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}
