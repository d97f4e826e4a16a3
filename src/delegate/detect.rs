//! What each delegate engine can do, and whether it works on this host at all: `--version`,
//! `features` and one throw-away container, run once per binary and cached in
//! `<root>/engines.json` keyed by the binary's path, mtime and size — so no container pays a fork
//! for detection after the first.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{Engine, RuntimeConfig};
use super::process::{self, Io};
use crate::error::{Context, Error, Result};

pub const CACHE_FILE: &str = "engines.json";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Features {
    pub cgroup_v1: bool,
    pub cgroup_v2: bool,
    pub seccomp: bool,
    pub user_namespaces: bool,
    /// Built with CRIU support (checkpoint / restore).
    pub criu: bool,
    /// Where the above came from: the engine's `features` document, or its `--version` flags
    /// (crun before 1.9 has no `features` command).
    pub source: String,
}

/// One engine binary as detected.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Detected {
    pub path: PathBuf,
    pub mtime_ns: i128,
    pub size: u64,
    pub version: String,
    pub features: Features,
    /// Whether it can run a container on this host (None: not probed).
    pub works_here: Option<bool>,
    /// Why it cannot serve containers here, when it cannot.
    pub reason: Option<String>,
    /// What the detection cost, for the record.
    pub detect_ms: u64,
}

