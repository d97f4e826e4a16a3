//! The runtime's own configuration, `/etc/proxmox-lxcri/config.json` (or `--config FILE`, or
//! `$PROXMOX_LXCRI_CONFIG`). A missing file means defaults, so that a host without one pays a
//! single failed open(2). It is read only by the commands that need it (today: `create`).
//!
//! ```json
//! {
//!   "proxmox": {
//!     "enabled": true,
//!     "config_dir": "/etc/pve/lxc",
//!     "lock_dir": "/run/lock/lxc",
//!     "storage": { "id": "local-zfs", "type": "zfspool", "pool": "rpool/data" },
//!     "vmid_range": [100000, 199999],
//!     "default_disk_size_gib": 8,
//!     "keep": false
//!   },
//!   "runtime": { ... }
//! }
//! ```
//!
//! `proxmox.storage` may also be a list; the first entry is the default and the annotation
//! `io.proxmox.lxcri.storage` picks another by id. The `runtime` block belongs to the delegation
//! ADR (primary/fallback engine); it is kept here as raw JSON until that work lands.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub const DEFAULT_PATH: &str = "/etc/proxmox-lxcri/config.json";
pub const ENV_PATH: &str = "PROXMOX_LXCRI_CONFIG";

/// The vmid range used when the file names none. Hand-made Proxmox guests take the lowest free
/// id from 100 up (the GUI's and `pvesh get /cluster/nextid`'s default), so a range starting at
/// 100000 stays clear of them on any node with fewer than 99900 guests.
pub const DEFAULT_VMID_RANGE: (u32, u32) = (100_000, 199_999);
/// Proxmox's own bounds for a vmid (pve-vmid: 100 ..= 999999999).
pub const VMID_MIN: u32 = 100;
pub const VMID_MAX: u32 = 999_999_999;
pub const DEFAULT_DISK_SIZE_GIB: u64 = 8;
/// 1 PiB: anything larger is a typo, not a container disk.
pub const MAX_DISK_SIZE_GIB: u64 = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub proxmox: ProxmoxConfig,
    /// The delegation ADR's block, interpreted by delegate::config.
    pub runtime: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxmoxConfig {
    /// Every container is pct-visible unless it opts out (annotation).
    pub enabled: bool,
    /// `<pve>/lxc`; its parent holds `qemu-server/` and `.vmlist`.
    pub config_dir: PathBuf,
    /// Where pct keeps its per-vmid flock files.
    pub lock_dir: PathBuf,
    /// LXC's lxcpath: the command socket Proxmox looks for is `@<lxcpath>/<vmid>/command`.
    pub lxcpath: PathBuf,
    /// The first one is the default.
    pub storages: Vec<StorageConfig>,
    pub vmid_range: (u32, u32),
    pub default_disk_size_gib: u64,
    /// Leave the pct config and the volume on delete, for the administrator.
    pub keep: bool,
}

