//! podman scenarios: what a podman user does, checked by what the container and the host see.

use crate::common::Out;
use crate::harness::{cgroup_file, ns_of, podman::ulimits, pty, read_trimmed, Podman, Rt, IMAGE};
use std::path::Path;

/// Lines of `text`, trimmed.
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

/// The value of capability set `field` (e.g. "CapEff") in a /proc/<pid>/status text.
#[track_caller]
fn cap_set(status: &str, field: &str) -> u64 {
    let hex = crate::common::status_field(status, field)
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"));
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad {field} {hex:?}"))
}

/// `podman run --rm FLAGS... IMAGE CMD...`, which must succeed.
#[track_caller]
fn run_rm_ok(p: &Podman, flags: &[&str], cmd: &[&str]) -> Out {
    let out = p.run(&[&["--rm"], flags, &[IMAGE], cmd].concat());
    assert!(out.ok(), "podman run --rm failed:\n{out}");
    out
}

/// `podman run -d FLAGS... IMAGE CMD...`, which must succeed; the container's id.
#[track_caller]
fn run_detached(p: &Podman, flags: &[&str], cmd: &[&str]) -> String {
    let out = p.run(&[&["-d"], flags, &[IMAGE], cmd].concat());
    assert!(out.ok(), "podman run -d failed:\n{out}");
    out.stdout.trim().to_string()
}

/// Removes container `id` without waiting for it to stop, then everything else, and checks that
/// nothing is left.
#[track_caller]
fn force_rm_and_check(p: &Podman, id: &str) {
    p.ok(&["rm", "--force", "--time", "0", id]);
    p.remove_all_and_check();
}

/// The cgroup file at `path` holds `want`.
#[track_caller]
fn assert_cgroup(path: &Path, want: &str) {
    assert_eq!(read_trimmed(path), want, "{}", path.display());
}

/// Runs `podman ARGS...` (an interactive `sh`) on a real terminal and types a script that ends with
/// `exit CODE`: the exit code comes back and the shell's stdin was a pty of the container's devpts
/// sized like the outer terminal.
#[track_caller]
fn check_on_terminal(p: &Podman, args: &[&str], code: i32) {
    let out = pty::run(
        "/usr/bin/env",
        &p.conf.argv(args),
        &format!("tty; stty size; echo $((6*7)); exit {code}\n"),
        &p.env.path("io"),
    );
    assert_eq!(out.code, code, "exit code through the terminal:\n{out}");
    let l = pty::lines(&out);
    let size = format!("{} {}", pty::ROWS, pty::COLS);
    for want in ["/dev/pts/0", size.as_str(), "42"] {
        assert!(
            l.iter().any(|x| x == want),
            "no line {want:?} on the terminal:\n{out}"
        );
    }
}

