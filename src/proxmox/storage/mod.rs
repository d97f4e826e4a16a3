//! Proxmox storage for a container's root, behind one interface with two backends that lay
//! volumes out exactly as Proxmox's own storage plugins do:
//!
//! - `dir`: `<path>/images/<vmid>/subvol-<vmid>-disk-<N>.subvol`, volume id
//!   `<storage>:<vmid>/subvol-<vmid>-disk-<N>.subvol`. Like Proxmox's directory subvols it has
//!   no size limit, so the config records `size=0T`.
//! - `zfspool` (`zfs`): dataset `<pool>/subvol-<vmid>-disk-<N>` with `acltype=posixacl`,
//!   `xattr=sa` and `refquota=<size>` (none for size 0), mounted below the pool's mount point;
//!   volume id `<storage>:subvol-<vmid>-disk-<N>`; an O(1) clone of a template per content
//!   (`content`). libzfs_core is loaded (dlopen) only there.
//!
//! N is the lowest disk number no volume of the vmid uses (`vm-`, `base-`, `subvol-` and
//! `basevol-` names share the numbers, as in Proxmox).

pub mod content;
mod zfs;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{StorageConfig, StorageKind};
use crate::error::{Context, Error, Result};

/// A volume made for a container, as recorded in its state so that `delete` can free it
/// without the runtime config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// `<storage>:<name>`, as the pct config's `rootfs` names it.
    pub volid: String,
    /// Where the volume's file system is (the container's root).
    pub path: PathBuf,
    /// The size limit in GiB written to the config (0: none).
    pub size_gib: u64,
    /// The dataset, for a ZFS volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The clone template this volume's create made: a failed create destroys it too. Never
    /// recorded, so that no delete destroys a template.
    #[serde(skip)]
    pub made_template: Option<String>,
}

pub trait Storage {
    /// Makes a new, empty volume for `vmid`.
    fn alloc(&self, vmid: u32, size_gib: u64) -> Result<Volume>;
    /// Removes a volume this backend made, with everything in it.
    fn free(&self, volume: &Volume) -> Result<()>;
    /// Makes a volume for `vmid` holding what `source` holds, as a clone of the template for
    /// the content `key` (filled from `source` first when there is none). None when the
    /// backend cannot clone: the caller allocs and copies.
    fn alloc_clone(
        &self,
        _vmid: u32,
        _size_gib: u64,
        _key: &str,
        _source: &Path,
        _lock_dir: &Path,
    ) -> Result<Option<Volume>> {
        Ok(None)
    }
    /// Whether alloc_clone can clone (then the content key is worth computing).
    fn clones(&self) -> bool {
        false
    }
}

/// Copies the rootfs `source` into the empty volume directory `dst`.
pub fn copy_into(source: &Path, dst: &Path) -> Result<()> {
    super::copy::copy_tree(source, dst).map_err(|e| {
        e.context(format!(
            "copying the rootfs {} into volume {}",
            source.display(),
            dst.display()
        ))
    })
}

pub fn open(config: &StorageConfig) -> Box<dyn Storage> {
    match &config.kind {
        StorageKind::Dir { path } => Box::new(DirStorage {
            id: config.id.clone(),
            path: path.clone(),
        }),
        StorageKind::ZfsPool { pool } => Box::new(zfs::ZfsPool {
            id: config.id.clone(),
            pool: pool.clone(),
        }),
    }
}

/// Frees a recorded volume; the record says which backend made it.
pub fn free(volume: &Volume) -> Result<()> {
    let storage = volume
        .volid
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    match &volume.dataset {
        Some(ds) => zfs::ZfsPool {
            id: storage,
            pool: ds
                .rsplit_once('/')
                .map(|p| p.0)
                .unwrap_or_default()
                .to_string(),
        }
        .free(volume),
        None => DirStorage {
            id: storage,
            path: PathBuf::new(),
        }
        .free(volume),
    }
}

