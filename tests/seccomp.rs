//! linux.seccomp in real containers: every action and operator, errnoRet, flags, architectures,
//! the notify listener, podman's own profile, the cache of compiled programs, and bad input. The
//! in-container side is `probe` (tests/helpers/probe.c), which prints what one raw syscall
//! returned (`NAME=RET`, minus errno on failure).

mod common;

use common::helpers::*;
use common::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const SIGSYS_EXIT: i32 = 128 + 31;

/// A container running `sh -c script` (or the probe directly) under `profile`.
fn with_profile(profile: Value) -> Container {
    let mut c = Container::new();
    install_probe(&c);
    c.set("/linux/seccomp", profile);
    c
}

/// An allow-all profile with `rules` on top.
fn allow_but(rules: Value) -> Value {
    json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules })
}

/// Runs the probe lines of `script` under `profile`; returns what they printed.
#[track_caller]
fn probe_under(profile: Value, script: &str) -> (Out, std::collections::HashMap<String, i64>) {
    let mut c = with_profile(profile);
    c.sh(script);
    let out = c.run();
    let results = probe_results(&out.stdout);
    (out, results)
}

fn getppid_rule(action: &str, extra: Value) -> Value {
    let mut r = json!({ "names": ["getppid"], "action": action });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            r[k] = v;
        }
    }
    r
}

// ----- actions ------------------------------------------------------------

#[test]
fn errno_returns_errno_ret() {
    let (out, r) = probe_under(
        allow_but(json!([getppid_rule(
            "SCMP_ACT_ERRNO",
            json!({"errnoRet": 42})
        )])),
        "probe getppid; probe getpid",
    );
    out.assert_ok();
    assert_eq!(r["getppid"], -42, "{out}");
    assert!(r["getpid"] > 0, "{out}");
}

#[test]
fn errno_without_errno_ret_returns_eperm() {
    let (out, r) = probe_under(
        allow_but(json!([getppid_rule("SCMP_ACT_ERRNO", json!({}))])),
        "probe getppid",
    );
    assert_eq!(r["getppid"], -1, "{out}");
}

/// SCMP_ACT_KILL and SCMP_ACT_KILL_THREAD kill the calling thread only.
#[test]
fn kill_and_kill_thread_kill_only_the_calling_thread() {
    for action in ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"] {
        // Not through sh: busybox sh calls getppid itself.
        let mut c = with_profile(allow_but(json!([getppid_rule(action, json!({}))])));
        c.args(&["/bin/probe", "-T", "getppid"]);
        let out = c.run();
        let r = probe_results(&out.stdout);
        out.assert_ok();
        assert!(
            out.stdout.contains("main thread survived"),
            "{action}: {out}"
        );
        assert!(
            !r.contains_key("getppid"),
            "{action}: the call returned: {out}"
        );
    }
}

#[test]
fn kill_process_kills_the_whole_process_with_sigsys() {
    let mut c = with_profile(allow_but(json!([getppid_rule(
        "SCMP_ACT_KILL_PROCESS",
        json!({})
    )])));
    c.args(&["/bin/probe", "-T", "getppid"]);
    let out = c.run();
    assert_eq!(out.code, SIGSYS_EXIT, "{out}");
    assert!(!out.stdout.contains("survived"), "{out}");
}

#[test]
fn trap_sends_sigsys_that_the_process_can_catch() {
    let profile = allow_but(json!([getppid_rule("SCMP_ACT_TRAP", json!({}))]));
    let mut c = with_profile(profile.clone());
    c.args(&["/bin/probe", "-t", "getppid"]);
    let out = c.run();
    out.assert_ok();
    assert!(out.stdout.starts_with("trapped getppid nr="), "{out}");
    // Uncaught, SIGSYS kills it.
    let mut c = with_profile(profile);
    c.args(&["/bin/probe", "getppid"]);
    let out = c.run();
    assert_eq!(out.code, SIGSYS_EXIT, "{out}");
}

/// Without a tracer, SECCOMP_RET_TRACE makes the syscall fail with ENOSYS.
#[test]
fn trace_without_a_tracer_fails_with_enosys() {
    let (out, r) = probe_under(
        allow_but(json!([getppid_rule(
            "SCMP_ACT_TRACE",
            json!({"errnoRet": 7})
        )])),
        "probe getppid",
    );
    assert_eq!(r["getppid"], -libc_enosys(), "{out}");
}