scenario!(run_rm);
/// `podman run --rm`: the process's stdout, stderr and exit code come back; the hostname and the
/// rlimits podman put in the spec are the process's; the container is gone afterwards.
fn run_rm(rt: Rt) {
    let p = Podman::new(rt);
    let out = p.run(&[
        "--rm",
        "--hostname",
        "lxe-host",
        IMAGE,
        "sh",
        "-c",
        "echo hello from $(hostname); echo nofile $(ulimit -Sn):$(ulimit -Hn); \
         echo nproc $(ulimit -Su):$(ulimit -Hu); echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(
        out.code, 3,
        "podman run should return the process's exit code:\n{out}"
    );
    let (nofile, nproc) = ulimits();
    let l = lines(&out.stdout);
    assert!(l.contains(&"hello from lxe-host"), "{out}");
    assert!(l.contains(&format!("nofile {nofile}").as_str()), "{out}");
    assert!(l.contains(&format!("nproc {nproc}").as_str()), "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");
    p.remove_all_and_check();
}

scenario!(detached_exec_stop_kill_rm);
/// `podman run -d`, then `exec` (output, exit code, user, cwd, env, the init's namespaces), `stop`
/// (SIGTERM reaches the process's trap), `start` again, `kill` (SIGKILL), `rm`.
fn detached_exec_stop_kill_rm(rt: Rt) {
    let p = Podman::new(rt);
    let script = "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done";
    let id = run_detached(&p, &[], &["sh", "-c", script]);
    p.wait_logs(&id, "ready");
    assert_eq!(p.inspect(&id, "{{.State.Status}}"), "running");

    let out = p.podman(&["exec", &id, "sh", "-c", "echo in-exec; exit 7"]);
    assert_eq!(
        out.code, 7,
        "podman exec should return the exit code:\n{out}"
    );
    assert_eq!(lines(&out.stdout), ["in-exec"], "{out}");

    let out = p.podman(&[
        "exec",
        "--user",
        "65534:65534",
        "--workdir",
        "/tmp",
        "--env",
        "LXE_VAR=exec-env",
        &id,
        "sh",
        "-c",
        "id -u; id -g; pwd; echo $LXE_VAR",
    ]);
    assert!(out.ok(), "{out}");
    assert_eq!(
        lines(&out.stdout),
        ["65534", "65534", "/tmp", "exec-env"],
        "{out}"
    );

    let out = p.podman(&[
        "exec",
        &id,
        "sh",
        "-c",
        "for n in mnt pid net ipc uts; do \
           [ $(readlink /proc/1/ns/$n) = $(readlink /proc/self/ns/$n) ] && echo same-$n; \
         done; true",
    ]);
    assert!(out.ok(), "{out}");
    assert_eq!(
        lines(&out.stdout),
        ["same-mnt", "same-pid", "same-net", "same-ipc", "same-uts"],
        "the exec'd process must be in all of the init's namespaces:\n{out}"
    );

    p.ok(&["stop", "--time", "20", &id]);
    assert_eq!(p.ok(&["wait", &id]), "42", "SIGTERM should reach the trap");
    assert_eq!(p.inspect(&id, "{{.State.Status}}"), "exited");
    p.wait_logs(&id, "got-term");

    p.ok(&["start", &id]);
    assert_eq!(p.inspect(&id, "{{.State.Status}}"), "running");
    p.ok(&["kill", &id]);
    assert_eq!(p.ok(&["wait", &id]), "137", "SIGKILL: 128 + 9");

    p.ok(&["rm", &id]);
    p.remove_all_and_check();
}

scenario!(run_it);
/// `podman run -it` on a real terminal: the process gets a pty (its stdin is a tty, the outer
/// terminal's size), runs what is typed, and its exit code comes back.
fn run_it(rt: Rt) {
    let p = Podman::new(rt);
    let parent = format!("--cgroup-parent={}", p.env.cgroup_parent());
    let args = ["run", "-it", "--rm", "--network=none", &parent, IMAGE, "sh"];
    check_on_terminal(&p, &args, 3);
    p.remove_all_and_check();
}

scenario!(exec_it);
/// `podman exec -it` into a detached container on a real terminal: a pty of the container's
/// devpts, sized like the outer terminal.
fn exec_it(rt: Rt) {
    let p = Podman::new(rt);
    let id = run_detached(&p, &[], &["sleep", "1000"]);
    check_on_terminal(&p, &["exec", "-it", &id, "sh"], 4);
    force_rm_and_check(&p, &id);
}

scenario!(pause_unpause);
/// `podman pause` freezes the container (its freezer cgroup is FROZEN, its output stops) and
/// `unpause` thaws it.
fn pause_unpause(rt: Rt) {
    let p = Podman::new(rt);
    let script = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done";
    let id = run_detached(&p, &[], &["sh", "-c", script]);
    p.wait_logs(&id, "tick 3");
    let freezer = cgroup_file(p.pid(&id), "freezer", "freezer.state");

    p.ok(&["pause", &id]);
    assert_eq!(p.inspect(&id, "{{.State.Status}}"), "paused");
    assert_cgroup(&freezer, "FROZEN");
    let ticks = |p: &Podman| p.ok(&["logs", &id]).lines().count();
    let before = ticks(&p);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(ticks(&p), before, "a paused container must not run");

    p.ok(&["unpause", &id]);
    assert_eq!(p.inspect(&id, "{{.State.Status}}"), "running");
    assert_cgroup(&freezer, "THAWED");
    p.wait_logs(&id, &format!("tick {}", before + 3));

    force_rm_and_check(&p, &id);
}

scenario!(memory_pids_limits);
/// `--memory` and `--pids-limit` end up in the container's cgroups: seen from the host and from
/// inside.
fn memory_pids_limits(rt: Rt) {
    let p = Podman::new(rt);
    let script = "echo mem $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
                  echo pids $(cat /sys/fs/cgroup/pids/pids.max); echo ready; sleep 1000";
    let limits = ["--memory", "64m", "--pids-limit", "77"];
    let id = run_detached(&p, &limits, &["sh", "-c", script]);
    p.wait_logs(&id, "ready");
    let pid = p.pid(&id);
    let mem = cgroup_file(pid, "memory", "memory.limit_in_bytes");
    let pids = cgroup_file(pid, "pids", "pids.max");
    assert_cgroup(&mem, "67108864");
    assert_cgroup(&pids, "77");
    assert!(
        mem.to_string_lossy().contains(&p.env.name),
        "the container's cgroup {} is not below --cgroup-parent",
        mem.display()
    );
    let logs = p.ok(&["logs", &id]);
    let l = lines(&logs);
    assert!(l.contains(&"mem 67108864"), "inside view:\n{logs}");
    assert!(l.contains(&"pids 77"), "inside view:\n{logs}");
    force_rm_and_check(&p, &id);
}

scenario!(update);
/// `podman update` (the runtime's `update --resources FILE`) changes the limits of a running
/// container in place and leaves the others alone.
fn update(rt: Rt) {
    let p = Podman::new(rt);
    let limits = ["--memory", "64m", "--pids-limit", "77"];
    let id = run_detached(&p, &limits, &["sleep", "1000"]);
    let pid = p.pid(&id);
    let mem = cgroup_file(pid, "memory", "memory.limit_in_bytes");
    let shares = cgroup_file(pid, "cpu", "cpu.shares");
    let pids = cgroup_file(pid, "pids", "pids.max");
    assert_cgroup(&mem, "67108864");

    p.ok(&["update", "--memory", "96m", "--cpu-shares", "512", &id]);
    assert_cgroup(&mem, "100663296");
    assert_cgroup(&shares, "512");
    assert_cgroup(&pids, "77");
    assert_eq!(p.inspect(&id, "{{.State.Status}}"), "running");

    force_rm_and_check(&p, &id);
}

scenario!(user);
/// `--user uid:gid` and `--group-add`: the process's ids, and the owner of what it creates.
fn user(rt: Rt) {
    let p = Podman::new(rt);
    let script = "id -u; id -g; id -G; touch /tmp/f; stat -c %u:%g /tmp/f";
    let ids = ["--user", "1234:5678", "--group-add", "4242"];
    let out = run_rm_ok(&p, &ids, &["sh", "-c", script]);
    let l = lines(&out.stdout);
    assert_eq!(l.len(), 4, "{out}");
    assert_eq!(l[0], "1234", "{out}");
    assert_eq!(l[1], "5678", "{out}");
    let groups: Vec<&str> = l[2].split_whitespace().collect();
    assert!(
        groups.contains(&"5678") && groups.contains(&"4242"),
        "{out}"
    );
    assert_eq!(l[3], "1234:5678", "{out}");
    p.remove_all_and_check();
}

scenario!(read_only);
/// `--read-only`: the root is mounted read-only, podman's /tmp tmpfs stays writable.
fn read_only(rt: Rt) {
    let p = Podman::new(rt);
    let script = "touch /rootfile && echo root-writable; touch /tmp/f && echo tmp-writable; \
                  awk '$5 == \"/\" { print \"root-options\", $6 }' /proc/self/mountinfo";
    let out = run_rm_ok(&p, &["--read-only"], &["sh", "-c", script]);
    let l = lines(&out.stdout);
    assert!(!l.contains(&"root-writable"), "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert!(l.contains(&"tmp-writable"), "{out}");
    let opts = l
        .iter()
        .find_map(|x| x.strip_prefix("root-options "))
        .unwrap_or_else(|| panic!("no root mount in mountinfo:\n{out}"));
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "root mounted {opts}:\n{out}"
    );
    p.remove_all_and_check();
}

scenario!(cap_drop);
/// `--cap-drop`: a dropped capability is gone from every set and its operation fails;
/// `--cap-drop all --cap-add X` leaves exactly X.
fn cap_drop(rt: Rt) {
    let p = Podman::new(rt);
    let script =
        "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; chown 1 /tmp && echo chown-ok; true";
    let chown = 1u64 << 0;
    let kill = 1u64 << 5;
    let net_bind = 1u64 << 10;

    let out = run_rm_ok(&p, &["--cap-drop", "CAP_CHOWN"], &["sh", "-c", script]);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let v = cap_set(&out.stdout, set);
        assert_eq!(v & chown, 0, "{set} still has CAP_CHOWN:\n{out}");
        assert_ne!(v & kill, 0, "{set} lost podman's default CAP_KILL:\n{out}");
    }
    assert!(!out.stdout.contains("chown-ok"), "{out}");

    let only_net_bind = ["--cap-drop", "all", "--cap-add", "CAP_NET_BIND_SERVICE"];
    let out = run_rm_ok(&p, &only_net_bind, &["sh", "-c", script]);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(cap_set(&out.stdout, set), net_bind, "{set}:\n{out}");
    }
    p.remove_all_and_check();
}

