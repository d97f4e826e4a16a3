//! The container process: exit codes, identity, environment, limits,
//! capabilities, inherited fds — all as seen from inside the container.

mod common;

use common::*;
use std::fs;

/// Runs `script` with `sh -c` in a fresh container after `setup`, expecting
/// success; returns stdout.
fn sh_output(setup: impl FnOnce(&mut Container), script: &str) -> String {
    let mut c = Container::new();
    c.sh(script);
    setup(&mut c);
    let out = c.run();
    out.assert_ok();
    out.stdout
}

#[test]
fn exit_code_of_the_process_is_the_exit_code_of_run() {
    let mut c = Container::new();
    c.sh("echo out; echo err >&2; exit 3");
    let out = c.run();
    assert_eq!(out.code, 3, "{out}");
    assert_eq!(out.stdout, "out\n", "{out}");
    assert!(out.stderr.contains("err\n"), "{out}");
}

#[test]
fn process_killed_by_sigkill_makes_run_exit_137() {
    let mut c = Container::new();
    // Without a pid namespace the shell is not an init and can be killed by
    // its own signal.
    c.remove_namespace("pid")
        .sh("echo before; kill -KILL $$; echo after");
    let out = c.run();
    assert_eq!(out.code, 128 + 9, "{out}");
    assert_eq!(out.stdout, "before\n", "{out}");
}

#[test]
fn process_killed_by_sigterm_makes_run_exit_143() {
    let mut c = Container::new();
    c.remove_namespace("pid").sh("kill -TERM $$; echo after");
    let out = c.run();
    assert_eq!(out.code, 128 + 15, "{out}");
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn container_init_killed_from_outside_makes_run_exit_137() {
    let mut c = Container::new();
    c.sh("echo ready; while :; do sleep 0.05; done");
    let mut r = c.spawn_run(&[]);
    r.wait_for_stdout("ready", WAIT);
    c.kill(Some("KILL")).assert_ok();
    let out = r.wait(WAIT);
    assert_eq!(out.code, 137, "{out}");
}

#[test]
fn the_process_is_pid_1() {
    assert_eq!(sh_output(|_| {}, "echo $$"), "1\n");
}

#[test]
fn hostname_is_set() {
    let out = sh_output(
        |c| {
            c.hostname("box-42");
        },
        "hostname; cat /proc/sys/kernel/hostname",
    );
    assert_eq!(out, "box-42\nbox-42\n");
}

#[test]
fn domainname_is_set() {
    if runtime_is_runc_1_1() {
        eprintln!("skipped: runc 1.1 does not implement the domainname field (runc >= 1.2 does)");
        return;
    }
    let out = sh_output(
        |c| {
            c.hostname("box-42").domainname("example.test");
        },
        "hostname; cat /proc/sys/kernel/domainname",
    );
    assert_eq!(out, "box-42\nexample.test\n");
}

#[test]
fn domainname_can_be_set_with_the_kernel_domainname_sysctl() {
    let out = sh_output(
        |c| {
            c.sysctl("kernel.domainname", "sysctl.test");
        },
        "cat /proc/sys/kernel/domainname",
    );
    assert_eq!(out, "sysctl.test\n");
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/domainname").unwrap(),
        "sysctl.test\n",
        "the host's domainname was changed"
    );
}

#[test]
fn env_is_passed_exactly_and_home_is_added_from_passwd() {
    let mut c = Container::new();
    c.args(&["cat", "/proc/self/environ"]).env(&[
        "PATH=/bin",
        "FOO=bar baz",
        "EMPTY=",
        "TERM=dumb",
    ]);
    let out = c.run();
    out.assert_ok();
    let vars: Vec<&str> = out.stdout.split('\0').filter(|s| !s.is_empty()).collect();
    // The configured variables, in order, and HOME (not configured) from
    // /etc/passwd of the container user, as runc does.
    let configured: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|v| !v.starts_with("HOME="))
        .collect();
    assert_eq!(
        configured,
        ["PATH=/bin", "FOO=bar baz", "EMPTY=", "TERM=dumb"],
        "{out}"
    );
    assert!(vars.contains(&"HOME=/root"), "{out}");
}