/// Whether `name` is a volume of `vmid` with disk number N, in any of Proxmox's prefixes.
fn disk_number(name: &str, vmid: u32) -> Option<u32> {
    let rest = ["vm-", "base-", "subvol-", "basevol-"]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    let rest = rest.strip_prefix(&format!("{vmid}-disk-"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    if digits.is_empty() || !(tail.is_empty() || tail.starts_with('.')) {
        return None;
    }
    digits.parse().ok()
}

pub struct DirStorage {
    id: String,
    path: PathBuf,
}

impl Storage for DirStorage {
    fn alloc(&self, vmid: u32, _size_gib: u64) -> Result<Volume> {
        if !self.path.is_dir() {
            return Err(Error::invalid(format!(
                "storage {:?}: directory {} does not exist",
                self.id,
                self.path.display()
            )));
        }
        let images = self.path.join("images").join(vmid.to_string());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&images)
            .ctx(|| format!("creating {}", images.display()))?;
        let taken: Vec<u32> = fs::read_dir(&images)
            .ctx(|| format!("reading {}", images.display()))?
            .flatten()
            .filter_map(|e| disk_number(e.file_name().to_str()?, vmid))
            .collect();
        let mut n = 0;
        loop {
            if taken.contains(&n) {
                n += 1;
                continue;
            }
            let name = format!("subvol-{vmid}-disk-{n}.subvol");
            let path = images.join(&name);
            match fs::DirBuilder::new().mode(0o755).create(&path) {
                Ok(()) => {
                    return Ok(Volume {
                        volid: format!("{}:{vmid}/{name}", self.id),
                        path,
                        // A directory cannot hold a quota: Proxmox records such subvols as 0.
                        size_gib: 0,
                        dataset: None,
                        made_template: None,
                    });
                }
                // Someone else's disk appeared meanwhile: take the next number.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(Error::os(format!("creating {}", path.display()), e)),
            }
        }
    }

    fn free(&self, volume: &Volume) -> Result<()> {
        match fs::remove_dir_all(&volume.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::os(
                    format!("removing volume {}", volume.path.display()),
                    e,
                ))
            }
        }
        // images/<vmid> goes too once its last disk is gone (another disk of the vmid keeps it).
        if let Some(parent) = volume.path.parent() {
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_numbers_are_read_from_every_proxmox_prefix() {
        assert_eq!(disk_number("subvol-100-disk-0.subvol", 100), Some(0));
        assert_eq!(disk_number("vm-100-disk-3.raw", 100), Some(3));
        assert_eq!(disk_number("base-100-disk-12", 100), Some(12));
        assert_eq!(disk_number("subvol-1000-disk-1", 100), None);
        assert_eq!(disk_number("subvol-100-disk-x", 100), None);
        assert_eq!(disk_number("subvol-100-disk-1x", 100), None);
        assert_eq!(disk_number("notes", 100), None);
    }

    #[test]
    fn dir_volumes_use_proxmox_names_and_the_lowest_free_number() {
        let base = std::env::temp_dir().join(format!("lxcri-storage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("images/100")).unwrap();
        fs::write(base.join("images/100/vm-100-disk-0.raw"), "").unwrap();
        let s = open(&StorageConfig {
            id: "local".into(),
            kind: StorageKind::Dir { path: base.clone() },
        });
        let v = s.alloc(100, 8).unwrap();
        assert_eq!(v.volid, "local:100/subvol-100-disk-1.subvol");
        assert_eq!(v.path, base.join("images/100/subvol-100-disk-1.subvol"));
        assert_eq!(v.size_gib, 0);
        assert!(v.path.is_dir());
        let v2 = s.alloc(100, 8).unwrap();
        assert_eq!(v2.volid, "local:100/subvol-100-disk-2.subvol");
        fs::write(v.path.join("file"), "x").unwrap();
        free(&v).unwrap();
        assert!(!v.path.exists());
        assert!(
            base.join("images/100").is_dir(),
            "other disks keep images/100"
        );
        free(&v2).unwrap();
        fs::remove_file(base.join("images/100/vm-100-disk-0.raw")).unwrap();
        let v3 = s.alloc(100, 0).unwrap();
        free(&v3).unwrap();
        assert!(
            !base.join("images/100").exists(),
            "the last disk takes images/100 along"
        );
        free(&v3).unwrap(); // idempotent
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_made_template_is_never_recorded_so_no_delete_destroys_it() {
        let v = Volume {
            volid: "local-zfs:subvol-100-disk-0".into(),
            path: "/rpool/data/subvol-100-disk-0".into(),
            size_gib: 8,
            dataset: Some("rpool/data/subvol-100-disk-0".into()),
            made_template: Some("rpool/data/basevol-lxcri-ab".into()),
        };
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("basevol"), "{json}");
        let back: Volume = serde_json::from_str(&json).unwrap();
        assert_eq!(back.made_template, None);
        assert_eq!(back.dataset, v.dataset);
    }
}
