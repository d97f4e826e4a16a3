//! `exec`: a new process in a running container — the namespaces and cgroup
//! it joins, the confinement it gets, its exit code, and runc's flags.

mod common;

use common::*;
use serde_json::json;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

const NS: &[&str] = &["mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time"];

fn ns_link(pid: i64, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{kind}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// `exec -d --pid-file F ID CMD...`; returns the host pid from the pid file.
#[track_caller]
fn exec_detached(c: &Container, flags: &[&str], cmd: &[&str]) -> i64 {
    let pid_file = c.host.join(format!("exec-{}.pid", unique_suffix()));
    let pf = pid_file.to_string_lossy().into_owned();
    let mut all = vec!["--detach", "--pid-file", &pf];
    all.extend_from_slice(flags);
    let started = Instant::now();
    let out = c.exec_in(&all, cmd);
    out.assert_ok();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exec --detach did not return promptly:\n{out}"
    );
    let text = fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("pid file {}: {e}\n{out}", pid_file.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file holds {text:?}"))
}

/// Hex capability sets of `/proc/self/status` printed by the exec'd process.
fn caps_of(status: &str, field: &str) -> u64 {
    let v = status_field(status, field).unwrap_or_else(|| panic!("no {field} in:\n{status}"));
    u64::from_str_radix(v, 16).unwrap()
}

// ---------------------------------------------------------------------------
// Namespaces, pid, cgroup
// ---------------------------------------------------------------------------

/// The exec'd process is in every namespace of the init — compared from the
/// host on `/proc/<pid>/ns/*` — and those are not the host's.
#[test]
fn exec_joins_every_namespace_of_the_container() {
    let mut c = Container::new();
    c.namespace("cgroup", None);
    let init = c.start_idle();
    let pid = exec_detached(&c, &[], &["sleep", "1000"]);
    for kind in NS {
        assert_eq!(
            ns_link(pid, kind),
            ns_link(init, kind),
            "exec'd process {pid} is not in the container's {kind} namespace"
        );
    }
    for kind in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        assert_ne!(
            ns_link(pid, kind),
            ns_link(std::process::id().into(), kind),
            "the container's {kind} namespace is the host's: the test proves nothing"
        );
    }
}

/// In a container with its own user namespace, exec joins it: same
/// namespace, same id maps, root inside is the mapped host uid.
#[test]
fn exec_joins_the_user_namespace() {
    let mut c = Container::new();
    c.namespace("user", None)
        .uid_mappings(&[(0, 100000, 65536)])
        .gid_mappings(&[(0, 100000, 65536)]);
    c.chown_rootfs(100000, 100000);
    let init = c.start_idle();
    let pid = exec_detached(&c, &[], &["sleep", "1000"]);
    for kind in ["user", "mnt", "pid", "net"] {
        assert_eq!(ns_link(pid, kind), ns_link(init, kind), "{kind} namespace");
    }
    assert_ne!(
        ns_link(pid, "user"),
        ns_link(std::process::id().into(), "user")
    );
    let out = c.exec_in(&[], &["sh", "-c", "cat /proc/self/uid_map; id -u"]);
    out.assert_ok();
    let lines = out.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"],
        "{out}"
    );
    assert_eq!(lines[1], "0", "{out}");
    assert_eq!(
        proc_status_field(pid, "Uid")
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["100000"; 4]
    );
}

/// In a container with its own time namespace, exec joins it and sees the
/// container's clock offsets.
#[test]
fn exec_joins_the_time_namespace() {
    if runtime_is_runc_1_1() {
        eprintln!("skipped: runc 1.1 has no time namespace support");
        return;
    }
    let mut c = Container::new();
    c.namespace("time", None).set(
        "/linux/timeOffsets",
        json!({ "monotonic": { "secs": 300000 }, "boottime": { "secs": 100000 } }),
    );
    let init = c.start_idle();
    let pid = exec_detached(&c, &[], &["sleep", "1000"]);
    assert_eq!(ns_link(pid, "time"), ns_link(init, "time"));
    assert_ne!(
        ns_link(pid, "time"),
        ns_link(std::process::id().into(), "time")
    );
    let out = c.exec_in(
        &[],
        &[
            "sh",
            "-c",
            "cat /proc/uptime; cat /proc/self/timens_offsets",
        ],
    );
    out.assert_ok();
    let lines = out.lines();
    let uptime: f64 = lines[0]
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad /proc/uptime:\n{out}"));
    // /proc/uptime follows CLOCK_BOOTTIME.
    assert!(
        uptime >= 100000.0,
        "boottime offset not seen by exec:\n{out}"
    );
    let offsets: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(offsets.contains(&vec!["monotonic", "300000", "0"]), "{out}");
    assert!(offsets.contains(&vec!["boottime", "100000", "0"]), "{out}");
}