impl Default for ProxmoxConfig {
    fn default() -> Self {
        ProxmoxConfig {
            enabled: false,
            config_dir: PathBuf::from("/etc/pve/lxc"),
            lock_dir: PathBuf::from("/run/lock/lxc"),
            lxcpath: PathBuf::from("/var/lib/lxc"),
            storages: Vec::new(),
            vmid_range: DEFAULT_VMID_RANGE,
            default_disk_size_gib: DEFAULT_DISK_SIZE_GIB,
            keep: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// The Proxmox storage id (`local`, `local-zfs`), the prefix of volume ids.
    pub id: String,
    pub kind: StorageKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKind {
    /// Directory storage: volumes under `<path>/images/<vmid>/`.
    Dir { path: PathBuf },
    /// ZFS pool storage: datasets below `pool` (a pool or a parent dataset, e.g. `rpool/data`).
    ZfsPool { pool: String },
}

impl ProxmoxConfig {
    pub fn storage(&self, id: Option<&str>) -> Option<&StorageConfig> {
        match id {
            None => self.storages.first(),
            Some(id) => self.storages.iter().find(|s| s.id == id),
        }
    }
}

/// The --config flag, recorded once by main for the readers that have no `Cli` at hand.
static FLAG: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

pub fn init(flag: Option<&Path>) {
    let _ = FLAG.set(flag.map(Path::to_path_buf));
}

/// The config file in force: `--config`, else `$PROXMOX_LXCRI_CONFIG`, else the default path.
pub fn path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag.or_else(|| FLAG.get().and_then(|f| f.as_deref())) {
        return p.to_path_buf();
    }
    match std::env::var_os(ENV_PATH) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Reads and checks the config file; a missing file gives the defaults. One command asks for it
/// more than once (the engine choice, then the Proxmox side): the file is read once per process.
pub fn load(flag: Option<&Path>) -> Result<Config> {
    static LOADED: std::sync::OnceLock<(PathBuf, Config)> = std::sync::OnceLock::new();
    let path = path(flag);
    if let Some((p, c)) = LOADED.get() {
        if *p == path {
            return Ok(c.clone());
        }
    }
    let config = read(&path)?;
    let _ = LOADED.set((path, config.clone()));
    Ok(config)
}

fn read(path: &Path) -> Result<Config> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(Error::os(format!("reading {}", path.display()), e)),
    };
    let value: Value = serde_json::from_slice(&data)
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    parse(&value).map_err(|e| e.context(path.display()))
}

/// Checks a parsed config; every error names the key at fault (`proxmox.vmid_range`).
pub fn parse(value: &Value) -> Result<Config> {
    let top = value
        .as_object()
        .ok_or_else(|| Error::invalid("the config must be a JSON object"))?;
    let mut config = Config::default();
    for (key, v) in top {
        match key.as_str() {
            "proxmox" => config.proxmox = parse_proxmox(v)?,
            "runtime" => {
                if !v.is_object() {
                    return Err(Error::invalid("runtime: must be an object"));
                }
                config.runtime = Some(v.clone());
            }
            _ => return Err(Error::invalid(format!("{key}: unknown key"))),
        }
    }
    Ok(config)
}

fn parse_proxmox(v: &Value) -> Result<ProxmoxConfig> {
    let obj = object(v, "proxmox")?;
    let mut c = ProxmoxConfig::default();
    for (key, v) in obj {
        let name = format!("proxmox.{key}");
        match key.as_str() {
            "enabled" => c.enabled = boolean(v, &name)?,
            "keep" => c.keep = boolean(v, &name)?,
            "config_dir" => c.config_dir = abs_path(v, &name)?,
            "lock_dir" => c.lock_dir = abs_path(v, &name)?,
            "lxcpath" => c.lxcpath = abs_path(v, &name)?,
            "storage" => c.storages = parse_storages(v, &name)?,
            "vmid_range" => c.vmid_range = parse_range(v, &name)?,
            "default_disk_size_gib" => {
                c.default_disk_size_gib = v
                    .as_u64()
                    .filter(|n| *n <= MAX_DISK_SIZE_GIB)
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "{name}: must be a whole number of GiB from 0 (no limit) to {MAX_DISK_SIZE_GIB}"
                        ))
                    })?
            }
            _ => return Err(Error::invalid(format!("{name}: unknown key"))),
        }
    }
    if c.enabled && c.storages.is_empty() {
        return Err(Error::invalid(
            "proxmox.storage: required when proxmox.enabled is true",
        ));
    }
    Ok(c)
}

fn parse_storages(v: &Value, name: &str) -> Result<Vec<StorageConfig>> {
    let list: Vec<(String, &Value)> = match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("{name}[{i}]"), s))
            .collect(),
        _ => vec![(name.to_string(), v)],
    };
    if list.is_empty() {
        return Err(Error::invalid(format!("{name}: must not be empty")));
    }
    let mut out: Vec<StorageConfig> = Vec::new();
    for (name, s) in list {
        let storage = parse_storage(s, &name)?;
        if out.iter().any(|o| o.id == storage.id) {
            return Err(Error::invalid(format!(
                "{name}.id: storage {:?} given twice",
                storage.id
            )));
        }
        out.push(storage);
    }
    Ok(out)
}

