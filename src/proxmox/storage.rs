//! Proxmox storage for a container's root, behind one interface with two backends that lay
//! volumes out exactly as Proxmox's own storage plugins do:
//!
//! - `dir`: `<path>/images/<vmid>/subvol-<vmid>-disk-<N>.subvol`, volume id
//!   `<storage>:<vmid>/subvol-<vmid>-disk-<N>.subvol`. Like Proxmox's directory subvols it has
//!   no size limit, so the config records `size=0T`.
//! - `zfspool`: dataset `<pool>/subvol-<vmid>-disk-<N>` with `acltype=posixacl`, `xattr=sa`
//!   and `refquota=<size>` (none for size 0), mounted below the pool's mount point; volume id
//!   `<storage>:subvol-<vmid>-disk-<N>`. libzfs_core is loaded (dlopen) only here.
//!
//! N is the lowest disk number no volume of the vmid uses (`vm-`, `base-`, `subvol-` and
//! `basevol-` names share the numbers, as in Proxmox).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
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
}

pub trait Storage {
    /// Makes a new, empty volume for `vmid`.
    fn alloc(&self, vmid: u32, size_gib: u64) -> Result<Volume>;
    /// Removes a volume this backend made, with everything in it.
    fn free(&self, volume: &Volume) -> Result<()>;
}

pub fn open(config: &StorageConfig) -> Box<dyn Storage> {
    match &config.kind {
        StorageKind::Dir { path } => Box::new(DirStorage {
            id: config.id.clone(),
            path: path.clone(),
        }),
        StorageKind::ZfsPool { pool } => Box::new(ZfsPool {
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
        Some(ds) => ZfsPool {
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

pub struct ZfsPool {
    id: String,
    pool: String,
}

/// zfs_prop values of the index properties we set (include/sys/fs/zfs.h).
const ZFS_ACLTYPE_POSIX: u64 = 1;
const ZFS_XATTR_SA: u64 = 2;

impl ZfsPool {
    fn lzc(&self) -> Result<&'static sys::zfs::Lzc> {
        sys::zfs::Lzc::get().map_err(|e| {
            Error::invalid(format!(
                "storage {:?} is zfspool but libzfs_core is not installed ({e}); install \
                 libzfs4linux (it provides libzfs_core.so.3)",
                self.id
            ))
        })
    }

    /// The dataset properties Proxmox's ZFS plugin sets on a container subvol.
    pub fn properties(size_gib: u64) -> Vec<(&'static str, sys::zfs::PropValue)> {
        let mut props = vec![
            ("acltype", sys::zfs::PropValue::U64(ZFS_ACLTYPE_POSIX)),
            ("xattr", sys::zfs::PropValue::U64(ZFS_XATTR_SA)),
        ];
        if size_gib > 0 {
            props.push(("refquota", sys::zfs::PropValue::U64(size_gib << 30)));
        }
        props
    }

    /// The lowest free disk name `subvol-<vmid>-disk-<N>` below the pool.
    fn free_name(&self, lzc: &sys::zfs::Lzc, vmid: u32) -> Result<String> {
        for n in 0..10_000 {
            let taken = ["vm", "base", "subvol", "basevol"]
                .iter()
                .any(|p| lzc.exists(&format!("{}/{p}-{vmid}-disk-{n}", self.pool)));
            if !taken {
                return Ok(format!("subvol-{vmid}-disk-{n}"));
            }
        }
        Err(Error::invalid(format!(
            "storage {:?}: no free disk number for vmid {vmid}",
            self.id
        )))
    }
}

impl Storage for ZfsPool {
    fn alloc(&self, vmid: u32, size_gib: u64) -> Result<Volume> {
        let lzc = self.lzc()?;
        if !lzc.exists(&self.pool) {
            return Err(Error::invalid(format!(
                "storage {:?}: dataset {} does not exist",
                self.id, self.pool
            )));
        }
        let parent_mount = zfs_mount_point(&self.pool)?;
        let name = self.free_name(lzc, vmid)?;
        let dataset = format!("{}/{name}", self.pool);
        lzc.create_filesystem(&dataset, &Self::properties(size_gib))
            .map_err(|e| Error::os(format!("creating ZFS dataset {dataset}"), e))?;
        // The dataset inherits its mountpoint property from the parent, so mounting it where
        // `zfs mount` would (the parent's mount point + name) keeps `zfs get mountpoint` true.
        let path = parent_mount.join(&name);
        let mounted = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&path)
            .ctx(|| format!("creating {}", path.display()))
            .and_then(|_| {
                let opts = format!("zfsutil,mntpoint={}", path.display());
                mount(
                    Some(dataset.as_str()),
                    &path,
                    Some("zfs"),
                    MsFlags::empty(),
                    Some(opts.as_str()),
                )
                .ctx(|| format!("mounting ZFS dataset {dataset} on {}", path.display()))
            });
        if let Err(e) = mounted {
            let _ = lzc.destroy(&dataset);
            return Err(e);
        }
        Ok(Volume {
            volid: format!("{}:{name}", self.id),
            path,
            size_gib,
            dataset: Some(dataset),
        })
    }

    fn free(&self, volume: &Volume) -> Result<()> {
        let Some(dataset) = &volume.dataset else {
            return Err(Error::invalid(format!(
                "volume {} has no dataset",
                volume.volid
            )));
        };
        let lzc = self.lzc()?;
        if !lzc.exists(dataset) {
            return Ok(());
        }
        match umount2(&volume.path, MntFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::from(e).context(format!("unmounting {}", volume.path.display())))
            }
        }
        lzc.destroy(dataset)
            .map_err(|e| Error::os(format!("destroying ZFS dataset {dataset}"), e))?;
        // The empty mount point directory is ours too.
        let _ = fs::remove_dir(&volume.path);
        Ok(())
    }
}

/// Where the ZFS dataset `name` is mounted, from /proc/self/mountinfo.
fn zfs_mount_point(name: &str) -> Result<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading mountinfo")?;
    mount_point_in(&info, name).ok_or_else(|| {
        Error::invalid(format!(
            "ZFS dataset {name} is not mounted (its volumes are mounted below it)"
        ))
    })
}