fn libc_enosys() -> i64 {
    38
}

/// Runs the probe's getppid under `profile` through create/start (to learn its host pid);
/// returns its output and whether the kernel logged a seccomp record with `code` for it.
fn getppid_logged(profile: Value, code: &str) -> (String, bool) {
    let mut c = with_profile(profile);
    c.args(&["/bin/probe", "getppid"]);
    c.create().assert_ok();
    let pid = c.pid();
    c.start().assert_ok();
    c.wait_status("stopped", WAIT);
    let needle = format!("pid={pid} comm=\"probe\"");
    let logged = wait_until(std::time::Duration::from_secs(3), || {
        let log = host_cmd("/usr/bin/dmesg", &[]).stdout;
        log.lines()
            .any(|l| l.contains("type=1326") && l.contains(&needle) && l.contains(code))
    });
    (c.container_stdout(), logged)
}

/// LOG lets the call through, and the kernel logs it (an audit record of type 1326).
#[test]
fn log_allows_the_call_and_the_kernel_logs_it() {
    let (out, logged) = getppid_logged(
        allow_but(json!([getppid_rule("SCMP_ACT_LOG", json!({}))])),
        "code=0x7ffc0000",
    );
    let ret: i64 = out.trim().trim_start_matches("getppid=").parse().unwrap();
    assert!(ret >= 0, "{out}");
    assert!(logged, "no seccomp audit record for the LOG action");
}

/// SECCOMP_FILTER_FLAG_LOG logs every action but ALLOW: an ERRNO is logged with the flag and
/// not without it (the record carries the action without its errno).
#[test]
fn the_log_flag_makes_the_kernel_log_errno_actions() {
    let mut profile = allow_but(json!([getppid_rule(
        "SCMP_ACT_ERRNO",
        json!({"errnoRet": 22})
    )]));
    let (out, logged) = getppid_logged(profile.clone(), "code=0x50000");
    assert_eq!(out, "getppid=-22\n");
    assert!(!logged, "an ERRNO action was logged without the LOG flag");
    profile["flags"] = json!(["SECCOMP_FILTER_FLAG_LOG"]);
    let (out, logged) = getppid_logged(profile, "code=0x50000");
    assert_eq!(out, "getppid=-22\n");
    assert!(
        logged,
        "no seccomp audit record with SECCOMP_FILTER_FLAG_LOG"
    );
}

/// Default ERRNO with defaultErrnoRet, ALLOW for everything a static binary and busybox need:
/// the allowed calls work, everything else fails with defaultErrnoRet.
#[test]
fn default_errno_ret_applies_to_unlisted_syscalls_and_allow_rules_let_calls_through() {
    let mut profile = podman_profile(&[]);
    profile["defaultErrnoRet"] = json!(99);
    let rules = profile["syscalls"].as_array_mut().unwrap();
    for r in rules.iter_mut() {
        if let Some(names) = r["names"].as_array_mut() {
            names.retain(|n| n != "getppid");
        }
    }
    rules.retain(|r| r["names"].as_array().is_some_and(|n| !n.is_empty()));
    let (out, r) = probe_under(profile, "probe getppid; probe getpid; probe add_key");
    out.assert_ok();
    assert_eq!(r["getppid"], -99, "{out}");
    assert_eq!(r["add_key"], -99, "{out}");
    assert!(r["getpid"] > 0, "{out}");
}

// ----- operators ----------------------------------------------------------

/// getppid with `arg` in arg0 under ERRNO(77) when arg0 OP value; returns whether it was blocked.
fn blocked_args(op: &str, value: u64, value_two: Option<u64>, args: &[u64]) -> Vec<bool> {
    let mut cond = json!({ "index": 0, "value": value, "op": op });
    if let Some(v2) = value_two {
        cond["valueTwo"] = json!(v2);
    }
    let profile = allow_but(json!([getppid_rule(
        "SCMP_ACT_ERRNO",
        json!({"errnoRet": 77, "args": [cond]})
    )]));
    let script: Vec<String> = args
        .iter()
        .map(|a| format!("probe getppid {a} | sed 's/^/{a}:/'"))
        .collect();
    let mut c = with_profile(profile);
    c.sh(&script.join("; "));
    let out = c.run();
    out.assert_ok();
    args.iter()
        .map(|a| {
            let line = out
                .lines()
                .into_iter()
                .find(|l| l.starts_with(&format!("{a}:getppid=")))
                .unwrap_or_else(|| panic!("no result for {a}: {out}"))
                .to_string();
            let v: i64 = line.rsplit('=').next().unwrap().parse().unwrap();
            assert!(v == -77 || v > 0, "{line}");
            v == -77
        })
        .collect()
}

