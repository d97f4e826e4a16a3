//! runc's CVEs replayed: each test runs the exploit inside a real container and checks that the
//! host (and the runtime binary) is untouched, printing what the attacker saw so that a reader can
//! tell the attack really ran.

mod common;

use common::*;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};

/// A running container that executes /attack/go (a script the test writes later) once, writing
/// its output to /attack/out, then idles.
fn attacker() -> (Container, PathBuf) {
    let mut a = Container::new();
    let dir = a.host.join("attack");
    fs::create_dir_all(&dir).unwrap();
    a.add_mount(json!({
        "destination": "/attack", "type": "bind",
        "source": dir.to_string_lossy(), "options": ["rbind", "rw"]
    }))
    .sh(
        "echo started; while [ ! -e /attack/go ]; do sleep 0.02; done; \
         sh /attack/go > /attack/out.tmp 2>&1; mv /attack/out.tmp /attack/out; sleep 1000",
    );
    (a, dir)
}

/// Hands `script` to the attacker and returns what it printed.
fn attack(dir: &Path, script: &str) -> String {
    fs::write(dir.join("go.tmp"), script).unwrap();
    fs::rename(dir.join("go.tmp"), dir.join("go")).unwrap();
    let out = dir.join("out");
    assert!(
        wait_until(WAIT, || out.exists()),
        "the attack never finished"
    );
    let text = fs::read_to_string(out).unwrap();
    eprintln!("attacker saw:\n{text}");
    text
}

fn file_digest(path: &Path) -> (u64, Vec<u8>) {
    let data = fs::read(path).unwrap();
    (data.len() as u64, data)
}

/// CVE-2019-5736: a process in a container must not reach the runtime binary through
/// /proc/<pid>/exe of a runtime process in its pid namespace. Container B is created (not started)
/// in A's pid namespace: its init is then a live clone of the runtime, waiting for `start`, and
/// the runtime command that created it has exited. A, root in its container, tries to read the
/// link, open the binary for reading and for writing, and look at the init's fds.
#[test]
fn cve_2019_5736_the_runtime_binary_is_unreachable_through_proc_pid_exe() {
    let (a, dir) = attacker();
    a.run_detached().assert_ok();
    a.wait_container_stdout("started", WAIT);
    let a_pid = a.pid();

    let mut b = Container::new();
    b.namespace("pid", Some(&format!("/proc/{a_pid}/ns/pid")))
        .args(&["true"]);
    b.create().assert_ok();
    let b_pid = b.pid();
    let status = fs::read_to_string(format!("/proc/{b_pid}/status")).unwrap();
    let in_a: i64 = status_field(&status, "NSpid")
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("NSpid of B's init");
    let runtime_bin = fs::canonicalize(runtime()).unwrap();
    let before = file_digest(&runtime_bin);

    let out = attack(
        &dir,
        &format!(
            "P={in_a}\n\
             echo comm=$(cat /proc/$P/comm)\n\
             readlink /proc/$P/exe && echo readlink-ok || echo readlink-denied\n\
             cat /proc/$P/exe > /dev/null && echo read-ok || echo read-denied\n\
             ( : >> /proc/$P/exe ) && echo write-ok || echo write-denied\n\
             echo fds: $(ls /proc/$P/fd)\n\
             ok=0; for f in /proc/$P/fd/*; do readlink $f && ok=1; ( : < $f ) && ok=1; done\n\
             [ $ok = 0 ] && echo fds-denied || echo fds-ok\n\
             cat /proc/$P/environ > /dev/null && echo environ-ok || echo environ-denied\n"
        ),
    );
    // The attacker did see the runtime's init in its pid namespace.
    let comm = fs::read_to_string(format!("/proc/{b_pid}/comm")).unwrap();
    assert!(
        out.contains(&format!("comm={}", comm.trim())),
        "the attacker did not see B's init:\n{out}"
    );
    for denied in [
        "readlink-denied",
        "read-denied",
        "write-denied",
        "fds-denied",
        "environ-denied",
    ] {
        assert!(out.contains(denied), "expected {denied}:\n{out}");
    }
    assert!(
        file_digest(&runtime_bin) == before,
        "the runtime binary changed"
    );
    assert_eq!(b.status(), "created");
}

