//! Bad input: the runtime fails (non-zero exit), leaves nothing behind, and —
//! for proxmox-lxcri only — says precisely what is wrong.

mod common;

use common::*;
use serde_json::json;
use std::fs;
use std::path::Path;

/// `create` failed and left no state dir, cgroup or host mount.
#[track_caller]
fn assert_failed_cleanly(c: &Container, out: &Out) {
    out.assert_fail();
    c.assert_no_debris(None);
    let left = c.root_leftovers();
    assert!(
        left.is_empty(),
        "root dir has {left:?} after a failed create"
    );
}

/// Ours: errors go to stderr, exit code 1.
#[track_caller]
fn check_our_exit_code(out: &Out) {
    if is_ours() {
        assert_eq!(out.code, 1, "{out}");
        assert!(
            !out.stderr.trim().is_empty(),
            "no error message on stderr:\n{out}"
        );
    }
}

/// The command failed, with our exit code and (ours) an error message that does `what`.
#[track_caller]
fn assert_refused(out: &Out, what: &str, says: impl FnOnce(&str) -> bool) {
    out.assert_fail();
    check_our_exit_code(out);
    check_our_message(out, what, says);
}

/// `create` failed cleanly (see [`assert_failed_cleanly`]), with our exit code and (ours) an error
/// message that does `what`.
#[track_caller]
fn assert_create_refused(c: &Container, out: &Out, what: &str, says: impl FnOnce(&str) -> bool) {
    assert_failed_cleanly(c, out);
    check_our_exit_code(out);
    check_our_message(out, what, says);
}

/// `create --bundle` on the bundle as it is on disk (no config.json written for it).
#[track_caller]
fn create_bundle_as_is(c: &Container) -> Out {
    let b = c.bundle.to_string_lossy().into_owned();
    c.rt(&["create", "--bundle", &b, &c.id])
}

/// Joining namespace `ns` at `path` fails cleanly, naming linux.namespaces.
#[track_caller]
fn joining_namespace_fails(mut c: Container, ns: &str, path: &Path) {
    c.namespace(ns, Some(&path.to_string_lossy())).sh("true");
    let out = c.create();
    assert_create_refused(&c, &out, "name linux.namespaces", |e| {
        e.contains("linux.namespaces")
    });
}

#[test]
fn missing_bundle_fails() {
    let c = Container::new();
    let missing = c.base.join("no-such-bundle");
    let out = c.rt(&["create", "--bundle", &missing.to_string_lossy(), &c.id]);
    assert_create_refused(&c, &out, "name the bundle path", |e| {
        e.contains(&*missing.to_string_lossy())
    });
}

#[test]
fn missing_config_json_fails() {
    let c = Container::new();
    // No write_config(): call the runtime directly.
    let out = create_bundle_as_is(&c);
    assert_create_refused(&c, &out, "name config.json", |e| e.contains("config.json"));
}

/// Whether `s` contains `<digits>:<digits>` or the word "line".
fn mentions_a_position(s: &str) -> bool {
    if s.contains("line") {
        return true;
    }
    let b = s.as_bytes();
    (1..b.len().saturating_sub(1))
        .any(|i| b[i] == b':' && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit())
}

#[test]
fn malformed_config_json_fails_naming_the_file_and_position() {
    let c = Container::new();
    fs::write(
        c.bundle.join("config.json"),
        "{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {,}\n}\n",
    )
    .unwrap();
    let out = create_bundle_as_is(&c);
    assert_create_refused(&c, &out, "name config.json and the line/column", |e| {
        e.contains("config.json") && mentions_a_position(e)
    });
}

#[test]
fn config_json_of_the_wrong_shape_fails() {
    let c = Container::new();
    fs::write(c.bundle.join("config.json"), "[1, 2, 3]\n").unwrap();
    let out = create_bundle_as_is(&c);
    assert_failed_cleanly(&c, &out);
    check_our_exit_code(&out);
}