scenario!(pod);
/// A pod: its infra container (catatonit) and two containers share net, ipc, uts and pid
/// namespaces (each keeps its own mount namespace); the hostname is the pod's name and each sees the
/// others' processes.
fn pod(rt: Rt) {
    let p = Podman::new(rt);
    let pod = p.env.name.clone();
    p.ok(&[
        "pod",
        "create",
        "--name",
        &pod,
        "--network",
        "none",
        "--share",
        "net,ipc,uts,pid",
        "--cgroup-parent",
        &p.env.cgroup_parent(),
    ]);
    let a = p.ok(&["run", "-d", "--pod", &pod, IMAGE, "sleep", "1000"]);
    let b = p.ok(&[
        "run",
        "-d",
        "--pod",
        &pod,
        IMAGE,
        "sh",
        "-c",
        "echo host $(hostname); ps -o args; echo ready; sleep 1001",
    ]);
    p.wait_logs(&b, "ready");
    let infra = p.ok(&["pod", "inspect", "--format", "{{.InfraContainerID}}", &pod]);
    let (pi, pa, pb) = (p.pid(&infra), p.pid(&a), p.pid(&b));
    for ns in ["net", "ipc", "uts", "pid"] {
        let want = ns_of(pi, ns);
        assert_eq!(
            ns_of(pa, ns),
            want,
            "container a is not in the pod's {ns} namespace"
        );
        assert_eq!(
            ns_of(pb, ns),
            want,
            "container b is not in the pod's {ns} namespace"
        );
    }
    assert_ne!(
        ns_of(pa, "mnt"),
        ns_of(pb, "mnt"),
        "containers share a mount namespace"
    );
    let logs = p.ok(&["logs", &b]);
    let l = lines(&logs);
    assert!(l.contains(&format!("host {pod}").as_str()), "{logs}");
    assert!(l.iter().any(|x| x.contains("catatonit")), "{logs}");
    assert!(l.contains(&"sleep 1000"), "{logs}");

    p.ok(&["pod", "stop", "--time", "1", &pod]);
    p.ok(&["pod", "rm", &pod]);
    p.remove_all_and_check();
}