#[test]
fn operator_ne() {
    assert_eq!(
        blocked_args("SCMP_CMP_NE", 5, None, &[4, 5, 6]),
        [true, false, true]
    );
}

#[test]
fn operator_lt() {
    assert_eq!(
        blocked_args("SCMP_CMP_LT", 5, None, &[4, 5, 6]),
        [true, false, false]
    );
}

#[test]
fn operator_le() {
    assert_eq!(
        blocked_args("SCMP_CMP_LE", 5, None, &[4, 5, 6]),
        [true, true, false]
    );
}

#[test]
fn operator_eq() {
    assert_eq!(
        blocked_args("SCMP_CMP_EQ", 5, None, &[4, 5, 6]),
        [false, true, false]
    );
}

#[test]
fn operator_ge() {
    assert_eq!(
        blocked_args("SCMP_CMP_GE", 5, None, &[4, 5, 6]),
        [false, true, true]
    );
}

#[test]
fn operator_gt() {
    assert_eq!(
        blocked_args("SCMP_CMP_GT", 5, None, &[4, 5, 6]),
        [false, false, true]
    );
}

/// `value` is the mask, `valueTwo` what the masked argument must equal.
#[test]
fn operator_masked_eq() {
    assert_eq!(
        blocked_args(
            "SCMP_CMP_MASKED_EQ",
            0xf0,
            Some(0x30),
            &[0x3f, 0x30, 0x4f, 0x03]
        ),
        [true, true, false, false]
    );
}

/// Comparisons are on all 64 bits of the argument.
#[test]
fn operators_compare_64_bit_values() {
    let big = 0x1_0000_0000u64;
    assert_eq!(
        blocked_args("SCMP_CMP_GT", big, None, &[big + 1, big, 0xffff_ffff]),
        [true, false, false]
    );
}

/// Conditions on different arguments must all hold (AND); several on one argument are
/// alternatives (OR, as runc does it).
#[test]
fn conditions_on_different_args_and_conditions_on_one_arg_or() {
    let (out, r) = probe_under(
        allow_but(json!([getppid_rule(
            "SCMP_ACT_ERRNO",
            json!({"errnoRet": 11, "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]})
        ),])),
        "probe getppid 1 2 | sed s/^/a/; probe getppid 1 3 | sed s/^/b/",
    );
    assert_eq!(r["agetppid"], -11, "{out}");
    assert!(r["bgetppid"] > 0, "{out}");
    let (out, r) = probe_under(
        allow_but(json!([getppid_rule(
            "SCMP_ACT_ERRNO",
            json!({"errnoRet": 12, "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]})
        ),])),
        "probe getppid 1 | sed s/^/a/; probe getppid 2 | sed s/^/b/; probe getppid 3 | sed s/^/c/",
    );
    assert_eq!(r["agetppid"], -12, "{out}");
    assert_eq!(r["bgetppid"], -12, "{out}");
    assert!(r["cgetppid"] > 0, "{out}");
}

// ----- the runtime's own last steps --------------------------------------

/// The syscalls the runtime itself makes before execve (getcwd, fcntl, close_range, capset,
/// prctl, setgroups, ...) may all be blocked: the filter is loaded after them, with and without
/// noNewPrivileges, as root and as another user.
#[test]
fn a_profile_blocking_the_runtimes_own_syscalls_still_starts_the_process() {
    let blocked = [
        "getcwd",
        "fcntl",
        "close_range",
        "close",
        "capset",
        "prctl",
        "setgroups",
        "setresuid",
        "setresgid",
        "umask",
        "chdir",
        "fchdir",
        "openat",
        "read",
    ];
    for nnp in [true, false] {
        for uid in [0, 1000] {
            let mut c = with_profile(allow_but(json!([
                { "names": blocked, "action": "SCMP_ACT_ERRNO", "errnoRet": 13 }
            ])));
            c.no_new_privileges(nnp)
                .user(uid, uid)
                .args(&["/bin/probe", "getcwd", "buf", "4096"]);
            let out = c.run();
            assert_eq!(out.code, 0, "nnp={nnp} uid={uid}: {out}");
            assert_eq!(out.stdout, "getcwd=-13\n", "nnp={nnp} uid={uid}: {out}");
        }
    }
}

/// Without noNewPrivileges the runtime keeps CAP_SYS_ADMIN to load the filter; it must not
/// survive into the process.
#[test]
fn the_cap_sys_admin_kept_for_loading_does_not_reach_the_process() {
    let profile = allow_but(json!([{ "names": ["sysfs"], "action": "SCMP_ACT_ERRNO" }]));
    // Root with the default set: exactly the spec's capabilities.
    let default_caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let want = format!("{:016x}", cap_mask(&default_caps));
    let mut c = with_profile(profile.clone());
    c.no_new_privileges(false)
        .args(&["cat", "/proc/self/status"]);
    let out = c.run();
    out.assert_ok();
    for f in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            status_field(&out.stdout, f),
            Some(want.as_str()),
            "{f}: {out}"
        );
    }
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), Some("0"), "{out}");
    assert_eq!(status_field(&out.stdout, "Seccomp"), Some("2"), "{out}");
    // Another user without ambient capabilities: none at all.
    let mut c = with_profile(profile);
    c.no_new_privileges(false)
        .user(1000, 1000)
        .args(&["cat", "/proc/self/status"]);
    let out = c.run();
    out.assert_ok();
    for f in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(
            status_field(&out.stdout, f),
            Some("0000000000000000"),
            "{f}: {out}"
        );
    }
}