/// runc accepts any ociVersion, so this is checked for ours only.
#[test]
fn unsupported_oci_version_fails_naming_oci_version() {
    if skip_unless_ours() {
        return;
    }
    let mut c = Container::new();
    c.set("/ociVersion", json!("2.0.0")).sh("true");
    let out = c.create();
    assert_create_refused(&c, &out, "name ociVersion", |e| e.contains("ociVersion"));
}

#[test]
fn missing_rootfs_fails_naming_root_path() {
    let mut c = Container::new();
    c.set("/root/path", json!("no-such-rootfs")).sh("true");
    let out = c.create();
    assert_create_refused(&c, &out, "name root.path", |e| e.contains("root.path"));
}

#[test]
fn empty_process_args_fail_naming_process_args() {
    let mut c = Container::new();
    c.set("/process/args", json!([]));
    let out = c.run();
    assert_failed_cleanly(&c, &out);
    check_our_message(&out, "name process.args", |e| e.contains("process.args"));
}

#[test]
fn an_executable_that_does_not_exist_fails_run_and_leaves_nothing() {
    let mut c = Container::new();
    c.args(&["/no/such/program"]);
    let out = c.run();
    assert_failed_cleanly(&c, &out);
    check_our_message(&out, "name the program", |e| e.contains("/no/such/program"));
}

#[test]
fn creating_a_duplicate_id_fails_and_keeps_the_first_container() {
    let mut c = Container::new();
    c.sh("echo started; sleep 100");
    c.create().assert_ok();
    let pid = c.pid();
    let out = c.create();
    assert_refused(&out, "say \"already exists\"", |e| {
        e.contains("already exists")
    });
    let st = c.state_json();
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"].as_i64(), Some(pid));
    assert!(pid_alive(pid));
    // The first container still works.
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    assert_eq!(c.container_stdout().matches("started").count(), 1);
}

#[test]
fn ids_with_a_slash_or_dot_dot_are_rejected() {
    let c = Container::new();
    c.write_config();
    let b = c.bundle.to_string_lossy().into_owned();
    let escape = format!("{}-escape", c.id);
    for bad in [
        "a/b".to_string(),
        "..".to_string(),
        format!("../{escape}"),
        "".to_string(),
    ] {
        let out = c.rt(&["create", "--bundle", &b, &bad]);
        assert_refused(&out, "name the id", |e| e.contains("id"));
        let left = c.root_leftovers();
        assert!(left.is_empty(), "id {bad:?}: root dir has {left:?}");
    }
    let escaped = Path::new(STATE_BASE).join(&escape);
    let exists = escaped.exists();
    let _ = fs::remove_dir_all(&escaped);
    assert!(!exists, "state dir escaped the root: {}", escaped.display());
    assert!(cgroup_dirs(&escape).is_empty());
    assert!(c.cgroup_dirs().is_empty());
}

#[test]
fn commands_on_an_unknown_container_fail_saying_it_does_not_exist() {
    let c = Container::new();
    fs::create_dir_all(&c.root).unwrap();
    for args in [
        vec!["state", c.id.as_str()],
        vec!["start", c.id.as_str()],
        vec!["kill", c.id.as_str(), "KILL"],
        vec!["delete", c.id.as_str()],
    ] {
        let out = c.rt(&args);
        assert_refused(&out, "say \"does not exist\"", |e| {
            e.contains("does not exist") && e.contains(&c.id)
        });
    }
}

#[test]
fn delete_force_of_an_already_deleted_container_succeeds() {
    let mut c = Container::new();
    c.sh("sleep 100");
    c.create().assert_ok();
    c.delete_force().assert_ok();
    c.state().assert_fail();
    c.delete_force().assert_ok();
    c.assert_no_debris(None);
}

#[test]
fn an_unknown_signal_fails_naming_the_signal_and_leaves_the_container_running() {
    let mut c = Container::new();
    c.sh("echo started; sleep 100");
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    for sig in ["FOO", "SIGFOO", "99999", "-1"] {
        let out = c.kill(Some(sig));
        assert_refused(&out, "name the signal", |e| e.contains(sig));
    }
    assert_eq!(c.status(), "running");
}

