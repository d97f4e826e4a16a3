//! Differential tests: the same bundle is run by runc (`/usr/sbin/runc`,
//! always) and by the runtime under test; what the process sees, the exit
//! codes, the side effects on the bundle and the shape of `state`/`list`
//! output must be the same.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Two containers with the same config: `.0` for runc, `.1` for the runtime
/// under test.
fn pair(setup: impl Fn(&mut Container)) -> (Container, Container) {
    let mut reference = Container::runc();
    let mut tested = Container::new();
    setup(&mut reference);
    setup(&mut tested);
    (reference, tested)
}

/// Runs both with `run`; asserts equal exit codes and (after `normalize`)
/// equal stdout. Returns the reference output.
fn compare_run_normalized(
    setup: impl Fn(&mut Container),
    normalize: impl Fn(&str) -> String,
) -> Out {
    let (reference, tested) = pair(setup);
    let want = reference.run();
    let got = tested.run();
    assert_eq!(
        got.code, want.code,
        "exit codes differ\n== runc ==\n{want}\n== tested ==\n{got}"
    );
    let (w, g) = (normalize(&want.stdout), normalize(&got.stdout));
    if w != g {
        panic!(
            "stdout differs\n== runc ==\n{w}\n== tested ==\n{g}\n\
             == raw runc ==\n{want}\n== raw tested ==\n{got}"
        );
    }
    // Side effects on the bundle (mountpoints, cwd created in the rootfs...).
    assert_eq!(
        tree(&tested.bundle),
        tree(&reference.bundle),
        "the bundles differ after the run"
    );
    want
}

fn compare_run(setup: impl Fn(&mut Container)) -> Out {
    compare_run_normalized(setup, str::to_string)
}

/// `(relative path, file type, mode)` of everything below `dir`.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let kind = if md.is_dir() {
                "d"
            } else if md.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            out.push(format!(
                "{rel} {kind} {:o}",
                md.permissions().mode() & 0o7777
            ));
            if md.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v
}

#[test]
fn process_identity_and_environment_match_runc() {
    compare_run(|c| {
        c.sh("echo $$; id; hostname; umask; ulimit -n; ulimit -Hn; pwd; \
              tr '\\0' '\\n' < /proc/self/environ");
    });
}

#[test]
fn non_root_user_with_groups_umask_and_cwd_matches_runc() {
    compare_run(|c| {
        c.user(1000, 1000)
            .additional_gids(&[20, 30])
            .umask(0o077)
            .cwd("/home/test/new")
            .rlimit("RLIMIT_NOFILE", 300, 600)
            .sh("id; umask; pwd; ulimit -n; ulimit -Hn; tr '\\0' '\\n' < /proc/1/environ");
    });
}

#[test]
fn process_status_capabilities_and_limits_match_runc() {
    compare_run(|c| {
        c.capabilities(&["CAP_CHOWN", "CAP_KILL", "CAP_SYS_CHROOT"])
            .oom_score_adj(600)
            .sh(
                // SigIgn is left out: runc passes on what its caller ignored (signal 32
                // here); ours resets every disposition (see process.rs).
                "grep -E '^(Umask|Uid|Gid|Groups|Cap|NoNewPrivs|Seccomp|SigBlk)' \
                 /proc/self/status; cat /proc/self/limits /proc/self/oom_score_adj",
            );
    });
}

#[test]
fn dev_contents_match_runc() {
    compare_run(|c| {
        c.add_device(json!({
            "path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
            "fileMode": 0o666, "uid": 0, "gid": 0
        }))
        .sh("cd /dev && for f in * pts/* shm mqueue; do \
               stat -c '%n %F %a %u %g %t %T' \"$f\"; \
               [ -L \"$f\" ] && readlink \"$f\"; done; true");
    });
}