/// The exec'd process lives in the container's pid namespace: its `$$` is
/// not its host pid, and it sees the container's init as pid 1.
#[test]
fn exec_runs_in_the_container_pid_namespace() {
    let mut c = Container::new();
    c.start_idle();
    let out = c.exec_in(
        &[],
        &["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep '^[0-9]*$' | sort -n"],
    );
    out.assert_ok();
    let lines = out.lines();
    let inner: i64 = lines[0].parse().unwrap();
    assert_ne!(inner, 1, "{out}");
    assert_eq!(
        lines[1].trim(),
        "sleep 1000000",
        "pid 1 is not the init:\n{out}"
    );
    let pids: Vec<i64> = lines[2..].iter().map(|l| l.parse().unwrap()).collect();
    assert!(pids.contains(&1) && pids.contains(&inner), "{out}");
    // Only the container's processes: the init, the shell, ls and grep/sort.
    assert!(pids.len() <= 6, "host processes visible: {pids:?}");

    let pid = exec_detached(&c, &[], &["sleep", "1000"]);
    let nspid = proc_status_field(pid, "NSpid").unwrap();
    let nspid: Vec<i64> = nspid
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(nspid.len(), 2, "NSpid {nspid:?}");
    assert_eq!(nspid[0], pid);
    assert!(nspid[1] > 1 && nspid[1] != pid, "NSpid {nspid:?}");
}

/// The exec'd process is in the container's cgroup in every hierarchy, as
/// the init is.
#[test]
fn exec_joins_the_container_cgroup() {
    let mut c = Container::new();
    let init = c.start_idle();
    let pid = exec_detached(&c, &[], &["sleep", "1000"]);
    assert!(
        c.cgroup_procs("pids").contains(&pid),
        "{pid} not in the pids cgroup: {:?}",
        c.cgroup_procs("pids")
    );
    let theirs = fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let ours = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(ours, theirs);
    assert!(
        ours.contains(&format!("/{CGROUP_PARENT}/{}", c.id)),
        "{ours}"
    );

    // And a foreground one, as it sees itself.
    let out = c.exec_in(&[], &["cat", "/proc/self/cgroup"]);
    out.assert_ok();
    assert_eq!(out.stdout, theirs);
}

// ---------------------------------------------------------------------------
// Exit codes
// ---------------------------------------------------------------------------

