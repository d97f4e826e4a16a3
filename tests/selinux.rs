//! SELinux labels where SELinux is enabled: `process.selinuxLabel` is the container process's
//! context (and that of processes joined with `exec`, `exec --process-label` overriding it),
//! `linux.mountLabel` the context of the filesystems mounted for it, and a label the loaded policy
//! does not know fails naming its field, leaving nothing behind.
//!
//! A separate target from tests/lsm.rs because it needs its own boot: a kernel runs one major LSM,
//! and the Debian guest boots with AppArmor for lsm.rs. `scripts/test-guest selinux` boots it with
//! SELinux instead (`lsm=...,selinux`), mounts selinuxfs and loads Debian's default reference
//! policy (selinux-policy-default), enforcing. The tests prove the runtime gives processes and
//! mounts the contexts asked for, as the kernel validates and enforces them; not that a given
//! policy confines a container (Debian's reference policy has no container module; that is the
//! policy's job, e.g. container-selinux on Fedora). That policy allows no domain change under
//! no_new_privs (`nnp_transition`), so the label tests turn noNewPrivileges off, and one test
//! shows the refusal with it on.
//! Where SELinux is not enabled (this host) every test here says so loudly and returns; the
//! refusals for that case are in tests/lsm.rs.

mod common;

use common::*;
use serde_json::json;
use std::ffi::CString;
use std::path::Path;

/// Types of Debian's default reference policy (MCS: the categories are what keeps containers
/// apart in container policies; here they show the whole context is passed through). Enforcing,
/// the runtime (the guest's kernel_t) may enter init_t, which may run files of any filesystem
/// type (the bundle's tmpfs); the exec label differs in its categories.
const PROCESS_LABEL: &str = "system_u:system_r:init_t:s0:c1,c2";
const EXEC_LABEL: &str = "system_u:system_r:init_t:s0:c3,c4";
const MOUNT_LABEL: &str = "system_u:object_r:tmp_t:s0:c1,c2";
/// Well formed, but no such type in the policy.
const UNKNOWN_PROCESS_LABEL: &str = "system_u:system_r:lxcri_no_such_t:s0";
const UNKNOWN_MOUNT_LABEL: &str = "system_u:object_r:lxcri_no_such_t:s0";

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// True (after a loud line) when SELinux is not enabled here or no policy is loaded.
fn skip_without_selinux() -> bool {
    if !selinux_enabled() {
        eprintln!(
            "SKIP (LOUD): SELinux is not enabled on this host, so no label can be applied here; \
             this test runs in the Debian guest booted with SELinux: scripts/test-guest selinux"
        );
        return true;
    }
    native_only();
    // Without a policy the kernel knows no context at all: a broken setup, not a skip.
    let current = std::fs::read_to_string("/proc/self/attr/current").unwrap_or_default();
    assert!(
        current.trim_end_matches(['\0', '\n']).contains(':'),
        "SELinux is enabled but no policy is loaded (our context is {current:?}): \
         load_policy (scripts/test-guest does it)"
    );
    false
}

/// The `security.selinux` xattr of `path` (the host's view, e.g. through /proc/PID/root).
fn file_context(path: &Path) -> String {
    let name = CString::new("security.selinux").unwrap();
    let v = sys::xattr::get(path, &name)
        .unwrap_or_else(|e| panic!("reading the context of {}: {e}", path.display()));
    String::from_utf8_lossy(&v)
        .trim_end_matches('\0')
        .to_string()
}

const SHOW_CONTEXT: &str = "cat /proc/self/attr/current; echo";

#[test]
fn the_selinux_label_is_the_context_of_the_container_process_and_of_exec() {
    if skip_without_selinux() {
        return;
    }
    // Control: without a label the process keeps its parent's context, not ours.
    let mut c = Container::new();
    c.sh(SHOW_CONTEXT);
    let out = c.run();
    out.assert_ok();
    let unlabelled = out.stdout.trim_end_matches(['\0', '\n']).to_string();
    assert!(unlabelled.contains(':'), "{out}");
    assert_ne!(unlabelled, PROCESS_LABEL, "{out}");

    // As a user other than root too: the label is written after the switch to it.
    for (uid, gid) in [(0, 0), (1000, 1000)] {
        let mut c = Container::new();
        c.set("/process/selinuxLabel", json!(PROCESS_LABEL))
            .set("/process/noNewPrivileges", json!(false))
            .user(uid, gid)
            .sh(SHOW_CONTEXT);
        let out = c.run();
        out.assert_ok();
        assert_eq!(
            out.stdout.trim_end_matches(['\0', '\n']),
            PROCESS_LABEL,
            "uid {uid}: {out}"
        );
    }

    // exec: the container's label, or --process-label's.
    let mut c = Container::new();
    c.set("/process/selinuxLabel", json!(PROCESS_LABEL))
        .set("/process/noNewPrivileges", json!(false));
    let pid = c.start_idle();
    let init = std::fs::read_to_string(format!("/proc/{pid}/attr/current")).unwrap();
    assert_eq!(init.trim_end_matches(['\0', '\n']), PROCESS_LABEL);
    for user in ["0:0", "1000:1000"] {
        let out = c.exec_in(&["--user", user], &["sh", "-c", SHOW_CONTEXT]);
        out.assert_ok();
        assert_eq!(
            out.stdout.trim_end_matches(['\0', '\n']),
            PROCESS_LABEL,
            "{user}: {out}"
        );
    }
    let out = c.exec_in(
        &["--process-label", EXEC_LABEL],
        &["sh", "-c", SHOW_CONTEXT],
    );
    out.assert_ok();
    assert_eq!(
        out.stdout.trim_end_matches(['\0', '\n']),
        EXEC_LABEL,
        "{out}"
    );

    // A label the policy does not know: exec fails naming it, the container runs on.
    let marker = c.host.join("exec-ran");
    let touch = format!("touch {}", marker.display());
    let out = c.exec_in(
        &["--process-label", UNKNOWN_PROCESS_LABEL],
        &["sh", "-c", &touch],
    );
    out.assert_fail();
    check_our_message(&out, "name the label", |e| {
        e.contains("selinuxLabel")
            && e.contains(UNKNOWN_PROCESS_LABEL)
            && e.contains("not a valid context")
    });
    assert!(!marker.exists(), "the exec'd process ran");
    assert_eq!(c.status(), "running");
}