/// Mount table without mount ids and without the root field (the cgroup
/// mounts show the container's own cgroup path there).
fn normalize_mountinfo(s: &str) -> String {
    parse_mountinfo(s)
        .into_iter()
        .map(|m| {
            format!(
                "{} {} {} {} {} {}",
                m.mount_point,
                m.options.join(","),
                m.optional
                    .iter()
                    .map(|t| t.split(':').next().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
                m.fstype,
                m.source,
                m.super_options.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn mount_table_matches_runc() {
    compare_run_normalized(
        |c| {
            c.sh("cat /proc/self/mountinfo");
        },
        normalize_mountinfo,
    );
}

#[test]
fn mount_table_with_extra_mounts_matches_runc() {
    compare_run_normalized(
        |c| {
            let src = c.host.join("data");
            fs::create_dir_all(&src).unwrap();
            let file = c.host.join("file");
            fs::write(&file, "x").unwrap();
            c.add_mount(json!({
                "destination": "/data", "type": "bind",
                "source": src.to_string_lossy(), "options": ["rbind", "ro", "nosuid"]
            }))
            .add_mount(json!({
                "destination": "/etc/file", "type": "bind",
                "source": file.to_string_lossy(), "options": ["bind"]
            }))
            .add_mount(json!({
                "destination": "/run/a/b", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "noexec", "mode=0750", "size=2m"]
            }))
            .readonly(false)
            .sh("cat /proc/self/mountinfo");
        },
        // The bind sources (the tests' own host dirs) only show in the
        // root field, which is left out.
        normalize_mountinfo,
    );
}

#[test]
fn user_namespace_view_matches_runc() {
    let (reference, tested) = pair(|c| {
        c.namespace("user", None)
            .uid_mappings(&[(0, 100000, 65536)])
            .gid_mappings(&[(0, 100000, 65536)])
            .sh(
                "cat /proc/self/uid_map /proc/self/gid_map; id; ls -ln /etc; \
                 grep Cap /proc/self/status; cat /proc/self/mountinfo",
            );
        c.chown_rootfs(100000, 100000);
    });
    let want = reference.run();
    let got = tested.run();
    assert_eq!(
        got.code, want.code,
        "== runc ==\n{want}\n== tested ==\n{got}"
    );
    let norm = |s: &str| {
        s.lines()
            .map(|l| {
                if l.starts_with('-') || l.starts_with('d') || l.starts_with('l') {
                    // `ls -ln`: dates differ; keep mode, owner, group, name.
                    let f: Vec<&str> = l.split_whitespace().collect();
                    format!("{} {} {} {}", f[0], f[2], f[3], f[f.len() - 1])
                } else if l.starts_with(|c: char| c.is_ascii_digit()) && l.contains(" - ") {
                    normalize_mountinfo(l)
                } else {
                    l.split_whitespace().collect::<Vec<_>>().join(" ")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(norm(&got.stdout), norm(&want.stdout));
}

#[test]
fn exit_codes_match_runc() {
    for script in [
        "exit 0",
        "exit 3",
        "exit 255",
        "kill -TERM $$",
        "kill -KILL $$",
        "kill -USR1 $$",
    ] {
        let out = compare_run(|c| {
            c.remove_namespace("pid").sh(script);
        });
        eprintln!("{script}: {}", out.code);
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn state_and_list_output_have_the_same_shape_as_runc() {
    let (reference, tested) = pair(|c| {
        c.sh("echo started; while [ ! -e /tmp/go ]; do sleep 0.02; done");
    });
    let mut steps: Vec<(String, BTreeSet<String>, BTreeSet<String>)> = Vec::new();
    let mut record = |step: &str| {
        let w = reference.state_json();
        let g = tested.state_json();
        assert_eq!(g["status"], w["status"], "status after {step}");
        steps.push((step.to_string(), keys(&w), keys(&g)));
        for (name, c) in [("runc", &reference), ("tested", &tested)] {
            let out = c.rt(&["list", "--format", "json"]);
            out.assert_ok();
            let v: Value = serde_json::from_str(&out.stdout).unwrap();
            let k = keys(&v[0]);
            steps.push((format!("list after {step} ({name})"), k.clone(), k));
        }
    };
    reference.create().assert_ok();
    tested.create().assert_ok();
    record("create");
    reference.start().assert_ok();
    tested.start().assert_ok();
    reference.wait_container_stdout("started", WAIT);
    tested.wait_container_stdout("started", WAIT);
    record("start");
    fs::write(reference.rootfs.join("tmp/go"), "").unwrap();
    fs::write(tested.rootfs.join("tmp/go"), "").unwrap();
    reference.wait_status("stopped", WAIT);
    tested.wait_status("stopped", WAIT);
    record("exit");
    for (step, w, g) in &steps {
        assert_eq!(g, w, "state keys after {step}");
    }
    // list's keys equal state's keys in runc.
    let runc_list: Value =
        serde_json::from_str(&reference.rt(&["list", "--format", "json"]).stdout).unwrap();
    let tested_list: Value =
        serde_json::from_str(&tested.rt(&["list", "--format", "json"]).stdout).unwrap();
    assert_eq!(keys(&tested_list[0]), keys(&runc_list[0]));
}

#[test]
fn failing_commands_exit_with_the_same_codes_as_runc() {
    let (reference, tested) = pair(|c| {
        c.sh("echo started; while [ ! -e /tmp/go ]; do sleep 0.02; done");
    });
    let mut rows = Vec::new();
    for c in [&reference, &tested] {
        let mut codes = Vec::new();
        fs::create_dir_all(&c.root).unwrap();
        codes.push(c.state().code); // does not exist
        codes.push(c.kill(Some("KILL")).code);
        codes.push(c.delete().code);
        codes.push(c.delete_force().code);
        c.create().assert_ok();
        codes.push(c.create().code); // duplicate
        codes.push(c.kill(Some("NOSUCHSIG")).code);
        c.start().assert_ok();
        c.wait_container_stdout("started", WAIT);
        codes.push(c.start().code); // already running
        codes.push(c.delete().code); // running
        fs::write(c.rootfs.join("tmp/go"), "").unwrap();
        c.wait_status("stopped", WAIT);
        codes.push(c.kill(Some("TERM")).code); // stopped
        codes.push(c.start().code); // stopped
        codes.push(c.delete().code);
        codes.push(c.state().code);
        eprintln!("{}: {codes:?}", c.runtime.display());
        rows.push(codes);
    }
    assert_eq!(
        rows[1], rows[0],
        "exit codes (tested vs runc) for: state/kill/delete/delete -f of unknown, \
         duplicate create, bad signal, start running, delete running, kill stopped, \
         start stopped, delete stopped, state deleted"
    );
}

#[test]
fn spec_output_has_the_same_shape_as_runc() {
    let (reference, tested) = pair(|_| {});
    let mut specs = Vec::new();
    for c in [&reference, &tested] {
        let dir = c.host.join("spec");
        fs::create_dir_all(&dir).unwrap();
        c.rt(&["spec", "--bundle", &dir.to_string_lossy()])
            .assert_ok();
        let v: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        specs.push(v);
    }
    fn paths(v: &Value, prefix: String, out: &mut BTreeSet<String>) {
        if let Some(o) = v.as_object() {
            for (k, x) in o {
                let p = format!("{prefix}/{k}");
                out.insert(p.clone());
                paths(x, p, out);
            }
        }
    }
    let (mut w, mut g) = (BTreeSet::new(), BTreeSet::new());
    paths(&specs[0], String::new(), &mut w);
    paths(&specs[1], String::new(), &mut g);
    let missing: Vec<_> = w.difference(&g).collect();
    assert!(
        missing.is_empty(),
        "keys of runc's spec missing in ours: {missing:?}"
    );
    // The same defaults where it matters for a drop-in.
    for ptr in [
        "/process/terminal",
        "/process/args",
        "/process/cwd",
        "/root",
        "/linux/namespaces",
        "/linux/maskedPaths",
        "/linux/readonlyPaths",
        "/process/capabilities",
    ] {
        assert_eq!(specs[1].pointer(ptr), specs[0].pointer(ptr), "{ptr}");
    }
}
