//! process.capabilities: all five sets read back from /proc/self/status, for root and for another
//! user, compared with what the kernel's execve rules say and with runc; bad names.

mod common;

use common::*;
use serde_json::json;
use std::path::PathBuf;

const FIELDS: [&str; 5] = ["CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"];

fn hex(caps: &[&str]) -> String {
    format!("{:016x}", cap_mask(caps))
}

/// Five different sets, so that a set applied in the place of another shows.
fn distinct_sets() -> serde_json::Value {
    json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_NET_RAW"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "inheritable": ["CAP_KILL", "CAP_NET_RAW"],
        "ambient": ["CAP_KILL"],
    })
}

/// The five Cap* lines of the process's /proc/self/status under `runtime`.
fn caps_seen(runtime: PathBuf, uid: u32, nnp: bool) -> Vec<String> {
    let mut c = Container::with_runtime(runtime);
    c.set("/process/capabilities", distinct_sets())
        .no_new_privileges(nnp)
        .user(uid, uid)
        .args(&["cat", "/proc/self/status"]);
    let out = c.run();
    out.assert_ok();
    FIELDS
        .iter()
        .map(|f| {
            status_field(&out.stdout, f)
                .unwrap_or("missing")
                .to_string()
        })
        .collect()
}

/// Root: execve makes permitted and effective the bounding set plus the inheritable set; with
/// no_new_privs they cannot grow beyond the permitted set from before the exec, which is the
/// spec's. Bounding, inheritable and ambient are the spec's.
#[test]
fn every_set_for_root() {
    let bnd = hex(&["CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_NET_RAW"]);
    let inh = hex(&["CAP_KILL", "CAP_NET_RAW"]);
    let amb = hex(&["CAP_KILL"]);
    let prm = hex(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]);
    assert_eq!(
        caps_seen(runtime(), 0, true),
        [bnd.clone(), prm.clone(), prm, inh.clone(), amb.clone()],
        "noNewPrivileges: {FIELDS:?}"
    );
    assert_eq!(
        caps_seen(runtime(), 0, false),
        [bnd.clone(), bnd.clone(), bnd, inh, amb],
        "without noNewPrivileges: {FIELDS:?}"
    );
}

/// Another user keeps exactly the ambient capabilities across execve (in permitted and
/// effective); inheritable and bounding are the spec's.
#[test]
fn every_set_for_a_non_root_user_with_ambient_capabilities() {
    for nnp in [true, false] {
        assert_eq!(
            caps_seen(runtime(), 1000, nnp),
            [
                hex(&["CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_NET_RAW"]),
                hex(&["CAP_KILL"]),
                hex(&["CAP_KILL"]),
                hex(&["CAP_KILL", "CAP_NET_RAW"]),
                hex(&["CAP_KILL"]),
            ],
            "nnp {nnp}: {FIELDS:?}"
        );
    }
}

/// The same configs under runc give the same five sets.
#[test]
fn the_sets_match_runc() {
    if !std::path::Path::new(RUNC).exists() {
        panic!("{RUNC} is missing: scripts/install-deps installs it");
    }
    for uid in [0, 1000] {
        for nnp in [true, false] {
            assert_eq!(
                caps_seen(runtime(), uid, nnp),
                caps_seen(PathBuf::from(RUNC), uid, nnp),
                "uid {uid} nnp {nnp}: {FIELDS:?}"
            );
        }
    }
}

/// The ambient capability is usable: a non-root user with CAP_CHOWN ambient can chown.
#[test]
fn an_ambient_capability_works_for_a_non_root_user() {
    let set = ["CAP_CHOWN", "CAP_KILL"];
    let mut c = Container::new();
    c.readonly(false)
        .user(1000, 1000)
        .set(
            "/process/capabilities",
            json!({"bounding": set, "permitted": set, "effective": set, "inheritable": set,
                   "ambient": ["CAP_CHOWN"]}),
        )
        .sh("touch /tmp/f && chown 0:0 /tmp/f && stat -c %u /tmp/f");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "0\n");
}

#[test]
fn an_unknown_capability_is_an_error_naming_the_field() {
    let mut c = Container::new();
    c.set(
        "/process/capabilities/ambient",
        json!(["CAP_KILL", "CAP_TELEPORT"]),
    )
    .args(&["true"]);
    let out = c.run();
    out.assert_fail();
    c.assert_no_debris(None);
    check_our_message(&out, "name the field", |s| {
        s.contains("process.capabilities.ambient[1]") && s.contains("CAP_TELEPORT")
    });
}
