//! `kill`: signal names and numbers, the default signal, `--all`.

mod common;

use common::*;

/// Runs a container (via `run` in the background) whose init traps `trap`
/// and exits 7 after printing `got <trap>`; sends `kill ID <sig_arg>` (or no
/// signal argument) and returns the output of `run`.
fn trapped_by(trap: &str, sig_arg: Option<&str>) -> Out {
    let mut c = Container::new();
    c.sh(&format!(
        "trap 'echo got {trap}; exit 7' {trap}; echo ready; while :; do sleep 0.02; done"
    ));
    let mut r = c.spawn_run(&[]);
    r.wait_for_stdout("ready", WAIT);
    c.kill(sig_arg).assert_ok();
    r.wait(WAIT)
}

#[track_caller]
fn assert_trapped(out: &Out, trap: &str) {
    assert_eq!(out.code, 7, "{out}");
    assert_eq!(out.stdout, format!("ready\ngot {trap}\n"), "{out}");
}

#[test]
fn kill_without_a_signal_sends_sigterm() {
    assert_trapped(&trapped_by("TERM", None), "TERM");
}

#[test]
fn kill_accepts_a_name_with_the_sig_prefix() {
    assert_trapped(&trapped_by("USR1", Some("SIGUSR1")), "USR1");
}

#[test]
fn kill_accepts_a_name_without_the_sig_prefix() {
    assert_trapped(&trapped_by("USR1", Some("USR1")), "USR1");
}

#[test]
fn kill_accepts_a_signal_number() {
    // SIGUSR2 is 12 on x86 and arm.
    assert_trapped(&trapped_by("USR2", Some("12")), "USR2");
}

#[test]
fn kill_accepts_sighup_and_sigint() {
    assert_trapped(&trapped_by("HUP", Some("HUP")), "HUP");
    assert_trapped(&trapped_by("INT", Some("SIGINT")), "INT");
}

#[test]
fn kill_with_kill_by_name_and_number_terminates_the_container() {
    for sig in ["KILL", "SIGKILL", "9"] {
        let mut c = Container::new();
        c.sh("trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.02; done");
        let mut r = c.spawn_run(&[]);
        r.wait_for_stdout("ready", WAIT);
        c.kill(Some(sig)).assert_ok();
        let out = r.wait(WAIT);
        assert_eq!(out.code, 137, "kill {sig}: {out}");
        assert_eq!(out.stdout, "ready\n", "kill {sig}: {out}");
    }
}

#[test]
fn kill_of_a_created_container_kills_it_before_it_runs() {
    let mut c = Container::new();
    c.sh("echo must-not-run");
    c.create().assert_ok();
    let pid = c.pid();
    c.kill(Some("KILL")).assert_ok();
    c.wait_status("stopped", WAIT);
    assert!(wait_until(WAIT, || !pid_alive(pid)));
    assert_eq!(c.container_stdout(), "");
    c.delete().assert_ok();
    c.assert_no_debris(Some(pid));
}

/// Without a pid namespace, killing init does not kill its children: only
/// `kill --all` reaches every process of the container's cgroup.
#[test]
fn kill_all_reaches_every_process_of_the_container() {
    let mut c = Container::new();
    c.remove_namespace("pid")
        .sh("sleep 1000 & sleep 1000 & (sleep 1000 & wait) & echo started; wait");
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    // The subshell forks its sleep asynchronously.
    let mut procs = Vec::new();
    assert!(
        wait_until(WAIT, || {
            procs = c.cgroup_procs("pids");
            procs.len() >= 5
        }),
        "expected init, a subshell and three sleeps: {procs:?}"
    );

    c.kill_all("KILL").assert_ok();
    for p in &procs {
        assert!(
            wait_until(WAIT, || !pid_alive(*p)),
            "process {p} survived kill --all"
        );
    }
    c.wait_status("stopped", WAIT);
    assert!(wait_until(WAIT, || c.cgroup_procs("pids").is_empty()));
    c.delete().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn kill_without_all_only_signals_init() {
    let mut c = Container::new();
    c.remove_namespace("pid")
        .sh("sleep 1000 & echo started; wait");
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    let init = c.pid();
    let others: Vec<i64> = c
        .cgroup_procs("pids")
        .into_iter()
        .filter(|p| *p != init)
        .collect();
    assert_eq!(others.len(), 1, "{others:?}");

    c.kill(Some("KILL")).assert_ok();
    assert!(wait_until(WAIT, || !pid_alive(init)));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(pid_alive(others[0]), "kill without --all reached a child");
    // delete --force cleans up the rest.
    c.delete_force().assert_ok();
    assert!(wait_until(WAIT, || !pid_alive(others[0])));
    c.assert_no_debris(None);
}
