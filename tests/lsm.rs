//! LSM labels: `process.apparmorProfile` confines the container's process (and `exec`'d ones,
//! `exec --apparmor`), and a label whose LSM is not enabled is refused naming its field before
//! anything exists. This host has neither AppArmor nor SELinux: the refusals run here; the
//! AppArmor confinement runs in the Debian guest, whose kernel has AppArmor enabled
//! (`scripts/test-guest lsm`). SELinux labels applied with a policy loaded: tests/selinux.rs.
//! Every test here runs native-only (no delegate engine configured, see `native_only`): crun and
//! runc apply AppArmor profiles too, and a fallback to them must not make our tests pass.

mod common;

use common::*;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};

fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

#[track_caller]
fn refused_before_anything_exists(ptr: &str, value: &str, field: &str, why: &str) {
    let mut c = Container::new();
    c.set(ptr, json!(value)).sh("echo ran");
    let out = c.run();
    out.assert_fail();
    assert!(!out.stdout.contains("ran"), "the container ran:\n{out}");
    check_our_message(&out, &format!("name {field} and say {why}"), |e| {
        e.contains(field) && e.contains(value) && e.contains(why)
    });
    c.assert_no_debris(None);
}

#[test]
fn an_apparmor_profile_is_refused_where_apparmor_is_not_enabled() {
    native_only();
    if apparmor_enabled() {
        eprintln!("SKIP: AppArmor is enabled here; the refusal runs on hosts without it");
        return;
    }
    refused_before_anything_exists(
        "/process/apparmorProfile",
        "lxcri-test-profile",
        "process.apparmorProfile",
        "AppArmor is not enabled",
    );
}

#[test]
fn selinux_labels_are_refused_where_selinux_is_not_enabled() {
    native_only();
    if selinux_enabled() {
        eprintln!("SKIP: SELinux is enabled here; the refusal runs on hosts without it");
        return;
    }
    let label = "system_u:system_r:container_t:s0:c1,c2";
    refused_before_anything_exists(
        "/process/selinuxLabel",
        label,
        "process.selinuxLabel",
        "SELinux is not enabled",
    );
    let label = "system_u:object_r:container_file_t:s0:c1,c2";
    refused_before_anything_exists(
        "/linux/mountLabel",
        label,
        "linux.mountLabel",
        "SELinux is not enabled",
    );
}

/// "unconfined" is what every process gets without AppArmor: asking for it is no reason to fail.
/// (runc 1.1 writes it anyway and fails with EINVAL where AppArmor is off.)
#[test]
fn the_unconfined_profile_runs_with_or_without_apparmor() {
    native_only();
    if !apparmor_enabled() && skip_unless_ours() {
        return;
    }
    let mut c = Container::new();
    c.set("/process/apparmorProfile", json!("unconfined"))
        .sh("echo ran");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "ran\n", "{out}");
}

#[test]
fn exec_apparmor_is_refused_where_apparmor_is_not_enabled() {
    native_only();
    if apparmor_enabled() {
        eprintln!("SKIP: AppArmor is enabled here; the refusal runs on hosts without it");
        return;
    }
    let mut c = Container::new();
    c.start_idle();
    let marker = c.host.join("exec-ran");
    let touch = format!("touch {}", marker.display());
    let out = c.exec_in(&["--apparmor", "lxcri-test-profile"], &["sh", "-c", &touch]);
    out.assert_fail();
    check_our_message(&out, "name the profile and the reason", |e| {
        e.contains("apparmorProfile") && e.contains("AppArmor is not enabled")
    });
    assert!(!marker.exists(), "the exec'd process ran");
    assert_eq!(c.status(), "running");
    if is_ours() {
        let out = c.exec_in(
            &["--process-label", "system_u:system_r:container_t:s0"],
            &["true"],
        );
        out.assert_fail();
        assert!(out.stderr.contains("SELinux is not enabled"), "{out}");
    }
}

// ---------------------------------------------------------------------------
// Confinement: where AppArmor is enabled (the guest).
// ---------------------------------------------------------------------------

/// A profile loaded into the kernel for one test, removed on drop.
struct Profile {
    name: String,
    file: PathBuf,
    parser: PathBuf,
}

