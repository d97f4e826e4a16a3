//! Proxmox visibility: a container that opts in (runtime config or annotation) gets a vmid, a
//! volume on a Proxmox storage holding its root filesystem, and a pct config, all written
//! locally, so that Proxmox VE lists it as a container of its own. `setup` does this during
//! `create` (before the init is cloned) and undoes every step on failure; `teardown` reverses it
//! on `delete`.

pub mod annotations;
pub mod copy;
pub mod guest;
pub mod lxc_protocol;
pub mod monitor;
pub mod pct;
pub mod storage;
pub mod vmid;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{self, ProxmoxConfig};
use crate::error::{Error, Result};
use crate::spec::Bundle;
use annotations::Annotations;
use storage::Volume;
use vmid::{Claim, PveDirs, VmidLock};

/// What a container's state remembers of its Proxmox side, so that `delete` can undo it without
/// reading the runtime config again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub vmid: u32,
    /// `<pve>/lxc/<vmid>.conf`.
    pub config: PathBuf,
    pub lock_dir: PathBuf,
    /// Where the LXC command socket lives (proxmox.lxcpath).
    #[serde(default = "default_lxcpath")]
    pub lxcpath: PathBuf,
    pub volume: Volume,
    /// Leave config and volume behind on delete (proxmox.keep at create time).
    pub keep: bool,
}

fn default_lxcpath() -> PathBuf {
    PathBuf::from("/var/lib/lxc")
}

/// The Proxmox side of a create in progress; dropping it undoes everything done so far
/// (volume, config, lock), unless it was committed.
pub struct Setup {
    claim: Option<Claim>,
    volume: Option<Volume>,
    lock_dir: PathBuf,
    lxcpath: PathBuf,
    keep: bool,
}

impl Setup {
    /// What the container's state must remember.
    pub fn record(&self) -> Option<Record> {
        let claim = self.claim.as_ref()?;
        Some(Record {
            vmid: claim.vmid,
            config: claim.config.clone(),
            lock_dir: self.lock_dir.clone(),
            lxcpath: self.lxcpath.clone(),
            volume: self.volume.clone()?,
            keep: self.keep,
        })
    }

    /// The create succeeded: keep everything and release the vmid lock.
    pub fn commit(mut self) {
        self.volume = None;
        self.claim = None;
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(volume) = self.volume.take() {
            if let Err(e) = storage::free(&volume) {
                eprintln!("proxmox-lxcri: undoing create: {e}");
            }
        }
        if let Some(claim) = self.claim.take() {
            let _ = std::fs::remove_file(&claim.config);
            // The lock goes with `claim`, after the config: no one may take the vmid while
            // the half-made config still exists.
        }
    }
}

