//! `--systemd-cgroup`: where systemd does not run, the flag is refused with a clear error and
//! leaves nothing behind (this machine); where it runs (on pure cgroup v2: in the guest,
//! `scripts/test-guest systemd_cgroup`, under systemd as pid 1 of a container), the container's
//! cgroup is a transient scope that systemd creates from `linux.cgroupsPath`
//! (`slice:prefix:name`), with the limits in its files, pause/resume and update through it, and
//! delete removing the unit. Later commands are given no flag: the state says that systemd
//! manages the cgroup.
//!
//! Each test says `skipped: ...` straight to the terminal and returns where its precondition is
//! absent (systemd running or not).

mod common;

use common::*;
use serde_json::json;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn skipped(test: &str, why: &str) {
    // Not eprintln!: libtest captures that for passing tests, and this must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: {why} ({test})");
}

/// True (after saying so) unless systemd runs on a pure v2 host. Where the harness promises
/// systemd (LXCRI_TEST_REQUIRE_SYSTEMD, set by scripts/test-guest), its absence fails the test.
fn skip_unless_systemd(test: &str) -> bool {
    if systemd_runs() && unified_host() {
        return false;
    }
    let why = "systemd is not running on cgroup v2 here (scripts/test-guest systemd_cgroup runs these under systemd)";
    assert!(
        std::env::var_os("LXCRI_TEST_REQUIRE_SYSTEMD").is_none(),
        "{why}, but LXCRI_TEST_REQUIRE_SYSTEMD is set"
    );
    skipped(test, why);
    true
}

fn systemctl(args: &[&str]) -> Out {
    host_cmd("/usr/bin/systemctl", args)
}

/// `systemctl show -p PROP --value UNIT`.
fn unit_prop(unit: &str, prop: &str) -> String {
    systemctl(&["show", "-p", prop, "--value", unit])
        .stdout
        .trim()
        .to_string()
}

/// Stops the unit when the test ends, however it ends (delete is what is tested; this only
/// keeps a failed test from leaving a scope behind). SIGKILL first: a container's init ignores
/// the SIGTERM of a plain stop, which would wait for systemd's stop timeout. Never panics (it
/// runs while a failed test unwinds).
struct UnitGuard(String);