fn parse_storage(v: &Value, name: &str) -> Result<StorageConfig> {
    let obj = object(v, name)?;
    let mut id = None;
    let mut typ = None;
    let mut dir = None;
    let mut pool = None;
    for (key, v) in obj {
        let key_name = format!("{name}.{key}");
        match key.as_str() {
            "id" => {
                let s = string(v, &key_name)?;
                if !is_storage_id(s) {
                    return Err(Error::invalid(format!(
                        "{key_name}: {s:?} is not a Proxmox storage id (letters, digits, - _ ., starting with a letter)"
                    )));
                }
                id = Some(s.to_string());
            }
            "type" => typ = Some(string(v, &key_name)?.to_string()),
            "path" => dir = Some(abs_path(v, &key_name)?),
            "pool" => {
                let s = string(v, &key_name)?;
                if !is_dataset_name(s) {
                    return Err(Error::invalid(format!(
                        "{key_name}: {s:?} is not a ZFS pool or dataset name"
                    )));
                }
                pool = Some(s.to_string());
            }
            _ => return Err(Error::invalid(format!("{key_name}: unknown key"))),
        }
    }
    let id = id.ok_or_else(|| Error::invalid(format!("{name}.id: missing")))?;
    let kind = match typ.as_deref() {
        Some("dir") => {
            if pool.is_some() {
                return Err(Error::invalid(format!(
                    "{name}.pool: only for type \"zfspool\""
                )));
            }
            StorageKind::Dir {
                path: dir.ok_or_else(|| {
                    Error::invalid(format!("{name}.path: required for type \"dir\""))
                })?,
            }
        }
        Some("zfspool") => {
            if dir.is_some() {
                return Err(Error::invalid(format!(
                    "{name}.path: only for type \"dir\""
                )));
            }
            StorageKind::ZfsPool {
                pool: pool.ok_or_else(|| {
                    Error::invalid(format!("{name}.pool: required for type \"zfspool\""))
                })?,
            }
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "{name}.type: {other:?} is not supported (use \"dir\" or \"zfspool\")"
            )))
        }
        None => return Err(Error::invalid(format!("{name}.type: missing"))),
    };
    Ok(StorageConfig { id, kind })
}

fn parse_range(v: &Value, name: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::invalid(format!(
            "{name}: must be [min, max] with {VMID_MIN} <= min <= max <= {VMID_MAX}"
        ))
    };
    let items = v.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
    let num = |v: &Value| {
        v.as_u64()
            .filter(|n| (VMID_MIN as u64..=VMID_MAX as u64).contains(n))
            .map(|n| n as u32)
    };
    match (num(&items[0]), num(&items[1])) {
        (Some(min), Some(max)) if min <= max => Ok((min, max)),
        _ => Err(bad()),
    }
}

fn object<'a>(v: &'a Value, name: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| Error::invalid(format!("{name}: must be an object")))
}

fn boolean(v: &Value, name: &str) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| Error::invalid(format!("{name}: must be true or false")))
}

fn string<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| Error::invalid(format!("{name}: must be a string")))
}

fn abs_path(v: &Value, name: &str) -> Result<PathBuf> {
    let s = string(v, name)?;
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err(Error::invalid(format!(
            "{name}: {s:?} must be an absolute path"
        )));
    }
    Ok(p)
}

