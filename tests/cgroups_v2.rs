//! Cgroups on a pure cgroup v2 host: the limits read back from the unified hierarchy's files
//! (`memory.max`, `pids.max`, `cpu.max`, `cpu.weight`, `io.weight`), limits that bite, freezing
//! through `cgroup.freeze`, raw `unified` keys, `update`, the device filter (an eBPF program on
//! v2), and the cgroup namespace showing the container's cgroup as the root.
//!
//! This machine is a v1 hybrid host: these tests run in the guest of `scripts/test-guest`. On a
//! host that is not pure v2 every test here prints `skipped: host is not cgroup v2` straight to
//! the terminal (past the test harness's output capture) and returns.

mod common;

use common::cgroup_checks::*;
use common::*;
use serde_json::{json, Value};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// True (after saying so loudly) when /sys/fs/cgroup is not the unified hierarchy.
fn skip_unless_v2(test: &str) -> bool {
    if unified_host() {
        return false;
    }
    // Not eprintln!: libtest captures that for passing tests, and this must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: host is not cgroup v2 ({test}; run scripts/test-guest for the pure v2 suite)"
    );
    true
}

/// `/sys/fs/cgroup/lxcri-test/<id>`.
fn cg_path(c: &Container) -> PathBuf {
    Path::new(CGROUP_MOUNT).join(CGROUP_PARENT).join(&c.id)
}