fn mount_point_in(mountinfo: &str, source: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        let (fstype, src) = (r.next()?, r.next()?);
        if fstype != "zfs" || src != source {
            return None;
        }
        Some(PathBuf::from(unescape_octal(left.split(' ').nth(4)?)))
    })
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn zfs_properties_match_proxmoxs_subvols() {
        use sys::zfs::PropValue::U64;
        let p = ZfsPool::properties(8);
        assert_eq!(
            p,
            [
                ("acltype", U64(1)),
                ("xattr", U64(2)),
                ("refquota", U64(8 << 30))
            ]
        );
        assert!(!ZfsPool::properties(0).iter().any(|(k, _)| *k == "refquota"));
    }

    #[test]
    fn zfs_mount_points_are_found_in_mountinfo() {
        let info = "\
25 1 0:22 / / rw - ext4 /dev/sda1 rw
80 25 0:50 / /rpool rw,noatime shared:40 - zfs rpool rw,xattr,noacl
81 80 0:51 / /rpool/my\\040data rw,noatime shared:41 - zfs rpool/data rw,xattr,posixacl
";
        assert_eq!(
            mount_point_in(info, "rpool/data"),
            Some("/rpool/my data".into())
        );
        assert_eq!(mount_point_in(info, "rpool"), Some("/rpool".into()));
        assert_eq!(mount_point_in(info, "tank"), None);
    }

    #[test]
    fn zfspool_without_libzfs_core_is_a_clear_error() {
        if sys::zfs::Lzc::get().is_ok() {
            eprintln!("libzfs_core is installed here: the missing-library error cannot be shown");
            return;
        }
        let s = open(&StorageConfig {
            id: "local-zfs".into(),
            kind: StorageKind::ZfsPool {
                pool: "rpool/data".into(),
            },
        });
        let e = s.alloc(100, 8).err().unwrap().to_string();
        assert!(
            e.contains("storage \"local-zfs\" is zfspool but libzfs_core is not installed"),
            "{e}"
        );
    }
}
