//! The `zfspool` backend, through libzfs_core (loaded on first use; no `zfs` command forks).
//!
//! A container's volume is the dataset `<pool>/subvol-<vmid>-disk-<N>` with `acltype=posixacl`,
//! `xattr=sa` and `refquota=<size>`, as Proxmox's ZFS plugin makes a container subvol, mounted
//! where `zfs mount` would put it (the parent's mount point + name).
//!
//! O(1) clones: the first container from a given content (see `content`) fills a template
//! dataset `<pool>/basevol-lxcri-<key>` and snapshots it as `@__base__` (Proxmox's name for
//! the snapshot its linked clones come from); every container from that content, the first
//! included, is an `lzc_clone` of that snapshot. Proxmox's own templates are
//! `basevol-<vmid>-disk-<N>`, owned by a template guest; ours belong to no guest, and a name
//! without a vmid keeps Proxmox from listing it as any guest's disk or freeing it with one.
//! Templates are a cache: delete never destroys one (a template with clones cannot be
//! destroyed anyway); a create that made a template and then fails destroys it, unless another
//! container has been cloned from it meanwhile.

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{copy_into, Storage, Volume};
use crate::error::{Context, Error, Result};
use crate::proxmox::fail_point;

pub struct ZfsPool {
    pub(super) id: String,
    pub(super) pool: String,
}

/// zfs_prop values of the index properties we set (include/sys/fs/zfs.h).
const ZFS_ACLTYPE_POSIX: u64 = 1;
const ZFS_XATTR_SA: u64 = 2;
const ZFS_CANMOUNT_NOAUTO: u64 = 2;
/// The snapshot clones come from, named as Proxmox names its templates' snapshots.
const BASE_SNAPSHOT: &str = "__base__";
const TEMPLATE_PREFIX: &str = "basevol-lxcri-";

impl ZfsPool {
    fn lzc(&self) -> Result<&'static sys::zfs::Lzc> {
        sys::zfs::Lzc::get()
            .map_err(|e| Error::invalid(format!("storage {:?} (zfspool): {e}", self.id)))
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

    /// The template dataset for a content key.
    pub fn template_name(&self, key: &str) -> String {
        format!("{}/{TEMPLATE_PREFIX}{key}", self.pool)
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

    /// Checks the pool and returns libzfs_core with the pool's mount point.
    fn open(&self) -> Result<(&'static sys::zfs::Lzc, PathBuf)> {
        let lzc = self.lzc()?;
        if !lzc.exists(&self.pool) {
            return Err(Error::invalid(format!(
                "storage {:?}: dataset {} does not exist",
                self.id, self.pool
            )));
        }
        Ok((lzc, zfs_mount_point(&self.pool)?))
    }

    /// Makes the volume with `make` (create or clone), then mounts it; destroyed again if the
    /// mount fails.
    fn new_volume(
        &self,
        lzc: &sys::zfs::Lzc,
        parent_mount: &Path,
        vmid: u32,
        size_gib: u64,
        make: impl FnOnce(&str) -> std::io::Result<()>,
    ) -> Result<Volume> {
        let name = self.free_name(lzc, vmid)?;
        let dataset = format!("{}/{name}", self.pool);
        make(&dataset).map_err(|e| Error::os(format!("creating ZFS dataset {dataset}"), e))?;
        let path = parent_mount.join(&name);
        if let Err(e) = mount_dataset(&dataset, &path) {
            let _ = lzc.destroy(&dataset);
            let _ = fs::remove_dir(&path);
            return Err(e);
        }
        Ok(Volume {
            volid: format!("{}:{name}", self.id),
            path,
            size_gib,
            dataset: Some(dataset),
            made_template: None,
        })
    }

    /// Under the template's lock: the snapshot to clone, filled from `source` first if it does
    /// not exist yet. True when this call made the template.
    fn ensure_template(
        &self,
        lzc: &sys::zfs::Lzc,
        parent_mount: &Path,
        key: &str,
        source: &Path,
    ) -> Result<bool> {
        let template = self.template_name(key);
        let snap = format!("{template}@{BASE_SNAPSHOT}");
        if lzc.exists(&snap) {
            return Ok(false);
        }
        let path = parent_mount.join(format!("{TEMPLATE_PREFIX}{key}"));
        if lzc.exists(&template) {
            // Left by a create that died while filling it (we hold the lock): start over.
            unmount(&path)?;
            lzc.destroy(&template)
                .map_err(|e| Error::os(format!("destroying stale template {template}"), e))?;
        }
        // canmount=noauto: `zfs mount -a` at boot leaves the template alone.
        let mut props = Self::properties(0);
        props.push(("canmount", sys::zfs::PropValue::U64(ZFS_CANMOUNT_NOAUTO)));
        lzc.create_filesystem(&template, &props)
            .map_err(|e| Error::os(format!("creating ZFS template {template}"), e))?;
        let filled = mount_dataset(&template, &path)
            .and_then(|_| {
                let copied = copy_into(source, &path);
                let unmounted = unmount(&path);
                copied.and(unmounted)
            })
            .and_then(|_| {
                lzc.snapshot(&snap)
                    .map_err(|e| Error::os(format!("snapshotting {snap}"), e))
            })
            .and_then(|_| fail_point("template"));
        if let Err(e) = filled {
            let _ = unmount(&path);
            let _ = fs::remove_dir(&path);
            destroy_template(lzc, &template);
            return Err(e);
        }
        let _ = fs::remove_dir(&path);
        Ok(true)
    }
}

impl Storage for ZfsPool {
    fn alloc(&self, vmid: u32, size_gib: u64) -> Result<Volume> {
        let (lzc, parent_mount) = self.open()?;
        let props = Self::properties(size_gib);
        self.new_volume(lzc, &parent_mount, vmid, size_gib, |ds| {
            lzc.create_filesystem(ds, &props)
        })
    }