impl Detected {
    /// Why this engine declines every container on this host, if it does.
    pub fn declines(&self) -> Option<String> {
        self.reason.clone()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Cache {
    engines: BTreeMap<String, Detected>,
}

/// The engine's binary: as configured if it names a path, else looked up in PATH.
pub fn resolve(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 || binary.is_absolute() {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// The detection of `engine` as configured: from the cache when the binary is unchanged, else
/// probed now (and cached). Err only when the binary is missing.
pub fn detect(cfg: &RuntimeConfig, root: &Path, engine: Engine) -> Result<Detected> {
    let configured = cfg.binary(engine);
    let path = resolve(configured).ok_or_else(|| {
        Error::invalid(format!(
            "binary {} not found (runtime.engines.{engine})",
            configured.display()
        ))
    })?;
    if !cfg.feature_detection.enabled {
        // Trusted blindly: the engine's own errors will tell.
        return Ok(Detected {
            path,
            mtime_ns: 0,
            size: 0,
            version: String::new(),
            features: Features {
                cgroup_v1: true,
                cgroup_v2: true,
                seccomp: true,
                user_namespaces: true,
                criu: true,
                source: "assumed (runtime.feature_detection.enabled is false)".into(),
            },
            works_here: None,
            reason: None,
            detect_ms: 0,
        });
    }
    let meta = fs::metadata(&path).ctx(|| format!("stat {}", path.display()))?;
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    let key = path.to_string_lossy().into_owned();
    let cache_path = root.join(CACHE_FILE);
    let mut cache: Cache = fs::read(&cache_path)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    let probe_wanted = cfg.feature_detection.probe_host;
    if let Some(hit) = cache.engines.get(&key) {
        let probed_enough = hit.works_here.is_some() || !probe_wanted;
        if hit.mtime_ns == mtime_ns && hit.size == meta.size() && probed_enough {
            return Ok(hit.clone());
        }
    }
    let started = Instant::now();
    let mut found = probe(cfg, root, engine, &path);
    found.mtime_ns = mtime_ns;
    found.size = meta.size();
    found.detect_ms = started.elapsed().as_millis() as u64;
    cache.engines.insert(key, found.clone());
    save(&cache_path, &cache)?;
    Ok(found)
}

fn save(path: &Path, cache: &Cache) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let data = serde_json::to_vec_pretty(cache).map_err(|e| Error::invalid(e.to_string()))?;
    crate::fsutil::write_atomic(path, &data, 0o600)
}

fn probe(cfg: &RuntimeConfig, root: &Path, engine: Engine, path: &Path) -> Detected {
    let mut d = Detected {
        path: path.to_path_buf(),
        mtime_ns: 0,
        size: 0,
        version: String::new(),
        features: Features::default(),
        works_here: None,
        reason: None,
        detect_ms: 0,
    };
    let timeout = Some(cfg.timeout);
    let version = match process::run(
        Command::new(path).arg("--version"),
        Io::Capture,
        timeout,
        &format!("{} --version", path.display()),
    ) {
        Ok(f) if f.ok() => String::from_utf8_lossy(&f.stdout).into_owned(),
        Ok(f) => {
            d.reason = Some(format!(
                "`{} --version` exited with status {}: {}",
                path.display(),
                f.code,
                process::engine_message(&f.stderr)
            ));
            return d;
        }
        Err(e) => {
            d.reason = Some(e.to_string());
            return d;
        }
    };
    d.version = version
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let features = process::run(
        Command::new(path).arg("features"),
        Io::Capture,
        timeout,
        &format!("{} features", path.display()),
    );
    d.features = match features {
        Ok(f) if f.ok() => match serde_json::from_slice::<Value>(&f.stdout) {
            Ok(doc) => from_features(&doc),
            Err(_) => from_version(engine, &version),
        },
        // A hang here is a broken engine, not an old one.
        Err(e) => {
            d.reason = Some(e.to_string());
            return d;
        }
        Ok(_) => from_version(engine, &version),
    };
    if !cfg.feature_detection.enabled || !cfg.feature_detection.probe_host {
        return d;
    }
    match probe_host(cfg, root, path) {
        Ok(()) => d.works_here = Some(true),
        Err(why) => {
            d.works_here = Some(false);
            d.reason = Some(format!("does not work on this host: {why}"));
        }
    }
    d
}

/// From a runtime-spec features document (`runc features`).
fn from_features(doc: &Value) -> Features {
    let linux = &doc["linux"];
    let namespaces = linux["namespaces"].as_array();
    Features {
        cgroup_v1: linux["cgroup"]["v1"] == true,
        cgroup_v2: linux["cgroup"]["v2"] == true,
        seccomp: linux["seccomp"]["enabled"] == true,
        user_namespaces: namespaces.is_some_and(|n| n.iter().any(|x| x == "user")),
        criu: doc["annotations"]["org.opencontainers.runc.checkpoint.enabled"] == "true",
        source: "features".into(),
    }
}

/// From `--version` alone (crun prints its build flags: `+SECCOMP +CRIU ...`); both cgroup
/// versions and user namespaces are part of every crun and runc release.
fn from_version(engine: Engine, version: &str) -> Features {
    let flag = |f: &str| version.split_whitespace().any(|w| w == f);
    Features {
        cgroup_v1: true,
        cgroup_v2: true,
        seccomp: flag("+SECCOMP") || (engine == Engine::Runc && version.contains("libseccomp")),
        user_namespaces: true,
        criu: flag("+CRIU"),
        source: "version".into(),
    }
}

/// Runs a minimal container with the engine: an empty read-only root with the host's /usr (and
/// /bin, /lib* where they are not links into it) bound read-only, new mount, pid, ipc, uts and
/// network namespaces, no capabilities, running `true`, in a cgroup of its own. Everything is made
/// and removed here; the host is only read.
fn probe_host(
    cfg: &RuntimeConfig,
    root: &Path,
    engine_path: &Path,
) -> std::result::Result<(), String> {
    let name = format!("proxmox-lxcri-probe-{}", std::process::id());
    let dir = root.join("engines").join(format!(".{name}"));
    let result = (|| {
        let rootfs = dir.join("bundle/rootfs");
        for d in ["proc", "dev"] {
            fs::create_dir_all(rootfs.join(d)).map_err(|e| e.to_string())?;
        }
        // /dev as every engine's default spec has it: crun makes its device nodes there.
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        ];
        for top in ["usr", "bin", "lib", "lib64", "sbin"] {
            let host = Path::new("/").join(top);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = fs::read_link(&host).map_err(|e| e.to_string())?;
                    std::os::unix::fs::symlink(target, rootfs.join(top))
                        .map_err(|e| e.to_string())?;
                }
                Ok(m) if m.is_dir() => {
                    fs::create_dir(rootfs.join(top)).map_err(|e| e.to_string())?;
                    mounts.push(json!({"destination": format!("/{top}"), "type": "bind",
                        "source": host, "options": ["rbind", "ro", "nosuid", "nodev"]}));
                }
                _ => {}
            }
        }
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                        "env": ["PATH=/usr/bin:/bin"], "noNewPrivileges": true, "capabilities": {}},
            "root": {"path": "rootfs", "readonly": true},
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "ipc"},
                               {"type": "uts"}, {"type": "network"}],
                "cgroupsPath": format!("/{name}")
            }
        });
        fs::write(dir.join("bundle/config.json"), config.to_string()).map_err(|e| e.to_string())?;
        let state = dir.join("state");
        let mut cmd = Command::new(engine_path);
        cmd.arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(dir.join("bundle"))
            .arg(&name)
            .stdin(Stdio::null());
        let run = process::run(&mut cmd, Io::Capture, Some(cfg.timeout), "probe container");
        // Whatever happened, nothing of the probe may stay.
        let _ = process::run(
            Command::new(engine_path)
                .arg("--root")
                .arg(&state)
                .args(["delete", "--force", &name]),
            Io::Capture,
            Some(Duration::from_secs(5).min(cfg.timeout)),
            "probe clean-up",
        );
        match run {
            Ok(f) if f.ok() => Ok(()),
            Ok(f) => {
                let msg = process::engine_message(&f.stderr);
                Err(if msg.is_empty() {
                    format!("probe container exited with status {}", f.code)
                } else {
                    msg
                })
            }
            Err(e) => Err(e.to_string()),
        }
    })();
    let _ = fs::remove_dir_all(&dir);
    remove_probe_cgroups(&name);
    result
}

/// An engine that died half-way may leave the probe's (empty) cgroups; rmdir removes only empty
/// ones, and the name is this process's own.
fn remove_probe_cgroups(name: &str) {
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let _ = fs::remove_dir(Path::new("/sys/fs/cgroup").join(name));
    for e in entries.flatten() {
        let _ = fs::remove_dir(e.path().join(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_documents_and_version_flags_are_read() {
        let doc = json!({"linux": {"namespaces": ["pid", "user"], "cgroup": {"v1": true, "v2": true},
            "seccomp": {"enabled": true}},
            "annotations": {"org.opencontainers.runc.checkpoint.enabled": "true"}});
        let f = from_features(&doc);
        assert!(f.cgroup_v2 && f.seccomp && f.user_namespaces && f.criu);
        let v = from_version(
            Engine::Crun,
            "crun version 1.8.1\n+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF +YAJL",
        );
        assert!(v.seccomp && !v.criu);
        assert_eq!(v.source, "version");
    }
}
