//! vmid allocation: the lowest vmid of the range that no guest uses — not in `<pve>/lxc/`, not
//! in `<pve>/qemu-server/`, not in the cluster's `<pve>/.vmlist` — taken under pct's own
//! per-vmid lock (`<lock_dir>/pve-config-<vmid>.lock`, flock) and claimed by creating
//! `<vmid>.conf` with O_EXCL, which pmxcfs refuses (EEXIST) for a vmid used anywhere in the
//! cluster. A concurrent create (ours or pct's) either holds the lock or has made the file, and
//! we move on to the next vmid.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Where Proxmox keeps guest configs: `<pve>/lxc` and its siblings.
pub struct PveDirs {
    pub lxc: PathBuf,
    pub qemu: PathBuf,
    pub vmlist: PathBuf,
    pub lock_dir: PathBuf,
}

impl PveDirs {
    pub fn new(config_dir: &Path, lock_dir: &Path) -> Self {
        let pve = config_dir.parent().unwrap_or(Path::new("/"));
        PveDirs {
            lxc: config_dir.to_path_buf(),
            qemu: pve.join("qemu-server"),
            vmlist: pve.join(".vmlist"),
            lock_dir: lock_dir.to_path_buf(),
        }
    }

    pub fn config_path(&self, vmid: u32) -> PathBuf {
        self.lxc.join(format!("{vmid}.conf"))
    }
}

/// pct's lock on one vmid, held while the value lives.
pub struct VmidLock {
    _lock: Flock<File>,
}

impl VmidLock {
    /// Takes the lock without waiting; `Ok(None)` when someone else holds it.
    pub fn try_lock(lock_dir: &Path, vmid: u32) -> Result<Option<Self>> {
        // pct opens its lock files for append (Perl's ">>") and never removes them.
        let name = format!("pve-config-{vmid}.lock");
        let file = crate::fsutil::open_lock_file(lock_dir, &name)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(VmidLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => {
                Err(Error::from(e).context(format!("locking {}", lock_dir.join(&name).display())))
            }
        }
    }