#[test]
fn exec_returns_the_exit_code_of_the_process() {
    let mut c = Container::new();
    c.start_idle();
    let out = c.exec_in(&[], &["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.code, 7, "{out}");
    assert_eq!(out.stdout, "out\n", "{out}");
    assert!(out.stderr.contains("err\n"), "{out}");
    assert_eq!(c.exec_in(&[], &["true"]).code, 0);
}

#[test]
fn exec_of_a_process_killed_by_a_signal_returns_128_plus_the_signal() {
    let mut c = Container::new();
    c.start_idle();
    let out = c.exec_in(&[], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.code, 128 + 15, "{out}");
    let out = c.exec_in(&[], &["sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.code, 128 + 9, "{out}");
}

/// A signal sent to the foreground `exec` goes on to the process.
#[test]
fn signals_to_a_foreground_exec_reach_the_process() {
    let mut c = Container::new();
    c.start_idle();
    let mut r = c.spawn_exec(
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.05; done",
        ],
    );
    r.wait_for_stdout("ready", WAIT);
    // Only the runtime itself: `r` runs it directly.
    let runtime_pid = r.pid();
    host_cmd("/bin/kill", &["-USR1", &runtime_pid.to_string()]).assert_ok();
    let out = r.wait(WAIT);
    assert_eq!(out.code, 3, "{out}");
    assert_eq!(out.stdout, "ready\ngot-usr1\n", "{out}");
}

// ---------------------------------------------------------------------------
// Process settings from the command line
// ---------------------------------------------------------------------------

#[test]
fn exec_inherits_the_container_env_and_adds_env_flags() {
    let mut c = Container::new();
    c.add_env("FROM_CONFIG=cfg");
    c.start_idle();
    let out = c.exec_in(
        &["-e", "EXTRA=one two", "-e", "FROM_CONFIG=overridden"],
        &[
            "sh",
            "-c",
            "echo \"$EXTRA\"; echo $FROM_CONFIG; echo $TERM; env | grep -c '^FROM_CONFIG='",
        ],
    );
    out.assert_ok();
    assert_eq!(
        out.lines(),
        ["one two", "overridden", "xterm", "1"],
        "{out}"
    );
}

#[test]
fn exec_cwd_sets_the_working_directory() {
    let mut c = Container::new();
    c.cwd("/etc");
    c.start_idle();
    let out = c.exec_in(&[], &["pwd"]);
    out.assert_ok();
    assert_eq!(out.stdout, "/etc\n", "the container's cwd is the default");
    let out = c.exec_in(&["--cwd", "/tmp"], &["pwd"]);
    out.assert_ok();
    assert_eq!(out.stdout, "/tmp\n", "{out}");
}

#[test]
fn exec_user_and_additional_gids() {
    let mut c = Container::new();
    c.start_idle();
    let out = c.exec_in(
        &[
            "-u",
            "1000:1001",
            "--additional-gids",
            "5",
            "--additional-gids",
            "6",
        ],
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; grep -E '^(Uid|Gid|Groups):' /proc/self/status",
        ],
    );
    out.assert_ok();
    let l = out.lines();
    assert_eq!(&l[..3], ["1000", "1001", "1001 5 6"], "{out}");
    assert_eq!(
        status_field(&out.stdout, "Uid"),
        Some("1000\t1000\t1000\t1000")
    );
    assert_eq!(status_field(&out.stdout, "Groups"), Some("5 6"));

    // uid alone keeps the container's gid.
    let out = c.exec_in(&["--user", "1000"], &["sh", "-c", "id -u; id -g"]);
    out.assert_ok();
    assert_eq!(out.lines(), ["1000", "0"], "{out}");
}

#[test]
fn exec_user_that_is_not_numeric_is_rejected() {
    let mut c = Container::new();
    c.start_idle();
    let out = c.exec_in(&["-u", "nobody"], &["true"]);
    out.assert_fail();
    check_our_message(&out, "name --user", |e| e.contains("--user"));
}

/// Without --cap the process has the container's capabilities; each --cap
/// adds one to the bounding, effective and permitted sets — never to the
/// inheritable set (CVE-2022-29162), and so, as in runc, to the ambient set
/// only when the spec has an inheritable set.
#[test]
fn exec_cap_adds_a_capability_to_bounding_effective_and_permitted() {
    let mut c = Container::new();
    c.start_idle();
    let base = cap_mask(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let admin = cap_mask(&["CAP_SYS_ADMIN"]);

    let out = c.exec_in(&[], &["cat", "/proc/self/status"]);
    out.assert_ok();
    assert_eq!(caps_of(&out.stdout, "CapEff"), base, "{out}");
    assert_eq!(caps_of(&out.stdout, "CapBnd"), base, "{out}");

    let out = c.exec_in(&["--cap", "CAP_SYS_ADMIN"], &["cat", "/proc/self/status"]);
    out.assert_ok();
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(caps_of(&out.stdout, set), base | admin, "{set}:\n{out}");
    }
    assert_eq!(caps_of(&out.stdout, "CapInh"), 0, "{out}");
    assert_eq!(caps_of(&out.stdout, "CapAmb"), 0, "{out}");
    // And the capability works: only CAP_SYS_ADMIN may set the hostname (of
    // the container's own uts namespace).
    c.exec_in(
        &["--cap", "CAP_SYS_ADMIN"],
        &["hostname", "changed-by-exec"],
    )
    .assert_ok();
    c.exec_in(&[], &["hostname", "denied"]).assert_fail();
    assert_eq!(c.exec_in(&[], &["hostname"]).stdout, "changed-by-exec\n");
}

/// With an inheritable set in the spec, --cap also raises the capability in
/// the ambient set, so that a non-root user keeps it across execve; the
/// inheritable set itself stays the spec's.
#[test]
fn exec_cap_reaches_the_ambient_set_when_the_spec_has_inheritable_caps() {
    let mut c = Container::new();
    let caps = ["CAP_KILL"];
    c.set(
        "/process/capabilities",
        json!({ "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": caps, "ambient": caps }),
    );
    c.start_idle();
    let out = c.exec_in(
        &["-u", "1000:1000", "--cap", "CAP_SYS_ADMIN"],
        &["cat", "/proc/self/status"],
    );
    out.assert_ok();
    let kill = cap_mask(&["CAP_KILL"]);
    let admin = cap_mask(&["CAP_SYS_ADMIN"]);
    assert_eq!(caps_of(&out.stdout, "CapInh"), kill, "{out}");
    // Ambient needs inheritable: SYS_ADMIN could not be raised there, and a
    // non-root process keeps only its ambient capabilities across execve.
    assert_eq!(caps_of(&out.stdout, "CapAmb"), kill, "{out}");
    assert_eq!(caps_of(&out.stdout, "CapEff"), kill, "{out}");
    assert_eq!(caps_of(&out.stdout, "CapBnd"), kill | admin, "{out}");
}

/// runc 1.1 only warns about an unknown capability; we refuse it.
#[test]
fn exec_unknown_capability_is_rejected() {
    if skip_unless_ours() {
        return;
    }
    let mut c = Container::new();
    c.start_idle();
    let out = c.exec_in(&["--cap", "CAP_NOT_A_THING"], &["true"]);
    out.assert_fail();
    check_our_message(&out, "name the capability", |e| {
        e.contains("CAP_NOT_A_THING")
    });
}

#[test]
fn exec_no_new_privs() {
    let mut c = Container::new();
    c.no_new_privileges(false);
    c.start_idle();
    let out = c.exec_in(&[], &["grep", "NoNewPrivs", "/proc/self/status"]);
    out.assert_ok();
    assert_eq!(out.stdout.split_whitespace().nth(1), Some("0"), "{out}");
    let out = c.exec_in(
        &["--no-new-privs"],
        &["grep", "NoNewPrivs", "/proc/self/status"],
    );
    out.assert_ok();
    assert_eq!(out.stdout.split_whitespace().nth(1), Some("1"), "{out}");
}

/// The container's own confinement applies to exec'd processes too: its
/// noNewPrivileges, rlimits and read-only root.
#[test]
fn exec_gets_the_container_confinement() {
    let mut c = Container::new();
    c.rlimit("RLIMIT_NOFILE", 321, 654);
    c.start_idle();
    let out = c.exec_in(
        &[],
        &["sh", "-c", "grep NoNewPrivs /proc/self/status; grep 'Max open files' /proc/self/limits; touch /x 2>&1 || echo ro"],
    );
    out.assert_ok();
    let l = out.lines();
    assert_eq!(l[0].split_whitespace().nth(1), Some("1"), "{out}");
    assert_eq!(
        l[1].split_whitespace().collect::<Vec<_>>()[3..5],
        ["321", "654"],
        "{out}"
    );
    assert_eq!(l.last(), Some(&"ro"), "{out}");
}

// ---------------------------------------------------------------------------
// --process FILE
// ---------------------------------------------------------------------------

#[test]
fn exec_process_file_gives_the_whole_process() {
    let mut c = Container::new();
    c.start_idle();
    let file = c.host.join("process.json");
    fs::write(
        &file,
        serde_json::to_string(&json!({
            "terminal": false,
            "user": { "uid": 1000, "gid": 1000, "additionalGids": [7] },
            "args": ["sh", "-c", "id -u; id -G; pwd; echo $FROM_FILE; echo ${TERM:-no-term}; grep -E 'CapEff|NoNewPrivs' /proc/self/status; exit 4"],
            "env": ["FROM_FILE=yes", "PATH=/bin"],
            "cwd": "/tmp",
            "capabilities": {
                "bounding": ["CAP_KILL", "CAP_SYS_ADMIN"],
                "effective": ["CAP_KILL", "CAP_SYS_ADMIN"],
                "permitted": ["CAP_KILL", "CAP_SYS_ADMIN"],
                "ambient": ["CAP_KILL", "CAP_SYS_ADMIN"],
                "inheritable": ["CAP_KILL", "CAP_SYS_ADMIN"]
            },
            "noNewPrivileges": true
        }))
        .unwrap(),
    )
    .unwrap();
    let f = file.to_string_lossy().into_owned();
    let out = c.exec_in(&["--process", &f], &[]);
    assert_eq!(out.code, 4, "{out}");
    let l = out.lines();
    assert_eq!(
        &l[..5],
        ["1000", "1000 7", "/tmp", "yes", "no-term"],
        "{out}"
    );
    assert_eq!(
        caps_of(&out.stdout, "CapEff"),
        cap_mask(&["CAP_KILL", "CAP_SYS_ADMIN"]),
        "{out}"
    );
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), Some("1"), "{out}");
}

