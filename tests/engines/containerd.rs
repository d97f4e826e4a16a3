//! containerd scenarios, driven with `ctr` through containerd's runc v2 shim.

use crate::harness::{cgroup_file, pty, read_trimmed, Containerd, Rt};

fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

scenario!(run_rm);
/// `ctr run --rm --runc-binary`: output and exit code come back; nothing is left.
fn run_rm(rt: Rt) {
    let mut c = Containerd::new(rt);
    let out = c.run(
        &["--rm"],
        "t1",
        &[
            "sh",
            "-c",
            "echo hello from ctr; echo to-stderr >&2; exit 4",
        ],
    );
    assert_eq!(out.code, 4, "ctr run should return the exit code:\n{out}");
    assert!(lines(&out.stdout).contains(&"hello from ctr"), "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");
    c.remove_all_and_check();
}

scenario!(detached_exec_pause_ps_kill_delete);
/// `ctr run -d`, then `task exec` (output, exit code, the init's namespaces), `task pause`/`resume`
/// (the freezer cgroup), `task ps`, `task kill` (SIGTERM reaches the trap), `task delete`.
fn detached_exec_pause_ps_kill_delete(rt: Rt) {
    let mut c = Containerd::new(rt);
    let out = c.run(
        &["-d"],
        "t1",
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; while :; do sleep 0.1; done",
        ],
    );
    assert!(out.ok(), "ctr run -d failed:\n{out}\n{}", c.daemon_log());
    c.wait_status("t1", "RUNNING");
    let pid = c
        .tasks()
        .into_iter()
        .find(|(t, _, _)| t == "t1")
        .map(|(_, p, _)| p)
        .expect("task t1");

    let fifo = c.env.path_str("fifo");
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "--fifo-dir",
        &fifo,
        "t1",
        "sh",
        "-c",
        "echo in-exec; for n in mnt pid net ipc uts; do \
           [ $(readlink /proc/1/ns/$n) = $(readlink /proc/self/ns/$n) ] && echo same-$n; \
         done; exit 7",
    ]);
    assert_eq!(
        out.code, 7,
        "ctr task exec should return the exit code:\n{out}"
    );
    assert_eq!(
        lines(&out.stdout),
        ["in-exec", "same-mnt", "same-pid", "same-net", "same-ipc", "same-uts"],
        "{out}"
    );

    let freezer = cgroup_file(pid, "freezer", "freezer.state");
    assert!(
        freezer.to_string_lossy().contains(c.ns()),
        "the task's cgroup {} is not below /<namespace>",
        freezer.display()
    );
    c.ok(&["task", "pause", "t1"]);
    assert_eq!(c.task_status("t1").as_deref(), Some("PAUSED"));
    assert_eq!(read_trimmed(&freezer), "FROZEN");
    c.ok(&["task", "resume", "t1"]);
    assert_eq!(c.task_status("t1").as_deref(), Some("RUNNING"));
    assert_eq!(read_trimmed(&freezer), "THAWED");

    let ps = c.ok(&["task", "ps", "t1"]);
    assert!(
        ps.lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "ctr task ps does not list the init {pid}:\n{ps}"
    );

    c.ok(&["task", "kill", "t1"]);
    c.wait_status("t1", "STOPPED");
    let out = c.ctr(&["task", "delete", "t1"]);
    assert!(out.ok(), "{out}");
    assert!(
        out.stderr.contains("exit code 42"),
        "SIGTERM should reach the trap (ctr reports the exit code):\n{out}"
    );
    c.ok(&["container", "rm", "t1"]);
    c.remove_all_and_check();
}

scenario!(tty);
/// `ctr run -t` and `ctr task exec -t` on a real terminal: the process's stdio is a pty of the
/// container's devpts; exit codes come back.
fn tty(rt: Rt) {
    let mut c = Containerd::new(rt);
    let io = c.env.path("io");
    let flags = c.run_flags();
    let mut args: Vec<&str> = vec!["run", "--rm", "-t"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([
        crate::harness::IMAGE,
        "t1",
        "sh",
        "-c",
        "tty; [ -t 0 ] && echo stdin-$(echo is-a-tty); exit 5",
    ]);
    let out = pty::run("/usr/bin/ctr", &c.ctr_argv(&args), "", &io);
    assert_eq!(out.code, 5, "exit code through the terminal:\n{out}");
    let l = pty::lines(&out);
    for want in ["/dev/pts/0", "stdin-is-a-tty"] {
        assert!(
            l.iter().any(|x| x == want),
            "no line {want:?} on the terminal:\n{out}"
        );
    }

    let out = c.run(&["-d"], "t2", &["sleep", "1000"]);
    assert!(out.ok(), "{out}");
    let fifo = c.env.path_str("fifo");
    let argv = c.ctr_argv(&[
        "task",
        "exec",
        "-t",
        "--exec-id",
        "e1",
        "--fifo-dir",
        &fifo,
        "t2",
        "sh",
        "-c",
        "tty; exit 6",
    ]);
    let out = pty::run("/usr/bin/ctr", &argv, "", &io);
    assert_eq!(out.code, 6, "exit code through the terminal:\n{out}");
    assert!(pty::lines(&out).iter().any(|x| x == "/dev/pts/0"), "{out}");
    c.ok(&["task", "kill", "--signal", "SIGKILL", "t2"]);
    c.wait_status("t2", "STOPPED");
    c.ok(&["task", "delete", "t2"]);
    c.ok(&["container", "rm", "t2"]);
    c.remove_all_and_check();
}