    fn alloc_clone(
        &self,
        vmid: u32,
        size_gib: u64,
        key: &str,
        source: &Path,
        lock_dir: &Path,
    ) -> Result<Option<Volume>> {
        let (lzc, parent_mount) = self.open()?;
        let _lock = template_lock(lock_dir, key)?;
        let made = self.ensure_template(lzc, &parent_mount, key, source)?;
        let template = self.template_name(key);
        let snap = format!("{template}@{BASE_SNAPSHOT}");
        let props = Self::properties(size_gib);
        let volume = self.new_volume(lzc, &parent_mount, vmid, size_gib, |ds| {
            lzc.clone(ds, &snap, &props)
        });
        match volume {
            Ok(mut v) => {
                v.made_template = made.then_some(template);
                Ok(Some(v))
            }
            Err(e) => {
                if made {
                    destroy_template(lzc, &template);
                }
                Err(e)
            }
        }
    }

    fn clones(&self) -> bool {
        true
    }

    fn free(&self, volume: &Volume) -> Result<()> {
        let Some(dataset) = &volume.dataset else {
            return Err(Error::invalid(format!(
                "volume {} has no dataset",
                volume.volid
            )));
        };
        let lzc = self.lzc()?;
        if lzc.exists(dataset) {
            unmount(&volume.path)?;
            lzc.destroy(dataset)
                .map_err(|e| Error::os(format!("destroying ZFS dataset {dataset}"), e))?;
            // The empty mount point directory is ours too.
            let _ = fs::remove_dir(&volume.path);
        }
        if let Some(template) = &volume.made_template {
            destroy_template(lzc, template);
        }
        Ok(())
    }
}

/// Destroys a template made by a failed create: its snapshot first, which fails (EEXIST) when
/// someone else cloned it meanwhile, and then the template stays.
fn destroy_template(lzc: &sys::zfs::Lzc, template: &str) {
    let snap = format!("{template}@{BASE_SNAPSHOT}");
    if lzc.exists(&snap) && lzc.destroy_snapshot(&snap).is_err() {
        return;
    }
    if let Err(e) = lzc.destroy(template) {
        eprintln!("proxmox-lxcri: undoing create: destroying ZFS template {template}: {e}");
    }
}

/// One filler per template: a second create from the same content waits, then clones.
fn template_lock(lock_dir: &Path, key: &str) -> Result<Flock<File>> {
    let name = format!("lxcri-template-{key}.lock");
    let file = crate::fsutil::open_lock_file(lock_dir, &name)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| {
        Error::from(e).context(format!("locking {}", lock_dir.join(&name).display()))
    })
}

fn mount_dataset(dataset: &str, path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .ctx(|| format!("creating {}", path.display()))?;
    let opts = format!("zfsutil,mntpoint={}", path.display());
    mount(
        Some(dataset),
        path,
        Some("zfs"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .ctx(|| format!("mounting ZFS dataset {dataset} on {}", path.display()))
}

fn unmount(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::from(e).context(format!("unmounting {}", path.display()))),
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
    use crate::config::{StorageConfig, StorageKind};

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
    fn templates_are_named_by_content_outside_proxmoxs_vmid_names() {
        let z = ZfsPool {
            id: "local-zfs".into(),
            pool: "rpool/data".into(),
        };
        let name = z.template_name(&"ab".repeat(32));
        assert_eq!(
            name,
            format!("rpool/data/basevol-lxcri-{}", "ab".repeat(32))
        );
        // No vmid in it: Proxmox's `(vm|base|subvol|basevol)-<vmid>-` parsing never matches.
        let leaf = name.rsplit('/').next().unwrap();
        assert!(super::super::disk_number(leaf, 0).is_none());
        assert!(leaf.len() < 100);
    }

    #[test]
    fn zfspool_without_zfs_is_a_clear_error_naming_the_storage() {
        if sys::zfs::Lzc::get().is_ok() {
            eprintln!("libzfs_core loaded and /dev/zfs opened here: the error cannot be shown");
            return;
        }
        let s = super::super::open(&StorageConfig {
            id: "local-zfs".into(),
            kind: StorageKind::ZfsPool {
                pool: "rpool/data".into(),
            },
        });
        let e = s.alloc(100, 8).err().unwrap().to_string();
        assert!(e.contains("storage \"local-zfs\" (zfspool): "), "{e}");
        assert!(
            e.contains("libzfs_core.so.3") || e.contains("/dev/zfs"),
            "{e}"
        );
    }
}