impl Drop for UnitGuard {
    fn drop(&mut self) {
        for args in [
            &["kill", "--signal=KILL", self.0.as_str()][..],
            &["stop", self.0.as_str()],
        ] {
            let _ = std::process::Command::new("/usr/bin/systemctl")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn scope_dir(slice_dir: &str, unit: &str) -> PathBuf {
    Path::new(CGROUP_MOUNT).join(slice_dir).join(unit)
}

/// Waits for the killed container to stop, deletes it, and checks that its scope's directory goes.
#[track_caller]
fn delete_stopped(c: &Container, dir: &Path) {
    c.wait_status("stopped", CMD_TIMEOUT);
    c.delete().assert_ok();
    assert!(
        wait_until(Duration::from_secs(10), || !dir.exists()),
        "{} is still there after delete",
        dir.display()
    );
}

#[track_caller]
fn read(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn without_systemd_the_flag_is_refused_and_leaves_nothing() {
    if !is_ours() {
        return;
    }
    if systemd_runs() {
        skipped(
            "without_systemd_the_flag_is_refused_and_leaves_nothing",
            "systemd runs here",
        );
        return;
    }
    let mut c = Container::new();
    c.set("/linux/cgroupsPath", json!("system.slice:lxcri-test:x"));
    let out = c.create_with(&["--systemd-cgroup"]);
    out.assert_fail();
    check_our_message(&out, "refusal", |e| {
        e.contains("--systemd-cgroup") && e.contains("systemd is not running")
    });
    assert!(
        c.root_leftovers().is_empty(),
        "state left: {:?}",
        c.root_leftovers()
    );
    assert!(cgroup_dirs(&c.id).is_empty(), "{:?}", cgroup_dirs(&c.id));
    // Same for run.
    let b = c.bundle.to_string_lossy().into_owned();
    let out = c.rt(&["--systemd-cgroup", "run", "--bundle", &b, &c.id]);
    out.assert_fail();
    check_our_message(&out, "refusal", |e| e.contains("systemd is not running"));
    assert!(c.root_leftovers().is_empty());
}

#[test]
fn the_scope_gets_the_container_its_limits_pause_update_and_goes_on_delete() {
    if skip_unless_systemd(
        "the_scope_gets_the_container_its_limits_pause_update_and_goes_on_delete",
    ) {
        return;
    }
    let mut c = Container::new();
    let unit = format!("lxcri-test-{}.scope", c.n);
    let _guard = UnitGuard(unit.clone());
    c.set(
        "/linux/cgroupsPath",
        json!(format!("system.slice:lxcri-test:{}", c.n)),
    )
    .set(
        "/linux/resources",
        json!({ "memory": { "limit": 64 << 20 }, "pids": { "limit": 50 } }),
    )
    .sh("cat /proc/self/cgroup; sleep 600");
    c.create_with(&["--systemd-cgroup"]).assert_ok();
    let dir = scope_dir("system.slice", &unit);

    assert_eq!(unit_prop(&unit, "ActiveState"), "active");
    assert_eq!(
        unit_prop(&unit, "ControlGroup"),
        format!("/system.slice/{unit}")
    );
    let pid = c.pid();
    let procs = read(&dir.join("cgroup.procs"));
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "init {pid} not in {}: {procs}",
        dir.display()
    );
    assert_eq!(read(&dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(read(&dir.join("pids.max")), "50");
    // systemd knows the limits (they survive a daemon-reload), not just the files.
    assert_eq!(unit_prop(&unit, "MemoryMax"), (64u64 << 20).to_string());
    assert_eq!(unit_prop(&unit, "TasksMax"), "50");
    assert_eq!(
        c.state_json()["systemdUnit"].as_str(),
        None,
        "runc's state output has no such key"
    );

    c.start().assert_ok();
    // The container sees itself in the scope (no cgroup namespace in the default config).
    c.wait_container_stdout(&format!("0::/system.slice/{unit}"), CMD_TIMEOUT);

    // No flag from here on: the state says systemd.
    c.rt(&["pause", &c.id]).assert_ok();
    assert_eq!(read(&dir.join("cgroup.freeze")), "1");
    assert_eq!(c.status(), "paused");
    c.rt(&["resume", &c.id]).assert_ok();
    assert_eq!(read(&dir.join("cgroup.freeze")), "0");
    assert_eq!(c.status(), "running");

    c.rt(&["update", "--pids-limit", "60", &c.id]).assert_ok();
    assert_eq!(read(&dir.join("pids.max")), "60");
    assert_eq!(unit_prop(&unit, "TasksMax"), "60");

    let ps = c.rt(&["ps", "--format", "json", &c.id]);
    ps.assert_ok();
    assert!(ps.stdout.contains(&pid.to_string()), "ps: {}", ps.stdout);

    c.kill(Some("KILL")).assert_ok();
    delete_stopped(&c, &dir);
    let load = unit_prop(&unit, "LoadState");
    let active = unit_prop(&unit, "ActiveState");
    assert!(
        load == "not-found" || active == "inactive",
        "{unit} after delete: LoadState={load} ActiveState={active}"
    );
    assert!(c.root_leftovers().is_empty());
}

#[test]
fn without_a_cgroups_path_the_scope_is_system_slice_proxmox_lxcri_id() {
    if skip_unless_systemd("without_a_cgroups_path_the_scope_is_system_slice_proxmox_lxcri_id") {
        return;
    }
    let mut c = Container::new();
    let unit = format!("proxmox-lxcri-{}.scope", c.id);
    let _guard = UnitGuard(unit.clone());
    c.remove("/linux/cgroupsPath").sh("sleep 600");
    c.create_with(&["--systemd-cgroup"]).assert_ok();
    let dir = scope_dir("system.slice", &unit);
    let procs = read(&dir.join("cgroup.procs"));
    assert!(procs.contains(&c.pid().to_string()), "{procs}");
    // delete --force of a created container, without the flag.
    c.delete_force().assert_ok();
    assert!(
        wait_until(Duration::from_secs(10), || !dir.exists()),
        "{} is still there after delete --force",
        dir.display()
    );
}

#[test]
fn a_cgroups_path_not_of_the_slice_prefix_name_form_is_refused_naming_the_field() {
    if skip_unless_systemd(
        "a_cgroups_path_not_of_the_slice_prefix_name_form_is_refused_naming_the_field",
    ) {
        return;
    }
    for bad in [
        "/lxcri-test/abs",
        "only:two",
        "noslice:p:n",
        "system.slice::n",
    ] {
        let mut c = Container::new();
        c.set("/linux/cgroupsPath", json!(bad));
        let out = c.create_with(&["--systemd-cgroup"]);
        out.assert_fail();
        check_our_message(&out, bad, |e| e.contains("linux.cgroupsPath"));
        assert!(
            c.root_leftovers().is_empty(),
            "{bad}: state left: {:?}",
            c.root_leftovers()
        );
    }
}

/// A slice name with dashes is a path of nested slices (systemd's rule, which containerd's
/// `kubepods-besteffort-pod<uid>.slice` paths rely on); `exec` joins the scope, `kill --all`
/// reaches every process in it, `events --stats` reads it, a hugepage limit (no systemd
/// property) is in its files, and `features` claims systemd.
#[test]
fn a_nested_slice_holds_the_scope_and_exec_kill_all_and_stats_use_it() {
    if skip_unless_systemd("a_nested_slice_holds_the_scope_and_exec_kill_all_and_stats_use_it") {
        return;
    }
    let mut c = Container::new();
    // A dash in a slice name makes one more level: none in the test's own part.
    let n = c.n.replace('-', "_");
    let slice = format!("lxcri_test{n}.slice");
    let nested = format!("lxcri_test{n}-inner.slice");
    let unit = format!("lxcri-{n}.scope");
    // Dropped in reverse: the scope first, then the slices systemd made for it.
    let _slice = UnitGuard(slice.clone());
    let _nested = UnitGuard(nested.clone());
    let _unit = UnitGuard(unit.clone());
    c.set("/linux/cgroupsPath", json!(format!("{nested}:lxcri:{n}")))
        // systemd has no property for it: written beside systemd, in a controller it does not
        // enable itself.
        .set(
            "/linux/resources",
            json!({ "hugepageLimits": [{ "pageSize": "2MB", "limit": 4 << 20 }] }),
        )
        .sh("sleep 600 & sleep 600 & wait");
    c.create_with(&["--systemd-cgroup"]).assert_ok();
    c.start().assert_ok();
    let dir = Path::new(CGROUP_MOUNT)
        .join(&slice)
        .join(&nested)
        .join(&unit);
    assert_eq!(unit_prop(&unit, "Slice"), nested);
    assert_eq!(
        unit_prop(&unit, "ControlGroup"),
        format!("/{slice}/{nested}/{unit}")
    );

    assert_eq!(read(&dir.join("hugetlb.2MB.max")), (4u64 << 20).to_string());

    let exec = c.exec_in(&[], &["cat", "/proc/self/cgroup"]);
    exec.assert_ok();
    assert_eq!(
        exec.stdout.trim(),
        format!("0::/{slice}/{nested}/{unit}"),
        "the exec'd process is not in the scope"
    );

    let stats = c.rt(&["events", "--stats", &c.id]);
    stats.assert_ok();
    let record: serde_json::Value = serde_json::from_str(stats.stdout.trim())
        .unwrap_or_else(|e| panic!("events --stats: {e}: {}", stats.stdout));
    let current = record["data"]["pids"]["current"].as_u64().unwrap_or(0);
    assert!(
        current >= 3,
        "pids.current {current} < 3 (sh and two sleeps): {record}"
    );

    let features = c.rt(&["features"]);
    features.assert_ok();
    let f: serde_json::Value = serde_json::from_str(&features.stdout).expect("features JSON");
    assert_eq!(f["linux"]["cgroup"]["systemd"], true, "{f}");

    let procs = read(&dir.join("cgroup.procs"));
    assert!(procs.lines().count() >= 3, "{procs}");
    c.kill_all("KILL").assert_ok();
    assert!(
        wait_until(CMD_TIMEOUT, || fs::read_to_string(dir.join("cgroup.procs"))
            .map(|p| p.trim().is_empty())
            .unwrap_or(true)),
        "processes left in {}: {}",
        dir.display(),
        fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default()
    );
    delete_stopped(&c, &dir);
}
