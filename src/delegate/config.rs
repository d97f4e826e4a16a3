//! The runtime ADR's `runtime` block of /etc/proxmox-lxcri/config.json: which engine is primary,
//! which engines to fall back to, and how. Every bad value is an error naming its key.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// An engine that can serve a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    Native,
    Crun,
    Runc,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Native => "native",
            Engine::Crun => "crun",
            Engine::Runc => "runc",
        }
    }

    pub fn parse(s: &str) -> Option<Engine> {
        match s {
            "native" => Some(Engine::Native),
            "crun" => Some(Engine::Crun),
            "runc" => Some(Engine::Runc),
            _ => None,
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of the detected features an engine must have for a container that needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureDetection {
    /// Probe engines at all (false: trust the configured binaries blindly).
    pub enabled: bool,
    /// Run a throw-away container to learn whether the engine works on this host.
    pub probe_host: bool,
    pub cgroup_v2: bool,
    pub seccomp: bool,
    pub user_namespaces: bool,
}

impl Default for FeatureDetection {
    fn default() -> Self {
        FeatureDetection {
            enabled: true,
            probe_host: true,
            cgroup_v2: true,
            seccomp: true,
            user_namespaces: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeConfig {
    pub primary: Engine,
    /// Delegates tried in order (never `native`).
    pub fallback: Vec<Engine>,
    pub auto_fallback: bool,
    /// Upper bound for one delegated command (and for each detection probe).
    pub timeout: Duration,
    /// Whether commands are recorded in `<root>/runtime/events.log`.
    pub performance_monitoring: bool,
    pub feature_detection: FeatureDetection,
    /// Binary of each delegate; a bare name is looked up in PATH.
    pub crun: PathBuf,
    pub runc: PathBuf,
    /// The events log is rotated (to events.log.1) when a line would take it past this size.
    pub events_log_max_size: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            primary: Engine::Native,
            fallback: vec![Engine::Crun, Engine::Runc],
            auto_fallback: true,
            timeout: Duration::from_secs(30),
            performance_monitoring: true,
            feature_detection: FeatureDetection::default(),
            crun: PathBuf::from("crun"),
            runc: PathBuf::from("runc"),
            events_log_max_size: 1 << 20,
        }
    }
}

impl RuntimeConfig {
    /// Parses the `runtime` object; absent keys keep their defaults, unknown keys are refused
    /// (a typo must not silently change nothing).
    pub fn from_value(v: &Value) -> Result<RuntimeConfig> {
        let mut c = RuntimeConfig::default();
        if v.is_null() {
            return Ok(c);
        }
        let obj = object(v, "runtime")?;
        for (key, val) in obj {
            let name = format!("runtime.{key}");
            match key.as_str() {
                "primary" => {
                    c.primary = string(val, &name).and_then(|s| {
                        Engine::parse(s).ok_or_else(|| {
                            bad(&name, &format!("{s:?} (expected native, crun or runc)"))
                        })
                    })?
                }
                "fallback" => {
                    let list = val
                        .as_array()
                        .ok_or_else(|| bad(&name, "must be a list of engine names"))?;
                    c.fallback = Vec::new();
                    for (i, e) in list.iter().enumerate() {
                        let item = format!("{name}[{i}]");
                        let engine = match string(e, &item)? {
                            "crun" => Engine::Crun,
                            "runc" => Engine::Runc,
                            other => {
                                return Err(bad(
                                    &item,
                                    &format!("{other:?} (expected crun or runc)"),
                                ))
                            }
                        };
                        if !c.fallback.contains(&engine) {
                            c.fallback.push(engine);
                        }
                    }
                }
                "auto_fallback" => c.auto_fallback = boolean(val, &name)?,
                "performance_monitoring" => c.performance_monitoring = boolean(val, &name)?,
                "timeout" => {
                    let secs = val
                        .as_f64()
                        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                        .ok_or_else(|| bad(&name, "must be a number of seconds in (0, 86400]"))?;
                    c.timeout = Duration::from_secs_f64(secs);
                }
                "events_log_max_size" => {
                    c.events_log_max_size = val
                        .as_u64()
                        .filter(|n| *n >= 4096)
                        .ok_or_else(|| bad(&name, "must be a number of bytes, at least 4096"))?
                }
                "feature_detection" => c.feature_detection = features(val, &name)?,
                "engines" => {
                    for (engine, path) in object(val, &name)? {
                        let item = format!("{name}.{engine}");
                        let path = string(path, &item)?;
                        if path.is_empty() {
                            return Err(bad(&item, "must not be empty"));
                        }
                        match engine.as_str() {
                            "crun" => c.crun = PathBuf::from(path),
                            "runc" => c.runc = PathBuf::from(path),
                            _ => return Err(bad(&item, "unknown engine (expected crun or runc)")),
                        }
                    }
                }
                _ => return Err(bad(&name, "unknown key")),
            }
        }
        Ok(c)
    }

    /// The engines to try for a new container, in order: the primary unless native, then the
    /// fallbacks.
    pub fn delegates(&self) -> Vec<Engine> {
        let mut list = Vec::new();
        if self.primary != Engine::Native {
            list.push(self.primary);
        }
        for e in &self.fallback {
            if !list.contains(e) {
                list.push(*e);
            }
        }
        list
    }

    pub fn binary(&self, engine: Engine) -> &std::path::Path {
        match engine {
            Engine::Crun => &self.crun,
            _ => &self.runc,
        }
    }
}

fn features(v: &Value, name: &str) -> Result<FeatureDetection> {
    let mut f = FeatureDetection::default();
    for (key, val) in object(v, name)? {
        let item = format!("{name}.{key}");
        let on = boolean(val, &item)?;
        match key.as_str() {
            "enabled" => f.enabled = on,
            "probe_host" => f.probe_host = on,
            "cgroup_v2" => f.cgroup_v2 = on,
            "seccomp" => f.seccomp = on,
            "user_namespaces" => f.user_namespaces = on,
            _ => return Err(bad(&item, "unknown key")),
        }
    }
    Ok(f)
}

fn object<'a>(v: &'a Value, name: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| bad(name, "must be an object"))
}

fn string<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.as_str().ok_or_else(|| bad(name, "must be a string"))
}