#[test]
fn configured_home_is_kept() {
    let mut c = Container::new();
    c.args(&["cat", "/proc/self/environ"])
        .env(&["PATH=/bin", "HOME=/elsewhere"]);
    let out = c.run();
    out.assert_ok();
    let vars: Vec<&str> = out.stdout.split('\0').filter(|s| !s.is_empty()).collect();
    assert_eq!(vars, ["PATH=/bin", "HOME=/elsewhere"], "{out}");
}

#[test]
fn args_are_passed_verbatim() {
    let mut c = Container::new();
    c.args(&[
        "sh",
        "-c",
        "for a; do echo \"[$a]\"; done",
        "argv0",
        "a b",
        "",
        "*",
        "$HOME",
    ]);
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "[a b]\n[]\n[*]\n[$HOME]\n", "{out}");
}

#[test]
fn cwd_is_the_process_cwd() {
    let out = sh_output(
        |c| {
            c.cwd("/etc");
        },
        "readlink /proc/self/cwd; ls passwd",
    );
    assert_eq!(out, "/etc\npasswd\n");
}

#[test]
fn a_cwd_that_does_not_exist_is_created() {
    let mut c = Container::new();
    c.cwd("/work/new/dir").sh("readlink /proc/self/cwd");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "/work/new/dir\n", "{out}");
    assert!(
        c.rootfs.join("work/new/dir").is_dir(),
        "cwd was not created in the rootfs"
    );
}

#[test]
fn user_uid_and_gid_are_set() {
    let out = sh_output(
        |c| {
            c.user(1000, 1000);
        },
        "id -u; id -g; grep -E '^(Uid|Gid):' /proc/self/status",
    );
    assert_eq!(
        out,
        "1000\n1000\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n"
    );
}

#[test]
fn user_without_passwd_entry_works_and_home_is_root() {
    let mut c = Container::new();
    c.user(4321, 8765)
        .args(&["sh", "-c", "id -u; id -g; echo $HOME"]);
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "4321\n8765\n/\n", "{out}");
}

#[test]
fn additional_gids_are_the_supplementary_groups() {
    let out = sh_output(
        |c| {
            c.user(1000, 1000).additional_gids(&[20, 30]);
        },
        "grep '^Groups:' /proc/self/status",
    );
    let groups: Vec<&str> = out
        .trim()
        .trim_start_matches("Groups:")
        .split_whitespace()
        .collect();
    assert_eq!(groups, ["20", "30"], "{out}");
}

#[test]
fn root_without_additional_gids_has_no_supplementary_groups() {
    let out = sh_output(|_| {}, "grep '^Groups:' /proc/self/status");
    assert_eq!(out.trim(), "Groups:", "{out}");
}

#[test]
fn umask_is_set_from_user_umask() {
    let out = sh_output(
        |c| {
            c.umask(0o027).readonly(false);
        },
        "umask; touch /tmp/f; stat -c %a /tmp/f",
    );
    assert_eq!(out, "0027\n640\n");
}

#[test]
fn umask_defaults_to_0022() {
    assert_eq!(sh_output(|_| {}, "umask"), "0022\n");
}

#[test]
fn rlimit_nofile_sets_soft_and_hard_limits() {
    // Raising a hard limit needs CAP_SYS_RESOURCE: stay within ours.
    let hard = own_hard_limit("Max open files").min(2000);
    let soft = hard / 2;
    let out = sh_output(
        |c| {
            c.rlimit("RLIMIT_NOFILE", soft, hard);
        },
        "ulimit -n; ulimit -Hn; grep 'Max open files' /proc/self/limits",
    );
    let (soft, hard) = (soft.to_string(), hard.to_string());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], [soft.as_str(), hard.as_str()], "{out}");
    let f: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(f[3..5], [soft.as_str(), hard.as_str()], "{out}");
}

#[test]
fn several_rlimits_are_applied() {
    let nproc_hard = own_hard_limit("Max processes").min(400);
    let nproc_soft = nproc_hard * 3 / 4;
    let out = sh_output(
        |c| {
            c.rlimit("RLIMIT_NOFILE", 512, 512)
                .rlimit("RLIMIT_NPROC", nproc_soft, nproc_hard)
                .rlimit("RLIMIT_CORE", 0, 0);
        },
        "grep -E 'Max (open files|processes|core file size)' /proc/self/limits",
    );
    let get = |name: &str| -> Vec<String> {
        let l = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        l[name.len()..]
            .split_whitespace()
            .take(2)
            .map(String::from)
            .collect()
    };
    assert_eq!(get("Max open files"), ["512", "512"]);
    assert_eq!(
        get("Max processes"),
        [nproc_soft.to_string(), nproc_hard.to_string()]
    );
    assert_eq!(get("Max core file size"), ["0", "0"]);
}