/// CVE-2024-21626: process.cwd = /proc/self/fd/N must never give the process a directory of the
/// host through an fd the runtime leaked. Each N either fails cleanly or leaves the process in
/// the container; no runtime fd is open in the process.
#[test]
fn cve_2024_21626_a_cwd_through_proc_self_fd_never_reaches_the_host() {
    for n in 3..20 {
        let mut c = Container::new();
        c.cwd(&format!("/proc/self/fd/{n}"))
            .sh("echo cwd=$(readlink /proc/self/cwd); ls /proc/self/fd | tr '\\n' ' '");
        let out = c.run();
        if out.ok() {
            let cwd = out.stdout.lines().next().unwrap_or("");
            assert!(
                !cwd.contains("unreachable") && !cwd.contains(&*c.base.to_string_lossy()),
                "fd {n}: the process got a host directory: {out}"
            );
            assert_eq!(out.lines()[1], "0 1 2 3 ", "fd {n}: {out}");
        } else {
            c.assert_no_debris(None);
            check_our_message(&out, "name process.cwd", |s| s.contains("process.cwd"));
        }
    }
}

/// CVE-2019-19921 / CVE-2021-30465: mount destinations through symlinks pointing out of the
/// rootfs, in every position of the path. The targets are in a shared host tmpfs and the rootfs
/// propagation is rshared, so a mount that landed there would show on the host.
#[test]
fn mount_destinations_through_symlinks_never_land_on_the_host() {
    let mut c = Container::new();
    let t = c.host.join("target");
    let _tmpfs = HostTmpfs::shared(&t);
    for d in ["a", "b", "c", "d"] {
        fs::create_dir(t.join(d)).unwrap();
    }
    let up = "../".repeat(20);
    let rel_t = t.strip_prefix("/").unwrap().to_string_lossy().into_owned();
    let ln = |target: String, link: &str| {
        let link = c.rootfs.join(link);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, link).unwrap();
    };
    // First component, absolute.
    ln(t.to_string_lossy().into_owned(), "abs");
    // Middle component, relative and climbing out.
    ln(format!("{up}{rel_t}"), "mid/rel");
    // Last component.
    ln(t.join("c").to_string_lossy().into_owned(), "last");
    // A chain of links.
    ln("/chain2".into(), "chain1");
    ln(format!("{up}{rel_t}/d"), "chain2");
    for dest in ["/abs/a", "/mid/rel/b", "/last", "/chain1"] {
        c.add_mount(json!({
            "destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]
        }));
    }
    c.readonly(false).rootfs_propagation("rshared").sh(
        "for d in /abs/a /mid/rel/b /last /chain1; do mountpoint -q $d && echo \"$d mounted\"; \
             touch $d/written; done; echo started; while [ ! -e /tmp/go ]; do sleep 0.02; done",
    );
    let out = c.create();
    if !out.ok() {
        c.assert_no_debris(None);
    } else {
        c.start().assert_ok();
        c.wait_container_stdout("started", WAIT);
        eprintln!("container saw:\n{}", c.container_stdout());
        for d in ["a", "b", "c", "d"] {
            let m = host_mounts_mentioning(&t.join(d));
            assert!(m.is_empty(), "a mount escaped to the host at {d}: {m:?}");
        }
        fs::write(c.rootfs.join("tmp/go"), "").unwrap();
        c.wait_status("stopped", WAIT);
    }
    for d in ["a", "b", "c", "d"] {
        let entries: Vec<_> = fs::read_dir(t.join(d)).unwrap().flatten().collect();
        assert!(
            entries.is_empty(),
            "host dir {d} was written to: {entries:?}"
        );
    }
}