/// Enforcing: the kernel lets a no_new_privs process change domains only where the policy allows
/// it (`nnp_transition`), and Debian's reference policy has no such rule for these domains: the
/// container's execve is refused, and the error says why and what to change.
#[test]
fn under_no_new_privileges_a_transition_the_policy_refuses_fails_saying_why() {
    if skip_without_selinux() {
        return;
    }
    let enforce = std::fs::read_to_string("/sys/fs/selinux/enforce").unwrap_or_default();
    if enforce.trim() != "1" {
        eprintln!(
            "SKIP (LOUD): SELinux is permissive here, nothing is refused; scripts/test-guest \
             selinux boots it enforcing"
        );
        return;
    }
    let mut c = Container::new();
    c.set("/process/selinuxLabel", json!(PROCESS_LABEL))
        .set("/process/noNewPrivileges", json!(true))
        .sh("echo ran");
    let out = c.run();
    out.assert_fail();
    assert!(!out.stdout.contains("ran"), "the container ran:\n{out}");
    check_our_message(&out, "name the label and noNewPrivileges", |e| {
        e.contains("process.selinuxLabel")
            && e.contains(PROCESS_LABEL)
            && e.contains("noNewPrivileges")
            && e.contains("nnp_transition")
    });
    c.assert_no_debris(None);
}

#[test]
fn the_mount_label_is_the_context_of_the_container_filesystems() {
    if skip_without_selinux() {
        return;
    }
    let mut c = Container::new();
    c.set("/linux/mountLabel", json!(MOUNT_LABEL))
        .add_mount(json!({
            "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "size=1m"]
        }));
    c.args(&[
        "sh",
        "-c",
        "touch /scratch/file && grep -E ' /(scratch|dev|dev/shm|dev/pts) ' /proc/self/mountinfo \
         && sleep 1000000",
    ]);
    c.run_detached().assert_ok();
    c.wait_status("running", WAIT);
    c.wait_container_stdout("/scratch", WAIT * 6);
    let pid = c.pid();

    // What the container sees: each new filesystem that takes a context was mounted with it.
    let mounts = parse_mountinfo(&c.container_stdout());
    let want = format!("context=\"{MOUNT_LABEL}\"");
    for dest in ["/scratch", "/dev", "/dev/shm", "/dev/pts"] {
        let m = mounts
            .iter()
            .find(|m| m.mount_point == dest)
            .unwrap_or_else(|| panic!("{dest} is not mounted:\n{}", c.container_stdout()));
        // (The line, not super_options: an MCS context has a comma.)
        assert!(m.line.contains(&want), "{dest} has no {want}: {}", m.line);
    }

    // What the kernel labels the files with (mqueue takes no context=: its root is relabelled).
    let root = Path::new("/proc").join(pid.to_string()).join("root");
    for f in [
        "scratch",
        "scratch/file",
        "dev",
        "dev/shm",
        "dev/pts",
        "dev/mqueue",
    ] {
        assert_eq!(file_context(&root.join(f)), MOUNT_LABEL, "/{f}");
    }
    // proc labels its own files.
    assert_ne!(file_context(&root.join("proc/self")), MOUNT_LABEL, "/proc");
}

#[test]
fn labels_the_policy_does_not_know_fail_naming_their_field_and_leave_nothing() {
    if skip_without_selinux() {
        return;
    }
    for (ptr, value, field) in [
        (
            "/process/selinuxLabel",
            UNKNOWN_PROCESS_LABEL,
            "process.selinuxLabel",
        ),
        ("/linux/mountLabel", UNKNOWN_MOUNT_LABEL, "linux.mountLabel"),
    ] {
        let mut c = Container::new();
        c.set(ptr, json!(value)).sh("echo ran");
        let out = c.run();
        out.assert_fail();
        assert!(!out.stdout.contains("ran"), "the container ran:\n{out}");
        check_our_message(&out, &format!("name {field} and its value"), |e| {
            e.contains(field) && e.contains(value) && e.contains("not a valid context")
        });
        c.assert_no_debris(None);
        eprintln!("refused as expected: {}", out.stderr.trim());
    }
}