/// Makes the container pct-visible if it asks to be (or the runtime config says so and it does
/// not refuse): vmid, volume holding the rootfs (a copy, or on ZFS a clone of the content's
/// template), pct config. Points `bundle.rootfs` at the
/// volume, which from then on is the container's root. None for a container Proxmox should not
/// see; nothing is read from disk for one that opts out by annotation.
pub fn setup(config_flag: Option<&Path>, id: &str, bundle: &mut Bundle) -> Result<Option<Setup>> {
    let annotations = match bundle.spec.annotations() {
        Some(map) => Annotations::parse(map)?,
        None => Annotations::default(),
    };
    if annotations.enabled == Some(false) {
        return Ok(None);
    }
    let cfg = config::load(config_flag)?.proxmox;
    if !annotations.enabled.unwrap_or(cfg.enabled) {
        return Ok(None);
    }
    let storage_cfg = storage_for(&cfg, &annotations)?;
    let storage = storage::open(storage_cfg);
    // The content key costs a walk of the tree's metadata: only for a backend that clones.
    let content_key = if storage.clones()
        && storage::content::clone_wanted(bundle.spec.annotations().as_ref())?
    {
        let digest = storage::content::image_digest(bundle.spec.annotations().as_ref())?;
        Some(storage::content::key(
            digest.as_ref().map(|d| d.1.as_str()),
            &bundle.rootfs,
        )?)
    } else {
        None
    };
    let dirs = PveDirs::new(&cfg.config_dir, &cfg.lock_dir);
    let mut setup = Setup {
        claim: None,
        volume: None,
        lock_dir: cfg.lock_dir.clone(),
        lxcpath: cfg.lxcpath.clone(),
        keep: cfg.keep,
    };

    let placeholder = pct::PctConfig {
        main: pct::Section {
            description: vec![guest::marker(id)],
            keys: [("lock".to_string(), "create".to_string())].into(),
            lxc: Vec::new(),
        },
        ..Default::default()
    }
    .render()?;
    let claim = vmid::claim(&dirs, cfg.vmid_range, annotations.vmid, &placeholder)?;
    let (vmid, config_path) = (claim.vmid, claim.config.clone());
    setup.claim = Some(claim);
    fail_point("vmid")?;

    let size = annotations.size_gib.unwrap_or(cfg.default_disk_size_gib);
    let cloned = match &content_key {
        Some(key) => storage.alloc_clone(vmid, size, key, &bundle.rootfs, &cfg.lock_dir)?,
        None => None,
    };
    let filled = cloned.is_some();
    let volume = match cloned {
        Some(v) => v,
        None => storage.alloc(vmid, size)?,
    };
    let volume_path = volume.path.clone();
    setup.volume = Some(volume);
    fail_point("volume")?;

    if !filled {
        storage::copy_into(&bundle.rootfs, &volume_path)?;
    }
    fail_point("copy")?;

    let conf = guest::config(&guest::Inputs {
        id,
        bundle,
        rootfs: &bundle.rootfs,
        volume: setup
            .volume
            .as_ref()
            .ok_or_else(|| Error::invalid("volume lost"))?,
        net0: annotations.net0.as_deref(),
    });
    conf.check_lxc_keys()?;
    pct::write_atomic(&config_path, &conf.render()?)?;
    fail_point("config")?;

    bundle.rootfs = volume_path;
    Ok(Some(setup))
}

fn storage_for<'a>(
    cfg: &'a ProxmoxConfig,
    annotations: &Annotations,
) -> Result<&'a config::StorageConfig> {
    match (
        &annotations.storage,
        cfg.storage(annotations.storage.as_deref()),
    ) {
        (_, Some(s)) => Ok(s),
        (Some(id), None) => Err(Error::invalid(format!(
            "annotation {}: storage {id:?} is not configured in proxmox.storage",
            annotations::STORAGE
        ))),
        (None, None) => Err(Error::invalid(format!(
            "annotation {}: proxmox.storage is not configured in {}",
            annotations::ENABLED,
            config::path(None).display()
        ))),
    }
}

/// Undoes `setup` on delete: the volume, then the config (only if it still describes this
/// container), under the vmid's lock. Nothing when the record says keep.
pub fn teardown(id: &str, record: &Record) -> Result<()> {
    if record.keep {
        return Ok(());
    }
    let _lock = VmidLock::lock(&record.lock_dir, record.vmid, Duration::from_secs(10))?;
    storage::free(&record.volume)?;
    match pct::PctConfig::read(&record.config) {
        Ok(conf) if conf.main.description.first() == Some(&guest::marker(id)) => {
            match std::fs::remove_file(&record.config) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::os(
                    format!("removing {}", record.config.display()),
                    e,
                )),
            }
        }
        _ if !record.config.exists() => Ok(()),
        _ => {
            eprintln!(
                "proxmox-lxcri: {} no longer describes container {id:?}: left in place",
                record.config.display()
            );
            Ok(())
        }
    }
}

/// A test hook: `PROXMOX_LXCRI_FAIL_AT=<step>` makes a create fail right after `step`
/// (vmid, volume, copy, config, created), to prove that every step is undone. Compiled into
/// debug builds only.
#[cfg(debug_assertions)]
pub fn fail_point(step: &str) -> Result<()> {
    match std::env::var("PROXMOX_LXCRI_FAIL_AT") {
        Ok(s) if s == step => Err(Error::invalid(format!(
            "injected failure after step {step:?} (PROXMOX_LXCRI_FAIL_AT)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn fail_point(_step: &str) -> Result<()> {
    Ok(())
}