    /// Waits up to `timeout` for the lock (pct waits 10 s for its own).
    pub fn lock(lock_dir: &Path, vmid: u32, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = Self::try_lock(lock_dir, vmid)? {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(Error::invalid(format!(
                    "vmid {vmid}: {}/pve-config-{vmid}.lock is held by another process",
                    lock_dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A vmid claimed for a new container: its lock is held and its config file exists (with a
/// placeholder until the real config replaces it).
pub struct Claim {
    pub vmid: u32,
    pub config: PathBuf,
    /// Held until the claim is dropped (the create committed or was undone).
    pub _lock: VmidLock,
}

/// Claims `requested`, or else the lowest free vmid of `range`. `placeholder` is what the config
/// file holds until it is written for real (pct writes `lock: create` the same way).
pub fn claim(
    dirs: &PveDirs,
    range: (u32, u32),
    requested: Option<u32>,
    placeholder: &str,
) -> Result<Claim> {
    let used = used_vmids(dirs)?;
    if let Some(vmid) = requested {
        if used.contains(&vmid) {
            return Err(Error::invalid(format!(
                "vmid {vmid} is already used by a Proxmox guest"
            )));
        }
        return try_claim(dirs, vmid, placeholder)?
            .ok_or_else(|| Error::invalid(format!("vmid {vmid} is already in use")));
    }
    for vmid in range.0..=range.1 {
        if used.contains(&vmid) {
            continue;
        }
        if let Some(c) = try_claim(dirs, vmid, placeholder)? {
            return Ok(c);
        }
    }
    Err(Error::invalid(format!(
        "no free vmid left in proxmox.vmid_range [{}, {}]",
        range.0, range.1
    )))
}

fn try_claim(dirs: &PveDirs, vmid: u32, placeholder: &str) -> Result<Option<Claim>> {
    let Some(lock) = VmidLock::try_lock(&dirs.lock_dir, vmid)? else {
        return Ok(None);
    };
    // Made by a VM between our scan and the lock?
    if dirs.qemu.join(format!("{vmid}.conf")).exists() {
        return Ok(None);
    }
    let config = dirs.config_path(vmid);
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(&config)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(Error::os(format!("creating {}", config.display()), e)),
    };
    if let Err(e) = file.write_all(placeholder.as_bytes()) {
        drop(file);
        let _ = fs::remove_file(&config);
        return Err(Error::os(format!("writing {}", config.display()), e));
    }
    Ok(Some(Claim {
        vmid,
        config,
        _lock: lock,
    }))
}

/// Every vmid some guest uses, as far as this node can tell.
pub fn used_vmids(dirs: &PveDirs) -> Result<HashSet<u32>> {
    let mut used = HashSet::new();
    for dir in [&dirs.lxc, &dirs.qemu] {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == &dirs.qemu => continue,
            Err(e) => return Err(Error::os(format!("reading {}", dir.display()), e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(vmid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".conf"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                used.insert(vmid);
            }
        }
    }
    match fs::read(&dirs.vmlist) {
        Ok(data) => used.extend(parse_vmlist(&data).map_err(|e| e.context(dirs.vmlist.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::os(format!("reading {}", dirs.vmlist.display()), e)),
    }
    Ok(used)
}

/// pmxcfs's `.vmlist`: `{"version": N, "ids": {"100": {"node": ..., "type": ...}, ...}}`.
fn parse_vmlist(data: &[u8]) -> Result<Vec<u32>> {
    let v: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| Error::invalid(e.to_string()))?;
    let ids = v
        .get("ids")
        .and_then(|i| i.as_object())
        .ok_or_else(|| Error::invalid("no \"ids\" object"))?;
    ids.keys()
        .map(|k| {
            k.parse::<u32>()
                .map_err(|_| Error::invalid(format!("ids: {k:?} is not a vmid")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn pve(name: &str) -> (Tmp, PveDirs) {
        let base = std::env::temp_dir().join(format!("lxcri-vmid-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("lxc")).unwrap();
        fs::create_dir_all(base.join("qemu-server")).unwrap();
        let dirs = PveDirs::new(&base.join("lxc"), &base.join("lock"));
        (Tmp(base), dirs)
    }

    #[test]
    fn the_lowest_vmid_free_everywhere_is_taken() {
        let (_t, d) = pve("lowest");
        fs::write(d.lxc.join("500.conf"), "").unwrap();
        fs::write(d.qemu.join("501.conf"), "").unwrap();
        fs::write(d.lxc.join("notes.txt"), "").unwrap();
        fs::write(
            &d.vmlist,
            r#"{"version": 7, "ids": {"502": {"node": "other", "type": "lxc", "version": 1}}}"#,
        )
        .unwrap();
        let c = claim(&d, (500, 600), None, "lock: create\n").unwrap();
        assert_eq!(c.vmid, 503);
        assert_eq!(fs::read_to_string(&c.config).unwrap(), "lock: create\n");
        // The claimed vmid now counts as used; a second claim gets the next one.
        let c2 = claim(&d, (500, 600), None, "").unwrap();
        assert_eq!(c2.vmid, 504);
    }

    #[test]
    fn a_requested_vmid_that_is_taken_is_an_error() {
        let (_t, d) = pve("requested");
        fs::write(d.qemu.join("510.conf"), "").unwrap();
        let e = claim(&d, (500, 600), Some(510), "")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("vmid 510"), "{e}");
        let c = claim(&d, (500, 600), Some(700), "").unwrap();
        assert_eq!(c.vmid, 700, "a requested vmid may lie outside the range");
        let e = claim(&d, (500, 600), Some(700), "")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("vmid 700"), "{e}");
    }

    #[test]
    fn a_locked_vmid_is_skipped() {
        let (_t, d) = pve("locked");
        let held = VmidLock::try_lock(&d.lock_dir, 500).unwrap().unwrap();
        assert_eq!(claim(&d, (500, 600), None, "").unwrap().vmid, 501);
        drop(held);
        assert_eq!(claim(&d, (500, 600), None, "").unwrap().vmid, 500);
    }

    #[test]
    fn a_full_range_and_a_broken_vmlist_are_errors() {
        let (_t, d) = pve("full");
        fs::write(d.lxc.join("500.conf"), "").unwrap();
        let e = claim(&d, (500, 500), None, "").err().unwrap().to_string();
        assert!(e.contains("no free vmid"), "{e}");
        fs::write(&d.vmlist, "{").unwrap();
        let e = claim(&d, (501, 510), None, "").err().unwrap().to_string();
        assert!(e.contains(".vmlist"), "{e}");
    }
}