/// runc accepts relative destinations (with a warning, relative to /); ours
/// rejects them, so this is checked for ours only.
#[test]
fn a_relative_mount_destination_fails_naming_the_mount() {
    if skip_unless_ours() {
        return;
    }
    let mut c = Container::new();
    // Index 7: after the seven default mounts.
    c.add_mount(json!({ "destination": "data", "type": "tmpfs", "source": "tmpfs" }))
        .sh("true");
    let out = c.create();
    assert_create_refused(&c, &out, "name mounts[7].destination", |e| {
        e.contains("mounts[7].destination")
    });
}

/// A symlink in the rootfs pointing to a host dir must be resolved inside the
/// rootfs: the mount must not land on the host.
#[test]
fn a_mount_destination_through_a_symlink_to_a_host_dir_stays_in_the_rootfs() {
    let mut c = Container::new();
    let target = c.host.join("target");
    fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, c.rootfs.join("evil")).unwrap();
    c.add_mount(json!({
        "destination": "/evil/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]
    }))
    .readonly(false)
    .sh("echo started; echo data > /evil/x/file; while [ ! -e /tmp/go ]; do sleep 0.02; done");
    let out = c.create();
    // Refusing is acceptable; mounting on the host is not.
    if out.ok() {
        c.start().assert_ok();
        c.wait_container_stdout("started", WAIT);
        assert!(
            host_mounts_mentioning(&target).is_empty(),
            "the mount escaped to the host: {:?}",
            host_mounts_mentioning(&target)
        );
        fs::write(c.rootfs.join("tmp/go"), "").unwrap();
        c.wait_status("stopped", WAIT);
    } else {
        assert_failed_cleanly(&c, &out);
    }
    let entries: Vec<_> = fs::read_dir(&target).unwrap().flatten().collect();
    assert!(entries.is_empty(), "host dir was written to: {entries:?}");
    assert!(host_mounts_mentioning(&target).is_empty());
}

#[test]
fn a_network_namespace_path_that_is_a_uts_namespace_fails() {
    let uts = format!("/proc/{}/ns/uts", std::process::id());
    joining_namespace_fails(Container::new(), "network", Path::new(&uts));
}

#[test]
fn a_namespace_path_that_is_a_regular_file_fails() {
    let c = Container::new();
    let file = c.host.join("not-a-namespace");
    fs::write(&file, "").unwrap();
    joining_namespace_fails(c, "network", &file);
}

#[test]
fn a_namespace_path_that_does_not_exist_fails() {
    let c = Container::new();
    let missing = c.host.join("no-such-ns");
    joining_namespace_fails(c, "ipc", &missing);
}

#[test]
fn a_bind_mount_of_a_missing_source_fails_and_leaves_nothing() {
    let mut c = Container::new();
    let missing = c.host.join("no-such-source");
    c.add_mount(json!({
        "destination": "/data", "type": "bind",
        "source": missing.to_string_lossy(), "options": ["bind"]
    }))
    .sh("true");
    let out = c.create();
    assert_create_refused(&c, &out, "name the mount", |e| e.contains("mounts[7]"));
}

/// A label the native engine cannot apply is never silently dropped: with no delegate engine
/// configured (see tests/delegate.rs for the delegation), it is refused naming the field.
#[test]
fn lsm_labels_that_cannot_be_applied_are_refused_naming_the_field() {
    if skip_unless_ours() {
        return; // runc ignores them where the LSM is disabled
    }
    for (ptr, field) in [
        ("/process/apparmorProfile", "process.apparmorProfile"),
        ("/process/selinuxLabel", "process.selinuxLabel"),
        ("/linux/mountLabel", "linux.mountLabel"),
    ] {
        let mut c = Container::new();
        c.set(ptr, serde_json::json!("some_label"));
        let out = c.run_native_only();
        out.assert_fail();
        assert!(out.stderr.contains(field), "{field}: {out}");
        c.assert_no_debris(None);
    }
}