/// A malformed --process file fails with an error naming the file, and runs
/// nothing in the container.
#[test]
fn exec_malformed_process_file_is_a_clear_error() {
    let mut c = Container::new();
    let init = c.start_idle();
    let file = c.host.join("broken-process.json");
    fs::write(&file, "{\"args\": [\"sh\", ").unwrap();
    let f = file.to_string_lossy().into_owned();
    let out = c.exec_in(&["-p", &f], &[]);
    out.assert_fail();
    check_our_message(&out, "name the file", |e| e.contains(&f));
    assert_eq!(c.cgroup_procs("pids"), [init], "something was started");

    let missing = c.host.join("no-such-process.json");
    let m = missing.to_string_lossy().into_owned();
    let out = c.exec_in(&["--process", &m], &[]);
    out.assert_fail();
    check_our_message(&out, "name the missing file", |e| e.contains(&m));

    // Valid JSON, but not a valid process: a relative cwd.
    fs::write(
        &file,
        r#"{"args":["true"],"cwd":"tmp","user":{"uid":0,"gid":0}}"#,
    )
    .unwrap();
    let out = c.exec_in(&["--process", &f], &[]);
    out.assert_fail();
    check_our_message(&out, "name the file and cwd", |e| {
        e.contains(&f) && e.contains("cwd")
    });
    assert_eq!(c.cgroup_procs("pids"), [init]);
    assert_eq!(c.status(), "running");
}