const REDUCED_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
];

fn status_of_container_process(setup: impl FnOnce(&mut Container)) -> String {
    let mut c = Container::new();
    c.args(&["cat", "/proc/self/status"]);
    setup(&mut c);
    let out = c.run();
    out.assert_ok();
    out.stdout
}

#[test]
fn reduced_capability_set_shows_in_cap_eff_cap_prm_cap_bnd() {
    let status = status_of_container_process(|c| {
        c.capabilities(REDUCED_CAPS);
    });
    let want = format!("{:016x}", cap_mask(REDUCED_CAPS));
    assert_eq!(want, "0000000000040421");
    for f in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            status_field(&status, f),
            Some(want.as_str()),
            "{f}:\n{status}"
        );
    }
    assert_eq!(
        status_field(&status, "CapInh"),
        Some("0000000000000000"),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "CapAmb"),
        Some("0000000000000000"),
        "{status}"
    );
}

#[test]
fn bounding_and_permitted_sets_are_applied_separately() {
    let status = status_of_container_process(|c| {
        c.set(
            "/process/capabilities",
            serde_json::json!({
                "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_SETUID"],
                "permitted": ["CAP_CHOWN", "CAP_KILL"],
                "effective": ["CAP_CHOWN", "CAP_KILL"],
            }),
        );
    });
    let hex = |caps: &[&str]| format!("{:016x}", cap_mask(caps));
    assert_eq!(
        status_field(&status, "CapBnd"),
        Some(hex(&["CAP_CHOWN", "CAP_KILL", "CAP_SETUID"]).as_str()),
        "{status}"
    );
    let prm = hex(&["CAP_CHOWN", "CAP_KILL"]);
    assert_eq!(
        status_field(&status, "CapPrm"),
        Some(prm.as_str()),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "CapEff"),
        Some(prm.as_str()),
        "{status}"
    );
}

/// A non-root process loses its capabilities on exec unless they are ambient.
#[test]
fn a_non_root_user_without_ambient_caps_has_none_after_exec() {
    let status = status_of_container_process(|c| {
        c.user(1000, 1000).capabilities(REDUCED_CAPS);
    });
    let bnd = format!("{:016x}", cap_mask(REDUCED_CAPS));
    assert_eq!(
        status_field(&status, "CapBnd"),
        Some(bnd.as_str()),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "CapEff"),
        Some("0000000000000000"),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "CapPrm"),
        Some("0000000000000000"),
        "{status}"
    );
}

#[test]
fn ambient_capabilities_stay_effective_for_a_non_root_user() {
    let status = status_of_container_process(|c| {
        c.user(1000, 1000).set(
            "/process/capabilities",
            serde_json::json!({
                "bounding": REDUCED_CAPS,
                "effective": REDUCED_CAPS,
                "permitted": REDUCED_CAPS,
                "inheritable": REDUCED_CAPS,
                "ambient": REDUCED_CAPS,
            }),
        );
    });
    let want = format!("{:016x}", cap_mask(REDUCED_CAPS));
    for f in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(
            status_field(&status, f),
            Some(want.as_str()),
            "{f}:\n{status}"
        );
    }
}

#[test]
fn missing_cap_chown_makes_chown_fail_and_having_it_makes_it_work() {
    let script = "touch /tmp/f && chown 1000 /tmp/f && stat -c %u /tmp/f";
    let mut without = Container::new();
    without
        .readonly(false)
        .capabilities(&["CAP_KILL"])
        .sh(script);
    without.run().assert_fail();

    let mut with = Container::new();
    with.readonly(false)
        .capabilities(&["CAP_KILL", "CAP_CHOWN"])
        .sh(script);
    let out = with.run();
    out.assert_ok();
    assert_eq!(out.stdout, "1000\n");
}

#[test]
fn no_new_privileges_true_sets_no_new_privs() {
    let status = status_of_container_process(|c| {
        c.no_new_privileges(true);
    });
    assert_eq!(status_field(&status, "NoNewPrivs"), Some("1"), "{status}");
}

