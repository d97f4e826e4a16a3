//! `spec`: writes the default config.json that `runc spec` writes (and its --rootless variant).

use std::fs;
use std::io::Write;

use serde_json::{json, Value};

use crate::cli::SpecArgs;
use crate::error::{Context, Error, Result};

pub fn run(args: &SpecArgs) -> Result<i32> {
    let path = args.bundle.join("config.json");
    let mut spec = default_spec();
    // As runc: on a cgroup v2 host the container gets its own cgroup namespace.
    if crate::linux::cgroups::is_unified() {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.push(json!({"type": "cgroup"}));
        }
    }
    if args.rootless {
        make_rootless(&mut spec);
    }
    let text = serde_json::to_string_pretty(&spec).map_err(|e| Error::invalid(e.to_string()))?;
    // create_new: an existing config.json is never overwritten.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::invalid(format!(
                "{} already exists; remove it first",
                path.display()
            )),
            _ => Error::os(format!("writing {}", path.display()), e),
        })?;
    f.write_all(text.as_bytes())
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(0)
}

fn default_spec() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "proxmox-lxcri",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// runc's rootless changes (specconv.ToRootless): a user namespace mapping the caller, no network
/// namespace, /sys bound from the host (sysfs needs a network namespace of our own), no uid=/gid=
/// mount options, no cgroup resources.
fn make_rootless(spec: &mut Value) {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let linux = &mut spec["linux"];
    if let Some(l) = linux.as_object_mut() {
        l.remove("resources");
    }
    linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
    linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    if let Some(ns) = linux["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
        ns.push(json!({"type": "user"}));
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for m in mounts.iter_mut() {
            if m["type"] == "sysfs" {
                *m = json!({"destination": "/sys", "type": "none", "source": "/sys",
                            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            }
            // get_mut: indexing would add "options": null to mounts without options.
            if let Some(opts) = m.get_mut("options").and_then(Value::as_array_mut) {
                opts.retain(|o| {
                    o.as_str()
                        .is_none_or(|o| !o.starts_with("uid=") && !o.starts_with("gid="))
                });
            }
        }
    }
}