/// pve-storage-id: `[a-z][a-z0-9\-\_\.]*[a-z0-9]` (case-insensitive in Proxmox).
pub fn is_storage_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// A ZFS dataset name: components of `[A-Za-z0-9_.:-]` separated by single slashes, starting
/// with a letter (the pool name).
pub fn is_dataset_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 200
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        parse(&v).expect_err("should be refused").to_string()
    }

    #[test]
    fn an_empty_object_gives_the_defaults() {
        let c = parse(&json!({})).unwrap();
        assert!(!c.proxmox.enabled);
        assert_eq!(c.proxmox.config_dir, Path::new("/etc/pve/lxc"));
        assert_eq!(c.proxmox.vmid_range, DEFAULT_VMID_RANGE);
        assert_eq!(c.proxmox.default_disk_size_gib, DEFAULT_DISK_SIZE_GIB);
        assert!(c.runtime.is_none());
    }

    #[test]
    fn a_full_config_is_read() {
        let c = parse(&json!({
            "proxmox": {
                "enabled": true,
                "config_dir": "/tmp/pve/lxc",
                "storage": [
                    {"id": "local-zfs", "type": "zfspool", "pool": "rpool/data"},
                    {"id": "local", "type": "dir", "path": "/var/lib/vz"}
                ],
                "vmid_range": [200, 300],
                "default_disk_size_gib": 0,
                "keep": true
            },
            "runtime": {"primary": "native", "fallback": "crun"}
        }))
        .unwrap();
        let p = &c.proxmox;
        assert!(p.enabled && p.keep);
        assert_eq!(p.vmid_range, (200, 300));
        assert_eq!(p.default_disk_size_gib, 0);
        assert_eq!(p.storage(None).unwrap().id, "local-zfs");
        assert_eq!(
            p.storage(Some("local")).unwrap().kind,
            StorageKind::Dir {
                path: "/var/lib/vz".into()
            }
        );
        assert!(p.storage(Some("nope")).is_none());
        assert_eq!(c.runtime.unwrap()["fallback"], "crun");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                json!({"proxmox": {"vmid_range": [5, 10]}}),
                "proxmox.vmid_range",
            ),
            (
                json!({"proxmox": {"vmid_range": [300, 200]}}),
                "proxmox.vmid_range",
            ),
            (json!({"proxmox": {"vmid_range": 7}}), "proxmox.vmid_range"),
            (json!({"proxmox": {"enabled": "yes"}}), "proxmox.enabled"),
            (json!({"proxmox": {"enabled": true}}), "proxmox.storage"),
            (
                json!({"proxmox": {"config_dir": "etc/pve"}}),
                "proxmox.config_dir",
            ),
            (
                json!({"proxmox": {"default_disk_size_gib": -1}}),
                "proxmox.default_disk_size_gib",
            ),
            (json!({"proxmox": {"colour": 1}}), "proxmox.colour"),
            (
                json!({"proxmox": {"storage": {"id": "x", "type": "dir", "path": "/a"}}}),
                "proxmox.storage.id",
            ),
            (
                json!({"proxmox": {"storage": {"id": "local", "type": "lvm"}}}),
                "proxmox.storage.type",
            ),
            (
                json!({"proxmox": {"storage": {"id": "local", "type": "dir"}}}),
                "proxmox.storage.path",
            ),
            (
                json!({"proxmox": {"storage": {"id": "zz", "type": "zfspool", "pool": "/rpool"}}}),
                "proxmox.storage.pool",
            ),
            (
                json!({"proxmox": {"storage": [{"id": "aa", "type": "dir", "path": "/a"}, {"id": "aa", "type": "dir", "path": "/b"}]}}),
                "proxmox.storage[1].id",
            ),
            (json!({"runtime": 3}), "runtime"),
            (json!({"zfs": {}}), "zfs: unknown key"),
        ];
        for (v, key) in cases {
            let msg = err(v.clone());
            assert!(
                msg.starts_with(key),
                "{v}: {msg:?} does not start with {key:?}"
            );
        }
    }

    #[test]
    fn a_missing_file_means_defaults_and_a_broken_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("lxcri-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.json");
        assert!(!load(Some(&missing)).unwrap().proxmox.enabled);
        let broken = dir.join("broken.json");
        std::fs::write(&broken, "{\"proxmox\": ").unwrap();
        let msg = load(Some(&broken)).unwrap_err().to_string();
        assert!(msg.contains("broken.json"), "{msg}");
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"proxmox": {"keep": 1}}"#).unwrap();
        let msg = load(Some(&bad)).unwrap_err().to_string();
        assert!(
            msg.contains("bad.json") && msg.contains("proxmox.keep"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_checked_like_proxmox_and_zfs_do() {
        assert!(is_storage_id("local-zfs") && is_storage_id("nfs.backup_1"));
        assert!(!is_storage_id("1local") && !is_storage_id("a") && !is_storage_id("a/b"));
        assert!(is_dataset_name("rpool") && is_dataset_name("rpool/data"));
        for bad in [
            "",
            "/rpool",
            "rpool/",
            "rpool//x",
            "rpool/../x",
            "rpool/a b",
            "1pool",
        ] {
            assert!(!is_dataset_name(bad), "{bad:?}");
        }
    }
}