// ----- flags and architectures --------------------------------------------

#[test]
fn every_filter_flag_is_accepted_and_the_filter_applies() {
    for flag in [
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    ] {
        let mut profile = allow_but(json!([getppid_rule(
            "SCMP_ACT_ERRNO",
            json!({"errnoRet": 21})
        )]));
        profile["flags"] = json!([flag]);
        let (out, r) = probe_under(profile, "probe getppid");
        assert_eq!(r.get("getppid"), Some(&-21), "{flag}: {out}");
    }
}

/// SPEC_ALLOW leaves speculative store bypass alone; without it seccomp turns the mitigation on
/// where the kernel's policy says so ("seccomp" or "prctl" mode). Shown by /proc/self/status.
#[test]
fn spec_allow_flag_shows_in_speculation_store_bypass() {
    let host = fs::read_to_string("/proc/self/status").unwrap();
    let host_ssb = status_field(&host, "Speculation_Store_Bypass")
        .unwrap_or("")
        .to_string();
    let run = |flags: Value| {
        let mut profile = allow_but(json!([getppid_rule("SCMP_ACT_ERRNO", json!({}))]));
        profile["flags"] = flags;
        let mut c = with_profile(profile);
        c.args(&["cat", "/proc/self/status"]);
        let out = c.run();
        out.assert_ok();
        status_field(&out.stdout, "Speculation_Store_Bypass")
            .unwrap_or("")
            .to_string()
    };
    let with = run(json!(["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]));
    let without = run(json!([]));
    eprintln!("host: {host_ssb:?}; with SPEC_ALLOW: {with:?}; without: {without:?}");
    assert!(!with.contains("force mitigated"), "{with}");
    if !without.contains("force mitigated") {
        eprintln!(
            "NOTE: this kernel's speculative store bypass policy does not tie the mitigation to \
             seccomp (not 'seccomp' mode, or the CPU is not affected): SECCOMP_FILTER_FLAG_SPEC_ALLOW \
             has nothing to change here, so only its acceptance is checked"
        );
    }
}

#[test]
fn listed_architectures_are_accepted() {
    let mut profile = allow_but(json!([getppid_rule(
        "SCMP_ACT_ERRNO",
        json!({"errnoRet": 5})
    )]));
    profile["architectures"] = json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    let (out, r) = probe_under(profile, "probe getppid");
    assert_eq!(r.get("getppid"), Some(&-5), "{out}");
}

// ----- a real engine's profile --------------------------------------------

/// podman's profile (Debian's golang-github-containers-common), converted as podman does for a
/// container with the test's default capabilities. Normal commands run; what it denies fails
/// with its errno, where the same calls without the profile get a different answer.
#[test]
fn podman_profile_denies_what_it_lists_and_lets_normal_commands_run() {
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let script = "ls / >/dev/null && echo ls-ok; cat /etc/passwd | grep -c root; \
                  probe unshare 0x20000; probe mount s:none s:/mnt s:tmpfs 0 0; \
                  probe keyctl 0 -3 0; probe add_key s:user s:k s:v 1 -2; probe vmsplice -1 0 0 0; \
                  probe sysfs 3; probe io_uring_setup 0 0; probe getppid";
    let (out, with) = probe_under(podman_profile(&caps), script);
    out.assert_ok();
    let mut plain = Container::new();
    install_probe(&plain);
    plain.sh(script);
    let control = plain.run();
    let without = probe_results(&control.stdout);
    eprintln!(
        "with podman's profile:\n{}\nwithout:\n{}",
        out.stdout, control.stdout
    );

    assert!(out.stdout.starts_with("ls-ok\n1\n"), "{out}");
    // (add_key goes to a process keyring, gone with the probe: keyrings are not namespaced.)
    // Capabilities alone already deny these (no CAP_SYS_ADMIN); the profile keeps EPERM.
    assert_eq!(with["unshare"], -1, "{out}");
    assert_eq!(with["mount"], -1, "{out}");
    // Denied by the profile's errnoRet 1 (EPERM) rules and its default (ENOSYS): the control
    // container gets another answer for each.
    for (name, want) in [
        ("vmsplice", -1),
        ("sysfs", -1),
        ("add_key", -38),
        ("io_uring_setup", -38),
    ] {
        assert_eq!(with[name], want, "{name}: {out}");
        assert_ne!(without[name], want, "{name} without the profile: {control}");
    }
    // keyctl is on the profile's allow list (unlike Docker's older profile): it succeeds with
    // and without it (the serial differs: each container has a session keyring of its own).
    assert!(
        with["keyctl"] > 0 && without["keyctl"] > 0,
        "{out}\n{control}"
    );
    assert!(with["getppid"] >= 0);
}

// ----- notify --------------------------------------------------------------

/// SCMP_ACT_NOTIFY: the listener gets the containerProcessState and the notify fd, and its
/// answer is what the process sees; the call itself never runs.
#[test]
fn notify_hands_the_fd_and_state_to_the_listener_which_answers_the_call() {
    let dir = std::path::Path::new(TMP_BASE).join(format!("{}-listener", unique_suffix()));
    let listener = Listener::start(&dir, "val:42");
    let mut profile = allow_but(json!([
        { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY" }
    ]));
    profile["listenerPath"] = json!(listener.socket);
    profile["listenerMetadata"] = json!("test-metadata");
    profile["flags"] = json!(["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]);
    let mut c = with_profile(profile);
    c.readonly(false)
        .set("/annotations", json!({"org.test": "yes"}))
        .sh("probe mkdir s:/made 0755; test -e /made && echo exists || echo absent");
    c.create().assert_ok();
    let pid = c.pid();
    c.start().assert_ok();
    c.wait_status("stopped", WAIT);
    let stdout = c.container_stdout();
    assert_eq!(
        stdout,
        "mkdir=42\nabsent\n",
        "listener: {}",
        listener.stderr()
    );
    assert!(listener.log().contains("nr="), "log: {}", listener.log());

    let state = listener.state();
    assert_eq!(state["fds"], json!(["seccompFd"]), "{state}");
    assert_eq!(state["pid"], json!(pid), "{state}");
    assert_eq!(state["metadata"], "test-metadata", "{state}");
    assert_eq!(state["state"]["id"], json!(c.id), "{state}");
    assert_eq!(state["state"]["pid"], json!(pid), "{state}");
    assert_eq!(state["state"]["annotations"]["org.test"], "yes", "{state}");
    assert!(state["ociVersion"].is_string(), "{state}");
    let _ = fs::remove_dir_all(&dir);
}

// ----- the cache -----------------------------------------------------------

fn cache_files(c: &Container) -> Vec<std::path::PathBuf> {
    fs::read_dir(c.root.join("seccomp-cache"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The compiled program is stored once per profile (0600 in a 0700 dir), reused as is, and a
/// cache file that was tampered with is never used: the filter stays what the profile says.
#[test]
fn compiled_programs_are_cached_and_a_tampered_cache_file_is_not_used() {
    let mut c = with_profile(allow_but(json!([getppid_rule(
        "SCMP_ACT_ERRNO",
        json!({"errnoRet": 33})
    )])));
    c.sh("probe getppid");
    let check = |c: &Container| {
        let out = c.run();
        assert_eq!(out.stdout, "getppid=-33\n", "{out}");
    };
    check(&c);
    let files = cache_files(&c);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = files[0].clone();
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let dir_mode = fs::metadata(c.root.join("seccomp-cache")).unwrap().mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    // Reused: the file is not rewritten.
    check(&c);
    assert_eq!(
        fs::metadata(&file).unwrap().ino(),
        meta.ino(),
        "cache file rewritten"
    );

    // Every byte of the program flipped in turn would be too slow; flip the return value of
    // the rule (ERRNO 33 becomes ERRNO 32) and the last instruction.
    let good = fs::read(&file).unwrap();
    let pos = good
        .windows(4)
        .rposition(|w| w == [33, 0, 5, 0])
        .expect("the ERRNO(33) return in the program");
    for (what, bytes) in [
        ("a changed errno", {
            let mut b = good.clone();
            b[pos] = 32;
            b
        }),
        ("a truncated program", good[..good.len() - 3].to_vec()),
        ("a program ending in ret ALLOW", {
            let mut b = good.clone();
            let n = b.len();
            b[n - 8..].copy_from_slice(&[6, 0, 0, 0, 0, 0, 0xff, 0x7f]);
            b
        }),
    ] {
        fs::write(&file, &bytes).unwrap();
        check(&c);
        assert_eq!(fs::read(&file).unwrap(), good, "{what}: not replaced");
    }

    // A well-formed entry of another profile, put in this profile's place.
    c.set("/linux/seccomp/syscalls/0/errnoRet", json!(34));
    let out = c.run();
    assert_eq!(out.stdout, "getppid=-34\n", "{out}");
    let other = cache_files(&c)
        .into_iter()
        .find(|f| *f != file)
        .expect("a second cache file");
    fs::copy(&other, &file).unwrap();
    c.set("/linux/seccomp/syscalls/0/errnoRet", json!(33));
    check(&c);
    assert_eq!(
        fs::read(&file).unwrap(),
        good,
        "another profile's entry: not replaced"
    );

    // A changed program with a matching checksum, in a file others could have written or that
    // another user owns, is not trusted either.
    let mut sealed = good.clone();
    sealed[pos] = 32;
    reseal(&mut sealed);
    for (mode, owner) in [(0o666, 0), (0o644, 0), (0o600, 1000)] {
        fs::write(&file, &sealed).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&file, Some(owner), None).unwrap();
        check(&c);
        let meta = fs::metadata(&file).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, 0));
        assert_eq!(
            fs::read(&file).unwrap(),
            good,
            "mode {mode:o} owner {owner}"
        );
    }
}

/// Recomputes the checksum of a cache file (FNV-1a 64 over everything after the 28-byte header),
/// as someone tampering with it would.
fn reseal(file: &mut [u8]) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &file[28..] {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    file[20..28].copy_from_slice(&h.to_le_bytes());
}

/// Profiles that differ only in flags or listener settings share the program; others do not.
#[test]
fn the_cache_key_is_the_program_relevant_content() {
    let mut c = with_profile(allow_but(json!([getppid_rule(
        "SCMP_ACT_ERRNO",
        json!({})
    )])));
    c.args(&["/bin/probe", "getppid"]);
    c.run().assert_ok();
    c.set("/linux/seccomp/flags", json!(["SECCOMP_FILTER_FLAG_LOG"]));
    c.run().assert_ok();
    assert_eq!(cache_files(&c).len(), 1);
    c.set("/linux/seccomp/syscalls/0/errnoRet", json!(2));
    let out = c.run();
    assert_eq!(out.stdout, "getppid=-2\n", "{out}");
    assert_eq!(cache_files(&c).len(), 2);
}

// ----- bad input -------------------------------------------------------------

#[track_caller]
fn fails_naming(profile: Value, needle: &str) {
    let mut c = with_profile(profile);
    c.args(&["/bin/probe", "getppid"]);
    let out = c.run();
    out.assert_fail();
    c.assert_no_debris(None);
    let left = c.root_leftovers();
    assert!(left.is_empty(), "root has {left:?} after a failed create");
    check_our_message(&out, &format!("name {needle:?}"), |s| s.contains(needle));
}

fn three_good_rules_and(bad: Value) -> Value {
    let ok = json!({"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"});
    allow_but(json!([ok, ok, ok, bad]))
}

#[test]
fn an_unknown_action_is_an_error_naming_the_field() {
    fails_naming(
        three_good_rules_and(json!({"names": ["getppid"], "action": "SCMP_ACT_BOGUS"})),
        "linux.seccomp.syscalls[3].action: unknown action \"SCMP_ACT_BOGUS\"",
    );
    fails_naming(
        json!({"defaultAction": "SCMP_ACT_NOPE"}),
        "linux.seccomp.defaultAction: unknown action \"SCMP_ACT_NOPE\"",
    );
}

#[test]
fn an_unknown_operator_is_an_error_naming_the_field() {
    fails_naming(
        three_good_rules_and(json!({"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ROUGHLY"}]})),
        "linux.seccomp.syscalls[3].args[0].op: unknown operator \"SCMP_CMP_ROUGHLY\"",
    );
}

#[test]
fn an_unknown_architecture_or_flag_is_an_error_naming_it() {
    let mut p = allow_but(json!([]));
    p["architectures"] = json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_PDP11"]);
    fails_naming(
        p,
        "linux.seccomp.architectures[1]: unknown architecture \"SCMP_ARCH_PDP11\"",
    );
    let mut p = allow_but(json!([]));
    p["flags"] = json!(["SECCOMP_FILTER_FLAG_FAST"]);
    fails_naming(
        p,
        "linux.seccomp.flags[0]: unknown flag \"SECCOMP_FILTER_FLAG_FAST\"",
    );
}

#[test]
fn malformed_profiles_are_errors_naming_the_field() {
    fails_naming(
        three_good_rules_and(json!({"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]})),
        "linux.seccomp.syscalls[3].args[0].index 6",
    );
    fails_naming(
        three_good_rules_and(json!({"names": [], "action": "SCMP_ACT_ERRNO"})),
        "linux.seccomp.syscalls[3].names: must not be empty",
    );
    fails_naming(
        three_good_rules_and(json!({"names": "getppid", "action": "SCMP_ACT_ERRNO"})),
        "linux.seccomp.syscalls[3].names",
    );
    fails_naming(
        three_good_rules_and(json!({"names": ["getppid"], "action": "SCMP_ACT_ALLOW",
            "errnoRet": 1})),
        "linux.seccomp.syscalls[3].errnoRet",
    );
    fails_naming(
        three_good_rules_and(json!({"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
            "errnoRet": 70000})),
        "linux.seccomp.syscalls[3].errnoRet 70000",
    );
    fails_naming(
        three_good_rules_and(json!({"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"})),
        "linux.seccomp.syscalls[3].action: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath",
    );
    fails_naming(
        json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"}),
        "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action",
    );
    let mut p = three_good_rules_and(json!({"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}));
    p["listenerPath"] = json!("/nonexistent/agent.sock");
    fails_naming(p, "linux.seccomp.listenerPath /nonexistent/agent.sock");
    let mut p = allow_but(json!([]));
    p["architectures"] = json!(["SCMP_ARCH_LOONGARCH64"]);
    fails_naming(p, "linux.seccomp.architectures[0]");
}

/// Names this libseccomp does not know are skipped with a warning, as runc does.
#[test]
fn an_unknown_syscall_name_is_skipped_with_a_warning() {
    let mut c = with_profile(allow_but(json!([
        {"names": ["no_such_syscall", "getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9}
    ])));
    c.args(&["/bin/probe", "getppid"]);
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "getppid=-9\n", "{out}");
    check_our_message(&out, "warn about no_such_syscall", |s| {
        s.contains("warning") && s.contains("no_such_syscall")
    });
}