fn boolean(v: &Value, name: &str) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| bad(name, "must be true or false"))
}

fn bad(name: &str, what: &str) -> Error {
    Error::invalid(format!("{name}: {what}"))
}

/// The `runtime` block of the configuration file (src/config.rs: `--config`, else
/// `$PROXMOX_LXCRI_CONFIG`, else /etc/proxmox-lxcri/config.json). A missing file means defaults and
/// costs one failed open.
pub fn load_runtime_section() -> Result<Value> {
    Ok(crate::config::load(None)?.runtime.unwrap_or(Value::Null))
}

/// The configuration, loaded once per process.
pub fn get() -> Result<&'static RuntimeConfig> {
    static CONFIG: std::sync::OnceLock<RuntimeConfig> = std::sync::OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c);
    }
    let c = RuntimeConfig::from_value(&load_runtime_section()?)?;
    Ok(CONFIG.get_or_init(|| c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_adr_shape_parses() {
        let c = RuntimeConfig::from_value(&json!({
            "primary": "native", "fallback": ["crun", "runc"], "auto_fallback": true,
            "timeout": 30, "performance_monitoring": true,
            "feature_detection": {"cgroup_v2": true, "seccomp": true, "user_namespaces": false},
            "engines": {"crun": "/usr/bin/crun", "runc": "/usr/sbin/runc"}
        }))
        .unwrap();
        assert_eq!(c.primary, Engine::Native);
        assert_eq!(c.delegates(), vec![Engine::Crun, Engine::Runc]);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert!(!c.feature_detection.user_namespaces);
        assert_eq!(
            c.binary(Engine::Runc),
            std::path::Path::new("/usr/sbin/runc")
        );
    }

    #[test]
    fn a_delegated_primary_comes_first() {
        let c = RuntimeConfig::from_value(&json!({"primary": "runc"})).unwrap();
        assert_eq!(c.delegates(), vec![Engine::Runc, Engine::Crun]);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (v, key) in [
            (json!({"primary": "youki"}), "runtime.primary"),
            (json!({"primary": 1}), "runtime.primary"),
            (
                json!({"fallback": ["runc", "native"]}),
                "runtime.fallback[1]",
            ),
            (json!({"fallback": "runc"}), "runtime.fallback"),
            (json!({"auto_fallback": "yes"}), "runtime.auto_fallback"),
            (json!({"timeout": 0}), "runtime.timeout"),
            (json!({"timeout": "30s"}), "runtime.timeout"),
            (
                json!({"feature_detection": {"seccomp": 1}}),
                "runtime.feature_detection.seccomp",
            ),
            (
                json!({"feature_detection": {"bogus": true}}),
                "runtime.feature_detection.bogus",
            ),
            (
                json!({"engines": {"youki": "/bin/youki"}}),
                "runtime.engines.youki",
            ),
            (
                json!({"events_log_max_size": 10}),
                "runtime.events_log_max_size",
            ),
            (json!({"primry": "runc"}), "runtime.primry"),
            (json!([1]), "runtime"),
        ] {
            let err = RuntimeConfig::from_value(&v).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{key}:")), "{v}: {err}");
        }
    }
}