/// A file of the container's cgroup, trimmed.
#[track_caller]
fn cg(c: &Container, file: &str) -> String {
    let p = cg_path(c).join(file);
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The value of `key` in a flat-keyed file (`memory.events`, `cpu.stat`, `cgroup.events`).
#[track_caller]
fn cg_key(c: &Container, file: &str, key: &str) -> u64 {
    flat_key(&cg(c, file), file, key)
}

#[test]
fn the_container_gets_its_own_cgroup_with_the_controllers_enabled() {
    if skip_unless_v2("the_container_gets_its_own_cgroup_with_the_controllers_enabled") {
        return;
    }
    let mut c = Container::new();
    c.set("/linux/resources/pids", json!({ "limit": 50 }))
        .sh("echo started; sleep 1000");
    c.run_detached().assert_ok();
    c.wait_container_stdout("started", WAIT);
    let pid = c.pid();
    assert_eq!(c.cgroup_dirs(), vec![cg_path(&c)]);
    assert_eq!(c.cgroup_procs(""), vec![pid]);
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(own.trim(), format!("0::/{CGROUP_PARENT}/{}", c.id));
    // The parent hands the controllers down, else no limit file would exist.
    let parent = Path::new(CGROUP_MOUNT).join(CGROUP_PARENT);
    let subtree = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap();
    for ctrl in ["memory", "pids", "cpu"] {
        assert!(
            subtree.split_whitespace().any(|x| x == ctrl),
            "{ctrl} not in {}: {subtree}",
            parent.display()
        );
    }
    c.delete_force().assert_ok();
    c.assert_no_debris(Some(pid));
}

/// clone3 puts the init into its cgroup (CLONE_INTO_CGROUP), so that it never runs outside it
/// and no later write to cgroup.procs moves it: seen in the syscalls the runtime makes.
#[test]
fn clone3_places_the_init_in_its_cgroup() {
    if skip_unless_v2("clone3_places_the_init_in_its_cgroup") || skip_unless_ours() {
        return;
    }
    let mut c = Container::new();
    c.sh("cat /proc/self/cgroup");
    let trace = c.host.join("strace.out");
    let trace_s = trace.to_string_lossy().into_owned();
    let mut argv = [
        "-f",
        "-qq",
        "-e",
        "trace=clone,clone3,openat,open",
        "-o",
        &trace_s,
    ]
    .map(String::from)
    .to_vec();
    argv.extend(c.run_command_line());
    let out = host_cmd(
        "strace",
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    out.assert_ok();
    assert_eq!(
        out.stdout.trim(),
        format!("0::/{CGROUP_PARENT}/{}", c.id),
        "the container's process is not in its cgroup"
    );
    let calls = fs::read_to_string(&trace).expect("read strace output");
    let clones: Vec<&str> = calls.lines().filter(|l| l.contains("clone3(")).collect();
    assert!(
        clones.iter().any(|l| l.contains("CLONE_INTO_CGROUP")),
        "no clone3 with CLONE_INTO_CGROUP:\n{calls}"
    );
    let moved: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains(&format!("{}/cgroup.procs", c.id)))
        .collect();
    assert!(
        moved.is_empty(),
        "the init was moved by a write to cgroup.procs: {moved:?}"
    );
    c.assert_no_debris(None);
}

#[test]
fn memory_max_oom_kills_a_process_allocating_past_it() {
    if skip_unless_v2("memory_max_oom_kills_a_process_allocating_past_it") {
        return;
    }
    let mut c = Container::new();
    let limit = 16u64 << 20;
    c.set(
        "/linux/resources/memory",
        json!({ "limit": limit, "swap": limit, "reservation": 8u64 << 20 }),
    )
    .sh(&format!(
        "{}; echo status=$?; exec sleep 1000",
        allocate(64)
    ));
    c.run_detached().assert_ok();
    c.wait_container_stdout("status=", Duration::from_secs(60));
    assert_eq!(cg(&c, "memory.max"), limit.to_string());
    assert_eq!(cg(&c, "memory.low"), (8u64 << 20).to_string());
    // v2 counts swap apart from memory: spec swap (memory + swap) == limit means no swap.
    if cg_path(&c).join("memory.swap.max").exists() {
        assert_eq!(cg(&c, "memory.swap.max"), "0");
    }
    // SIGKILL from the OOM killer: the shell reports 128 + 9.
    assert!(
        c.container_stdout().contains("status=137"),
        "the allocation was not killed: {}",
        c.container_stdout()
    );
    assert!(cg_key(&c, "memory.events", "oom_kill") >= 1);
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn without_a_memory_limit_the_allocation_succeeds() {
    // The control for the OOM test: the allocator itself works (a smaller amount than the v1
    // suite's: emulation is slow).
    if skip_unless_v2("without_a_memory_limit_the_allocation_succeeds") {
        return;
    }
    let mut c = Container::new();
    c.sh(&format!("{}; echo status=$?", allocate(24)));
    c.write_config();
    let b = c.bundle.to_string_lossy().into_owned();
    let slow = ExecOpts {
        timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    let out = c.rt_opts(&["run", "--bundle", &b, &c.id], &slow);
    out.assert_ok();
    assert_eq!(out.stdout, "status=0\n", "{out}");
    c.assert_no_debris(None);
}

#[test]
fn pids_max_stops_a_fork_loop() {
    if skip_unless_v2("pids_max_stops_a_fork_loop") {
        return;
    }
    let mut c = Container::new();
    // ash gives up on a failed fork, so the loop runs in a child shell whose end is reported.
    c.set("/linux/resources/pids", json!({ "limit": 8 })).sh(
        "exec 2>&1; sh -c 'i=0; while [ $i -lt 30 ]; do sleep 1000 & i=$((i+1)); done'; \
         echo loop-exit=$?; exec sleep 1000",
    );
    c.run_detached().assert_ok();
    c.wait_container_stdout("loop-exit=", Duration::from_secs(60));
    let out = c.container_stdout();
    assert!(out.contains("can't fork"), "no fork failed inside: {out}");
    assert!(!out.contains("loop-exit=0"), "the loop finished: {out}");
    assert_eq!(cg(&c, "pids.max"), "8");
    assert!(cg_key(&c, "pids.events", "max") > 0);
    let current: u64 = cg(&c, "pids.current").parse().unwrap();
    assert!((2..=8).contains(&current), "pids.current {current}");
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn cpu_max_weight_and_cpuset_are_written_and_throttle() {
    if skip_unless_v2("cpu_max_weight_and_cpuset_are_written_and_throttle") {
        return;
    }
    let mut c = Container::new();
    // shares 2 is v1's minimum, which every shares-to-weight mapping takes to v2's minimum, 1.
    c.set(
        "/linux/resources/cpu",
        json!({ "shares": 2, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0" }),
    )
    .sh("grep Cpus_allowed_list /proc/self/status; while :; do :; done");
    c.run_detached().assert_ok();
    c.wait_container_stdout("Cpus_allowed_list", WAIT);
    assert_eq!(cg(&c, "cpu.max"), "20000 100000");
    assert_eq!(cg(&c, "cpu.weight"), "1");
    assert_eq!(cg(&c, "cpuset.cpus"), "0");
    assert_eq!(cg(&c, "cpuset.mems"), "0");
    let allowed = c.container_stdout();
    assert!(
        allowed.split_whitespace().nth(1) == Some("0"),
        "the process may run elsewhere: {allowed}"
    );
    // A busy loop with 20% of one CPU is throttled within a few periods.
    assert!(
        wait_until(Duration::from_secs(30), || cg_key(
            &c,
            "cpu.stat",
            "nr_throttled"
        ) > 0),
        "never throttled:\n{}",
        cg(&c, "cpu.stat")
    );
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn blkio_weight_becomes_io_weight() {
    if skip_unless_v2("blkio_weight_becomes_io_weight") {
        return;
    }
    let mut c = Container::new();
    // 1000 is blkio's maximum: BFQ takes it as it is, io.weight's scale tops out at 10000.
    c.set("/linux/resources/blockIO", json!({ "weight": 1000 }))
        .sh("sleep 1000");
    c.run_detached().assert_ok();
    let (file, want) = if cg_path(&c).join("io.bfq.weight").exists() {
        ("io.bfq.weight", "default 1000")
    } else {
        ("io.weight", "default 10000")
    };
    let got = cg(&c, file);
    assert!(
        got.lines().any(|l| l.trim() == want),
        "{file} is {got:?}, not {want:?}"
    );
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn pause_sets_cgroup_freeze_and_resume_clears_it() {
    if skip_unless_v2("pause_sets_cgroup_freeze_and_resume_clears_it") {
        return;
    }
    let mut c = Container::new();
    run_ticking(&mut c);

    c.rt(&["pause", &c.id]).assert_ok();
    assert_eq!(cg(&c, "cgroup.freeze"), "1");
    assert_eq!(cg_key(&c, "cgroup.events", "frozen"), 1);
    assert_eq!(c.status(), "paused");
    let frozen_at = assert_silent_while_paused(&c, Duration::from_millis(1000));

    // kill --all keeps a paused container paused.
    if is_ours() {
        c.kill_all("TERM").assert_ok();
        assert_eq!(cg(&c, "cgroup.freeze"), "1");
        assert_eq!(c.status(), "paused");
    }

    c.rt(&["resume", &c.id]).assert_ok();
    assert_eq!(cg(&c, "cgroup.freeze"), "0");
    assert_eq!(cg_key(&c, "cgroup.events", "frozen"), 0);
    if !is_ours() {
        assert_ticking_again(&c, frozen_at);
    }
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn resume_lets_a_paused_container_go_on() {
    if skip_unless_v2("resume_lets_a_paused_container_go_on") {
        return;
    }
    let mut c = Container::new();
    run_ticking(&mut c);
    c.rt(&["pause", &c.id]).assert_ok();
    let frozen_at = c.container_stdout().len();
    c.rt(&["resume", &c.id]).assert_ok();
    assert_ticking_again(&c, frozen_at);
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn unified_keys_are_written_to_their_files() {
    if skip_unless_v2("unified_keys_are_written_to_their_files") {
        return;
    }
    let mut c = Container::new();
    c.set(
        "/linux/resources/unified",
        json!({ "memory.high": "50000000", "pids.max": "42", "cpu.weight": "77" }),
    )
    .sh("sleep 1000");
    c.run_detached().assert_ok();
    // The kernel rounds memory.high down to whole pages.
    let page = 4096;
    assert_eq!(cg(&c, "memory.high"), (50000000 / page * page).to_string());
    assert_eq!(cg(&c, "pids.max"), "42");
    assert_eq!(cg(&c, "cpu.weight"), "77");
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn an_unknown_unified_key_fails_create_and_leaves_no_cgroup() {
    if skip_unless_v2("an_unknown_unified_key_fails_create_and_leaves_no_cgroup") {
        return;
    }
    let mut c = Container::new();
    c.set(
        "/linux/resources/unified",
        json!({ "memory.nosuchfile": "1" }),
    )
    .sh("true");
    let out = c.create();
    assert_refused(&c, &out, "memory.nosuchfile");
}

#[test]
fn update_changes_the_v2_files_of_a_running_container() {
    if skip_unless_v2("update_changes_the_v2_files_of_a_running_container") {
        return;
    }
    let mut c = Container::new();
    c.set("/linux/resources/memory", json!({ "limit": 256u64 << 20 }))
        .set("/linux/resources/pids", json!({ "limit": 100 }))
        .sh("sleep 1000");
    c.run_detached().assert_ok();
    assert_eq!(cg(&c, "pids.max"), "100");
    c.rt(&[
        "update",
        "--memory",
        "64m",
        "--pids-limit",
        "20",
        "--cpu-quota",
        "50000",
        "--cpu-period",
        "100000",
        "--cpuset-cpus",
        "0",
        &c.id,
    ])
    .assert_ok();
    assert_eq!(cg(&c, "memory.max"), (64u64 << 20).to_string());
    assert_eq!(cg(&c, "pids.max"), "20");
    assert_eq!(cg(&c, "cpu.max"), "50000 100000");
    assert_eq!(cg(&c, "cpuset.cpus"), "0");
    // -1 lifts a limit.
    c.rt(&["update", "--pids-limit", "-1", "--cpu-quota", "-1", &c.id])
        .assert_ok();
    assert_eq!(cg(&c, "pids.max"), "max");
    assert_eq!(cg(&c, "cpu.max"), "max 100000");
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn events_stats_read_the_v2_files() {
    if skip_unless_v2("events_stats_read_the_v2_files") {
        return;
    }
    // Under emulation: only that it grows.
    assert_stats_move(Duration::from_secs(2), 0);
}

/// A container that may mknod and writes to a node for /dev/kmsg (1:11), which the default
/// device rules do not allow; prints what happened.
fn kmsg_writer(c: &mut Container, rules: Value) {
    let mut caps = vec!["CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_KILL"];
    caps.sort_unstable();
    c.capabilities(&caps)
        .set("/linux/resources/devices", rules)
        .sh("exec 2>&1; mknod /dev/kmsg-test c 1 11 || exit 3; \
             if echo lxcri-test-device-check > /dev/kmsg-test; then echo opened; \
             else echo refused; fi");
}

#[test]
fn the_device_filter_refuses_a_device_the_rules_do_not_allow() {
    if skip_unless_v2("the_device_filter_refuses_a_device_the_rules_do_not_allow") {
        return;
    }
    let mut c = Container::new();
    kmsg_writer(&mut c, json!([{ "allow": false, "access": "rwm" }]));
    let out = c.run();
    assert!(
        out.stdout.contains("refused") && out.stdout.contains("Operation not permitted"),
        "a device outside the rules was opened (v2 needs an eBPF device program):\n{out}"
    );
    c.assert_no_debris(None);
}

#[test]
fn the_device_filter_lets_an_allowed_device_through() {
    // The control: the same node with a rule allowing it.
    if skip_unless_v2("the_device_filter_lets_an_allowed_device_through") {
        return;
    }
    let mut c = Container::new();
    kmsg_writer(
        &mut c,
        json!([
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 11, "access": "w" }
        ]),
    );
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "opened\n", "{out}");
    c.assert_no_debris(None);
}

#[test]
fn the_cgroup_namespace_shows_the_containers_cgroup_as_root() {
    if skip_unless_v2("the_cgroup_namespace_shows_the_containers_cgroup_as_root") {
        return;
    }
    let mut c = Container::new();
    c.namespace("cgroup", None)
        .set("/linux/resources/pids", json!({ "limit": 77 }))
        .sh("cat /proc/self/cgroup; \
             grep ' /sys/fs/cgroup ' /proc/self/mountinfo; \
             echo pids.max=$(cat /sys/fs/cgroup/pids.max); \
             echo procs=$(cat /sys/fs/cgroup/cgroup.procs | wc -l)");
    let out = c.run();
    out.assert_ok();
    let lines = out.lines();
    assert_eq!(lines[0], "0::/", "{out}");
    let mi = parse_mountinfo(lines[1]);
    assert_eq!(mi.len(), 1, "{out}");
    assert_eq!(mi[0].fstype, "cgroup2", "{out}");
    assert_eq!(mi[0].root, "/", "{out}");
    assert!(mi[0].has_option("ro"), "the spec asks for ro: {out}");
    // The mount's root is the container's own cgroup: its limit, and only its processes
    // (the shell, cat and wc while the count runs).
    assert_eq!(lines[2], "pids.max=77", "{out}");
    let procs: usize = lines[3]
        .strip_prefix("procs=")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!((1..=4).contains(&procs), "{out}");
    c.assert_no_debris(None);
}

#[test]
fn without_a_cgroup_namespace_the_whole_hierarchy_is_mounted() {
    // As runc does: a fresh cgroup2 mount, whose root is that of the runtime's cgroup namespace.
    if skip_unless_v2("without_a_cgroup_namespace_the_whole_hierarchy_is_mounted") {
        return;
    }
    let mut c = Container::new();
    let id = c.id.clone();
    c.remove_namespace("cgroup")
        .set("/linux/resources/pids", json!({ "limit": 66 }))
        .sh(&format!(
            "grep ' /sys/fs/cgroup ' /proc/self/mountinfo; \
             echo pids.max=$(cat /sys/fs/cgroup/{CGROUP_PARENT}/{id}/pids.max)"
        ));
    let out = c.run();
    out.assert_ok();
    let lines = out.lines();
    let mi = parse_mountinfo(lines[0]);
    assert_eq!(mi.len(), 1, "{out}");
    assert_eq!(mi[0].fstype, "cgroup2", "{out}");
    assert_eq!(lines[1], "pids.max=66", "{out}");
    c.assert_no_debris(None);
}

#[test]
fn events_interval_reports_an_oom_kill_from_memory_events() {
    if skip_unless_v2("events_interval_reports_an_oom_kill_from_memory_events") {
        return;
    }
    let mut c = Container::new();
    let limit = 16u64 << 20;
    c.set(
        "/linux/resources/memory",
        json!({ "limit": limit, "swap": limit }),
    )
    .sh(&format!("sleep 2; {}; sleep 2", allocate(64)));
    c.run_detached().assert_ok();
    let (out, records) = events_until_stopped(&c, "500ms", Duration::from_secs(90));
    assert!(
        records.iter().any(|r| r["type"] == "stats"),
        "no stats record:\n{out}"
    );
    assert_oom_records(&c, &records, &out);
    c.delete().assert_ok();
    c.assert_no_debris(None);
}