/// `user` may be left out of a process JSON: runc then runs the process as
/// uid 0 (its Go struct defaults to zero).
#[test]
fn exec_process_file_without_user_runs_as_root() {
    let mut c = Container::new();
    c.start_idle();
    let file = c.host.join("process.json");
    fs::write(&file, r#"{"args":["/bin/id","-u"],"cwd":"/"}"#).unwrap();
    let f = file.to_string_lossy().into_owned();
    let out = c.exec_in(&["--process", &f], &[]);
    out.assert_ok();
    assert_eq!(out.stdout, "0\n", "{out}");
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn exec_of_a_missing_executable_is_a_clear_error() {
    let mut c = Container::new();
    let init = c.start_idle();
    let out = c.exec_in(&[], &["/no/such/binary"]);
    out.assert_fail();
    check_our_message(&out, "name the executable", |e| {
        e.contains("/no/such/binary")
    });
    let out = c.exec_in(&[], &["no-such-command"]);
    out.assert_fail();
    check_our_message(&out, "name the command", |e| e.contains("no-such-command"));
    assert_eq!(c.cgroup_procs("pids"), [init]);
    assert_eq!(c.status(), "running");
}

#[test]
fn exec_into_a_stopped_container_fails_naming_its_state() {
    let mut c = Container::new();
    c.sh("exit 0");
    c.run_detached().assert_ok();
    c.wait_status("stopped", WAIT);
    let out = c.exec_in(&[], &["true"]);
    out.assert_fail();
    check_our_message(&out, "name the state", |e| e.contains("stopped"));
}

#[test]
fn exec_into_a_missing_container_fails() {
    let c = Container::new();
    let out = c.exec_in(&[], &["true"]);
    out.assert_fail();
    check_our_message(&out, "say it does not exist", |e| {
        e.contains(&c.id) && e.contains("does not exist")
    });
}

/// runc allows exec into a created (not yet started) container.
#[test]
fn exec_into_a_created_container_works() {
    let mut c = Container::new();
    c.args(&["sleep", "1000000"]);
    c.create().assert_ok();
    let out = c.exec_in(&[], &["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]);
    out.assert_ok();
    assert_eq!(c.status(), "created");
    c.start().assert_ok();
    c.wait_status("running", WAIT);
    let out = c.exec_in(&[], &["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]);
    out.assert_ok();
    assert_eq!(out.stdout, "sleep 1000000 ", "{out}");
}

/// A paused container (frozen by the freezer cgroup, which is what `pause`
/// does on cgroup v1) refuses exec without --ignore-paused.
#[test]
fn exec_into_a_paused_container_fails_naming_its_state() {
    let mut c = Container::new();
    c.start_idle();
    let freezer = Path::new(CGROUP_MOUNT)
        .join("freezer")
        .join(CGROUP_PARENT)
        .join(&c.id)
        .join("freezer.state");
    fs::write(&freezer, "FROZEN").unwrap();
    assert!(
        wait_until(WAIT, || fs::read_to_string(&freezer).unwrap().trim()
            == "FROZEN"),
        "the freezer never froze"
    );
    c.wait_status("paused", WAIT);
    let out = c.exec_in(&[], &["true"]);
    out.assert_fail();
    check_our_message(&out, "name the state", |e| e.contains("paused"));
    fs::write(&freezer, "THAWED").unwrap();
    c.wait_status("running", WAIT);
    c.exec_in(&[], &["true"]).assert_ok();
}

// ---------------------------------------------------------------------------
// --detach, --pid-file, fds
// ---------------------------------------------------------------------------

#[test]
fn exec_detach_writes_the_pid_file_and_leaves_the_process_running() {
    let mut c = Container::new();
    c.start_idle();
    let pid = exec_detached(
        &c,
        &[],
        &["sh", "-c", "echo started > /dev/shm/mark; exec sleep 1000"],
    );
    assert!(pid_alive(pid), "{pid} is not running");
    assert!(c.cgroup_procs("pids").contains(&pid));
    assert!(
        wait_until(WAIT, || c.exec_in(&[], &["cat", "/dev/shm/mark"]).stdout
            == "started\n"),
        "the detached process never ran"
    );
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, "sleep\u{0}1000\u{0}");
    // It dies with the container.
    c.delete_force().assert_ok();
    assert!(
        wait_until(WAIT, || !pid_alive(pid)),
        "{pid} survived delete --force"
    );
}

/// The exec'd process sees only stdin, stdout and stderr: no fd of the
/// runtime leaks into the container.
#[test]
fn exec_process_sees_no_runtime_fds() {
    let mut c = Container::new();
    c.start_idle();
    let fd3 = c.host.join("fd3");
    fs::write(&fd3, "").unwrap();
    let out = c.exec_in_opts(
        &[],
        &["ls", "/proc/self/fd"],
        &ExecOpts {
            fd3: Some(fd3),
            ..Default::default()
        },
    );
    out.assert_ok();
    // 3 is the directory ls itself is reading.
    assert_eq!(out.lines(), ["0", "1", "2", "3"], "{out}");
}

#[test]
fn exec_preserve_fds_passes_fd_3() {
    let mut c = Container::new();
    c.start_idle();
    let fd3 = c.host.join("fd3");
    fs::write(&fd3, "").unwrap();
    let out = c.exec_in_opts(
        &["--preserve-fds", "1"],
        &["sh", "-c", "echo through-fd3 >&3; ls /proc/self/fd"],
        &ExecOpts {
            fd3: Some(fd3.clone()),
            ..Default::default()
        },
    );
    out.assert_ok();
    assert_eq!(out.lines(), ["0", "1", "2", "3", "4"], "{out}");
    assert_eq!(fs::read_to_string(&fd3).unwrap(), "through-fd3\n");
}

/// A long foreground exec holds no lock: `state`, another exec and `kill`
/// get through meanwhile.
#[test]
fn other_commands_work_while_an_exec_runs() {
    let mut c = Container::new();
    c.start_idle();
    let mut r = c.spawn_exec(&[], &["sh", "-c", "echo ready; sleep 1000"]);
    r.wait_for_stdout("ready", WAIT);
    let t = Instant::now();
    assert_eq!(c.status(), "running");
    c.exec_in(&[], &["true"]).assert_ok();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "commands were blocked"
    );
    // Killing the container ends the foreground exec too.
    c.kill(Some("KILL")).assert_ok();
    let out = r.wait(WAIT);
    assert_eq!(out.code, 137, "{out}");
}

#[test]
fn exec_console_socket_without_tty_is_rejected() {
    let mut c = Container::new();
    c.start_idle();
    let sock = console::ConsoleSocket::new(&c.host);
    let out = c.exec_in(&["--console-socket", &sock.path_str()], &["true"]);
    out.assert_fail();
    check_our_message(&out, "name --console-socket", |e| {
        e.contains("--console-socket")
    });
}

#[test]
fn exec_tty_detached_without_console_socket_is_rejected() {
    let mut c = Container::new();
    let init = c.start_idle();
    let out = c.exec_in(&["-t", "-d"], &["true"]);
    out.assert_fail();
    check_our_message(&out, "name --console-socket", |e| {
        e.contains("--console-socket")
    });
    assert_eq!(c.cgroup_procs("pids"), [init]);
}