/// Masked and read-only paths that are symlinks to a host file: the host file is neither
/// covered (the bind would show on the host with rshared) nor changed.
#[test]
fn masked_and_readonly_paths_that_are_symlinks_to_host_files_stay_in_the_rootfs() {
    let mut c = Container::new();
    let t = c.host.join("target");
    let _tmpfs = HostTmpfs::shared(&t);
    fs::write(t.join("secret"), "host secret\n").unwrap();
    fs::write(t.join("rw"), "host rw\n").unwrap();
    std::os::unix::fs::symlink(t.join("secret"), c.rootfs.join("masklink")).unwrap();
    std::os::unix::fs::symlink(t.join("rw"), c.rootfs.join("rolink")).unwrap();
    c.config["linux"]["maskedPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/masklink"));
    c.config["linux"]["readonlyPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/rolink"));
    c.readonly(false)
        .rootfs_propagation("rshared")
        .sh("cat /masklink 2>&1; echo started; while [ ! -e /tmp/go ]; do sleep 0.02; done");
    let out = c.create();
    if out.ok() {
        c.start().assert_ok();
        c.wait_container_stdout("started", WAIT);
        eprintln!("container saw:\n{}", c.container_stdout());
        assert!(!c.container_stdout().contains("host secret"));
        let m = host_mounts_mentioning(&t.join("secret"));
        let r = host_mounts_mentioning(&t.join("rw"));
        fs::write(c.rootfs.join("tmp/go"), "").unwrap();
        c.wait_status("stopped", WAIT);
        assert!(m.is_empty() && r.is_empty(), "escaped: {m:?} {r:?}");
    } else {
        c.assert_no_debris(None);
    }
    assert_eq!(
        fs::read_to_string(t.join("secret")).unwrap(),
        "host secret\n"
    );
    assert_eq!(fs::read_to_string(t.join("rw")).unwrap(), "host rw\n");
}

/// CVE-2019-16884 style: nothing but a procfs may be mounted on /proc (a volume there would
/// hand the runtime a fake /proc), and below /proc only the files lxcfs provides.
#[test]
fn only_procfs_may_be_mounted_on_proc() {
    let fake = |c: &Container| {
        let f = c.host.join("fakeproc");
        fs::create_dir_all(f.join("sys/kernel")).unwrap();
        fs::write(f.join("kcore"), "fake").unwrap();
        f
    };
    let mut c = Container::new();
    let f = fake(&c);
    c.add_mount(json!({
        "destination": "/proc", "type": "bind", "source": f.to_string_lossy(), "options": ["rbind"]
    }))
    .args(&["true"]);
    let out = c.run();
    out.assert_fail();
    c.assert_no_debris(None);
    check_our_message(&out, "refuse a bind on /proc", |s| {
        s.contains("(/proc)") && s.contains("only a procfs")
    });

    let mut c = Container::new();
    let f = fake(&c);
    c.add_mount(json!({
        "destination": "/proc/sys", "type": "bind", "source": f.join("sys").to_string_lossy(),
        "options": ["rbind"]
    }))
    .args(&["true"]);
    let out = c.run();
    out.assert_fail();
    c.assert_no_debris(None);
    check_our_message(&out, "refuse a bind below /proc", |s| {
        s.contains("/proc/sys")
    });

    // What lxcfs does is allowed.
    let mut c = Container::new();
    let uptime = c.host.join("uptime");
    fs::write(&uptime, "12.34 56.78\n").unwrap();
    c.add_mount(json!({
        "destination": "/proc/uptime", "type": "bind", "source": uptime.to_string_lossy(),
        "options": ["bind", "ro"]
    }))
    .args(&["cat", "/proc/uptime"]);
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "12.34 56.78\n");
}

/// /proc in the image being a symlink (to a directory inside it, or out to the host) does not
/// get procfs mounted on the host nor masking applied to a fake: /proc is a real procfs, and the
/// masked paths are masked.
#[test]
fn a_proc_symlink_in_the_image_still_gets_a_real_masked_procfs() {
    for target in ["/tmp/elsewhere", "HOST"] {
        let mut c = Container::new();
        let host_dir = c.host.join("procdir");
        fs::create_dir_all(&host_dir).unwrap();
        let link = if target == "HOST" {
            host_dir.to_string_lossy().into_owned()
        } else {
            fs::create_dir_all(c.rootfs.join("tmp/elsewhere")).unwrap();
            target.to_string()
        };
        fs::remove_dir(c.rootfs.join("proc")).unwrap();
        std::os::unix::fs::symlink(&link, c.rootfs.join("proc")).unwrap();
        c.sh(
            "stat -f -c %T /proc/; cat /proc/keys | wc -c; cat /proc/timer_list | wc -c; \
              echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable || echo sys-ro",
        );
        let out = c.run();
        eprintln!("{target}: {out}");
        if out.ok() {
            assert_eq!(out.lines(), ["proc", "0", "0", "sys-ro"], "{target}: {out}");
        } else {
            c.assert_no_debris(None);
        }
        let entries: Vec<_> = fs::read_dir(&host_dir).unwrap().flatten().collect();
        assert!(entries.is_empty(), "{target}: the host dir got {entries:?}");
        assert!(host_mounts_mentioning(&host_dir).is_empty());
    }
}