impl Profile {
    /// Everything allowed but reading /secret.txt.
    fn load(c: &Container) -> Profile {
        // LXCRI_TEST_APPARMOR_PARSER: a parser that is not installed (e.g. unpacked from the .deb).
        let parser = std::env::var_os("LXCRI_TEST_APPARMOR_PARSER")
            .map(PathBuf::from)
            .into_iter()
            .chain(["/sbin/apparmor_parser", "/usr/sbin/apparmor_parser"].map(PathBuf::from))
            .find(|p| p.exists())
            .expect("AppArmor is enabled but apparmor_parser is missing: scripts/install-deps");
        assert!(
            Path::new("/sys/kernel/security/apparmor/profiles").exists(),
            "securityfs is not mounted at /sys/kernel/security (scripts/test-guest mounts it)"
        );
        let name = format!("lxcri-test-{}", c.n);
        let file = c.host.join("profile");
        fs::write(
            &file,
            format!(
                "profile {name} flags=(attach_disconnected,mediate_deleted) {{\n\
                 file,\n capability,\n network,\n signal,\n ptrace,\n unix,\n\
                 mount,\n umount,\n pivot_root,\n deny /secret.txt r,\n}}\n"
            ),
        )
        .unwrap();
        let f = file.to_string_lossy().into_owned();
        host_cmd(
            &parser.to_string_lossy(),
            &["--replace", "--skip-cache", &f],
        )
        .assert_ok();
        Profile { name, file, parser }
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let f = self.file.to_string_lossy().into_owned();
        let _ = host_cmd(&self.parser.to_string_lossy(), &["--remove", &f]);
    }
}

const SHOW: &str =
    "cat /proc/self/attr/apparmor/current 2>/dev/null || cat /proc/self/attr/current; \
                    cat /ok.txt; cat /secret.txt 2>/dev/null || echo secret-denied";

#[test]
fn an_apparmor_profile_confines_the_container_process_and_exec() {
    native_only();
    if !apparmor_enabled() {
        eprintln!(
            "SKIP (LOUD): AppArmor is not enabled on this host, so no profile can confine \
             anything here; this test runs in the Debian guest: scripts/test-guest lsm"
        );
        return;
    }
    let mut c = Container::new();
    let profile = Profile::load(&c);
    fs::write(c.rootfs.join("ok.txt"), "ok\n").unwrap();
    fs::write(c.rootfs.join("secret.txt"), "secret\n").unwrap();
    // As a user other than root: the label is written after the switch to it.
    c.set("/process/apparmorProfile", json!(profile.name))
        .user(1000, 1000);
    c.sh(SHOW);
    let out = c.run();
    out.assert_ok();
    let want = format!("{} (enforce)", profile.name);
    assert_eq!(out.lines(), [want.as_str(), "ok", "secret-denied"], "{out}");

    // A process joined with exec gets the container's profile; --apparmor overrides it.
    let mut c = Container::new();
    fs::write(c.rootfs.join("ok.txt"), "ok\n").unwrap();
    fs::write(c.rootfs.join("secret.txt"), "secret\n").unwrap();
    c.set("/process/apparmorProfile", json!(profile.name));
    c.start_idle();
    for user in ["0:0", "1000:1000"] {
        let out = c.exec_in(&["--user", user], &["sh", "-c", SHOW]);
        out.assert_ok();
        assert_eq!(
            out.lines(),
            [want.as_str(), "ok", "secret-denied"],
            "{user}: {out}"
        );
    }
    let out = c.exec_in(
        &["--apparmor", "unconfined", "--user", "1000:1000"],
        &["sh", "-c", SHOW],
    );
    out.assert_ok();
    assert_eq!(out.lines(), ["unconfined", "ok", "secret"], "{out}");
}

#[test]
fn an_unknown_apparmor_profile_fails_naming_it() {
    native_only();
    if !apparmor_enabled() {
        eprintln!(
            "SKIP (LOUD): AppArmor is not enabled on this host; this test runs in the Debian \
             guest: scripts/test-guest lsm"
        );
        return;
    }
    let mut c = Container::new();
    let name = format!("lxcri-test-missing-{}", c.n);
    c.set("/process/apparmorProfile", json!(name))
        .sh("echo ran");
    let out = c.run();
    out.assert_fail();
    assert!(
        !out.stdout.contains("ran"),
        "the container ran unconfined:\n{out}"
    );
    check_our_message(&out, "name the profile", |e| {
        e.contains("process.apparmorProfile") && e.contains(&name)
    });
    eprintln!("refused as expected: {}", out.stderr.trim());
}