#[test]
fn no_new_privileges_false_leaves_no_new_privs_unset() {
    let status = status_of_container_process(|c| {
        c.no_new_privileges(false);
    });
    assert_eq!(status_field(&status, "NoNewPrivs"), Some("0"), "{status}");
}

#[test]
fn oom_score_adj_is_applied() {
    let own: i32 = fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = own.max(0) + 500;
    let want = want.min(1000);
    let out = sh_output(
        |c| {
            c.oom_score_adj(want);
        },
        "cat /proc/self/oom_score_adj",
    );
    assert_eq!(out.trim(), want.to_string());
}

/// With `--preserve-fds 1` fd 3 of the runtime reaches the process, and
/// nothing else does.
#[test]
fn preserve_fds_passes_fd_3_to_the_process() {
    let mut c = Container::new();
    c.sh("ls /proc/1/fd; echo through-fd3 >&3");
    c.write_config();
    let fd3 = c.host.join("fd3");
    fs::write(&fd3, "").unwrap();
    let b = c.bundle.to_string_lossy().into_owned();
    let out = c.rt_opts(
        &["run", "--bundle", &b, "--preserve-fds", "1", &c.id],
        &ExecOpts {
            fd3: Some(fd3.clone()),
            ..Default::default()
        },
    );
    out.assert_ok();
    assert_eq!(out.lines(), ["0", "1", "2", "3"], "{out}");
    assert_eq!(fs::read_to_string(&fd3).unwrap(), "through-fd3\n");
}

/// Without `--preserve-fds` only stdin/stdout/stderr are open in the process:
/// no fd of the runtime (nor the extra fd 3 it was given) leaks.
#[test]
fn without_preserve_fds_only_stdio_is_open() {
    let mut c = Container::new();
    c.sh("ls -l /proc/1/fd; echo through-fd3 >&3");
    c.write_config();
    let fd3 = c.host.join("fd3");
    fs::write(&fd3, "").unwrap();
    let b = c.bundle.to_string_lossy().into_owned();
    let out = c.rt_opts(
        &["run", "--bundle", &b, &c.id],
        &ExecOpts {
            fd3: Some(fd3.clone()),
            ..Default::default()
        },
    );
    // `>&3` fails: fd 3 is not open.
    assert_ne!(out.code, 0, "{out}");
    let fds: Vec<&str> = out
        .lines()
        .into_iter()
        .filter_map(|l| l.split_whitespace().nth(8))
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "{out}");
    assert_eq!(fs::read_to_string(&fd3).unwrap(), "");
}

#[test]
fn preserve_fds_works_with_create_and_start() {
    let mut c = Container::new();
    c.sh("echo through-fd3 >&3");
    let fd3 = c.host.join("fd3");
    fs::write(&fd3, "").unwrap();
    c.create_opts(
        &["--preserve-fds", "1"],
        &ExecOpts {
            fd3: Some(fd3.clone()),
            ..Default::default()
        },
    )
    .assert_ok();
    c.start().assert_ok();
    c.wait_status("stopped", WAIT);
    assert_eq!(fs::read_to_string(&fd3).unwrap(), "through-fd3\n");
}

#[test]
fn stdio_of_a_created_container_is_the_stdio_of_create() {
    let mut c = Container::new();
    c.sh("echo to-stdout; echo to-stderr >&2; readlink /proc/self/fd/0");
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_status("stopped", WAIT);
    assert_eq!(c.container_stdout(), "to-stdout\n/dev/null\n");
}

/// Signals the runtime's caller ignored (and the Rust runtime's own SIGPIPE) must not stay
/// ignored in the container's process: an ignored disposition survives execve.
#[test]
fn no_signal_is_ignored_in_the_container_process() {
    if skip_unless_ours() {
        return;
    }
    let mut c = Container::new();
    // Not through sh: busybox ash ignores SIGQUIT itself.
    c.args(&["/bin/grep", "SigIgn", "/proc/self/status"]);
    let mut argv = vec![
        "-c".to_string(),
        "trap '' PIPE USR1 HUP; exec \"$@\"".into(),
        "sh".into(),
    ];
    argv.extend(c.run_command_line());
    let out = exec(
        std::path::Path::new("/bin/sh"),
        &argv,
        &c.io,
        &ExecOpts::default(),
    );
    out.assert_ok();
    assert_eq!(out.stdout, "SigIgn:\t0000000000000000\n", "{out}");
}