/// The default masked paths of runc's spec read as empty (or are empty directories).
#[test]
fn default_masked_paths_read_empty() {
    let mut c = Container::new();
    c.sh("for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
            [ -e $p ] && echo \"$p $(cat $p 2>/dev/null | wc -c)\"; done; \
          for d in /proc/acpi /proc/scsi /sys/firmware; do [ -d $d ] && echo \"$d $(ls -A $d | wc -l)\"; done; \
          echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable || echo sysrq-ro");
    let out = c.run();
    out.assert_ok();
    let lines = out.lines();
    assert!(lines.len() > 3, "{out}");
    for l in &lines[..lines.len() - 1] {
        assert!(l.ends_with(" 0"), "not empty: {l}\n{out}");
    }
    assert_eq!(lines.last(), Some(&"sysrq-ro"), "{out}");
    assert!(
        Path::new("/sys/firmware")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "the host's /sys/firmware is not empty, so the check above means something"
    );
}

/// Device access: without an allow rule, a node the container makes (or finds bind-mounted)
/// cannot be opened: the devices cgroup denies it.
#[test]
fn a_device_without_a_cgroup_rule_cannot_be_created_or_opened() {
    // CAP_MKNOD and CAP_SYS_RAWIO, so that only the devices cgroup stands in the way.
    let caps = ["CAP_MKNOD", "CAP_SYS_RAWIO", "CAP_DAC_OVERRIDE", "CAP_KILL"];
    // As in runc, the default rules let any node be made ('m' on c *:* and b *:*): a node is
    // harmless as long as it cannot be opened.
    let mut c = Container::new();
    c.capabilities(&caps).sh(
        "mknod /dev/mem2 c 1 1 && echo mknod-ok || echo mknod-denied; \
         head -c 1 /dev/mem2 > /dev/null 2>&1 && echo read-ok || echo read-denied; \
         (echo x > /dev/mem2) 2>/dev/null && echo write-ok || echo write-denied",
    );
    let out = c.run();
    eprintln!("{out}");
    assert!(out.stdout.ends_with("read-denied\nwrite-denied\n"), "{out}");

    // mknod allowed ('m') but not read/write: the node exists and still cannot be opened.
    let mut c = Container::new();
    c.capabilities(&caps)
        .set(
            "/linux/resources/devices",
            json!([
                { "allow": false, "access": "rwm" },
                { "allow": true, "type": "c", "major": 1, "minor": 1, "access": "m" }
            ]),
        )
        .sh(
            "mknod /dev/mem2 c 1 1 && echo mknod-ok || echo mknod-denied; \
             head -c 1 /dev/mem2 > /dev/null 2>&1 && echo read-ok || echo read-denied",
        );
    let out = c.run();
    assert_eq!(out.stdout, "mknod-ok\nread-denied\n", "{out}");

    // A host device node bind-mounted in: the node is there, opening it is denied.
    let host_dev = ["/dev/mem", "/dev/kmsg", "/dev/port"]
        .into_iter()
        .find(|d| Path::new(d).exists())
        .expect("none of /dev/mem, /dev/kmsg, /dev/port exists on this host");
    eprintln!("binding the host's {host_dev}");
    let mut c = Container::new();
    c.capabilities(&caps)
        .add_mount(json!({
            "destination": "/dev/hostmem", "type": "bind", "source": host_dev, "options": ["bind"]
        }))
        .sh("head -c 1 /dev/hostmem > /dev/null 2>&1 && echo read-ok || echo read-denied");
    let out = c.run();
    assert_eq!(out.stdout, "read-denied\n", "{out}");
}