scenario!(hooks);
/// OCI hooks podman puts in the spec (from its hooks dir): the runtime runs those of the runtime
/// namespace — prestart, createRuntime, poststart, poststop — in that order, each with the
/// container's state on stdin (its id, pid and the status at that point).
fn hooks(rt: Rt) {
    let p = Podman::new(rt);
    let log = p.env.path("hooks.log");
    // Each call appends "<stage> <state JSON>" as one line.
    let hook = serde_json::json!({
        "version": "1.0.0",
        "hook": {
            "path": "/bin/sh",
            "args": ["sh", "-c", "{ printf '%s ' \"$1\"; cat; echo; } >> \"$2\"", "sh"],
        },
        "when": { "always": true },
        "stages": [],
    });
    for stage in ["prestart", "createRuntime", "poststart", "poststop"] {
        let mut h = hook.clone();
        h["hook"]["args"]
            .as_array_mut()
            .expect("args")
            .extend([stage.into(), log.to_string_lossy().into()]);
        h["stages"] = serde_json::json!([stage]);
        std::fs::write(
            p.conf.hooks_dir().join(format!("{stage}.json")),
            h.to_string(),
        )
        .expect("write hook");
    }
    let out = run_rm_ok(&p, &[], &["echo", "hooked"]);
    assert_eq!(out.stdout.trim(), "hooked", "{out}");
    let id = p
        .env
        .created()
        .first()
        .map(|(_, id)| id.clone())
        .expect("a created container");

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let calls: Vec<(String, serde_json::Value)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (stage, state) = l.split_once(' ').unwrap_or((l, ""));
            let state = serde_json::from_str(state)
                .unwrap_or_else(|e| panic!("{stage}: state on stdin is not JSON ({e}): {state:?}"));
            (stage.to_string(), state)
        })
        .collect();
    let stages: Vec<&str> = calls.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        stages,
        ["prestart", "createRuntime", "poststart", "poststop"],
        "hook order; log:\n{text}"
    );
    let runc_1_1 = crate::common::host_cmd(crate::common::RUNC, &["--version"])
        .stdout
        .starts_with("runc version 1.1.");
    for (stage, state) in &calls {
        assert_eq!(state["id"], id.as_str(), "{stage}: {state}");
        let want = match stage.as_str() {
            // The create operation has not finished yet (runtime-spec: "creating").
            "prestart" | "createRuntime" => "creating",
            // runc 1.1 runs them before it records "running"; the spec wants "running".
            "poststart" if rt == Rt::Runc && runc_1_1 => "created",
            "poststart" => "running",
            _ => "stopped",
        };
        assert_eq!(state["status"], want, "{stage}: {state}");
        if stage != "poststop" {
            assert!(state["pid"].as_i64().unwrap_or(0) > 0, "{stage}: {state}");
        }
    }
    p.remove_all_and_check();
}

scenario!(failing_hook);
/// A failing createRuntime hook fails `podman run` with the runtime's error, and the runtime
/// destroys what it made: nothing is left after podman's cleanup.
fn failing_hook(rt: Rt) {
    let p = Podman::new(rt);
    let hook = serde_json::json!({
        "version": "1.0.0",
        "hook": { "path": "/bin/sh", "args": ["sh", "-c", "echo hook-says-no >&2; exit 3"] },
        "when": { "always": true },
        "stages": ["createRuntime"],
    });
    std::fs::write(p.conf.hooks_dir().join("fail.json"), hook.to_string()).expect("write hook");
    let out = p.run(&["--rm", IMAGE, "echo", "must-not-run"]);
    assert!(out.code > 0, "podman run should fail:\n{out}");
    assert!(!out.stdout.contains("must-not-run"), "{out}");
    assert!(
        out.stderr.contains("hook"),
        "the error should name the hook:\n{out}"
    );
    p.remove_all_and_check();
}
