//! Loading config.json and checking all of it before the system is touched: every error names the
//! field (`mounts[2].destination`) or path at fault.

use std::collections::HashSet;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Context, Error, Result};
use crate::linux::idmap::UserNs;

/// A bundle whose config passed validation, with the namespace files it joins already open (so
/// that what was checked is what gets joined).
pub struct Bundle {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub spec: Spec,
    pub joined_namespaces: Vec<(LinuxNamespaceType, OwnedFd)>,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Self> {
        let dir = fs::canonicalize(dir).ctx(|| format!("bundle {}", dir.display()))?;
        let config = dir.join("config.json");
        let data = fs::read(&config).ctx(|| format!("reading {}", config.display()))?;
        let spec: Spec = serde_json::from_slice(&data).map_err(|e| {
            // serde names an unknown enum value by line and column only; name the field.
            serde_json::from_slice(&data)
                .ok()
                .and_then(|v| {
                    crate::linux::seccomp::diagnose(&v)
                        .or_else(|| crate::linux::capabilities::diagnose(&v))
                })
                .unwrap_or_else(|| Error::invalid(format!("{}: {e}", config.display())))
        })?;
        let rootfs = rootfs_path(&dir, &spec)?;
        let joined_namespaces = validate(&spec)?;
        Ok(Bundle {
            dir,
            rootfs,
            spec,
            joined_namespaces,
        })
    }

    pub fn has_namespace(&self, kind: LinuxNamespaceType) -> bool {
        namespaces(&self.spec).any(|ns| ns.typ() == kind)
    }

    /// A namespace the container gets new (listed without a path).
    pub fn creates_namespace(&self, kind: LinuxNamespaceType) -> bool {
        namespaces(&self.spec).any(|ns| ns.typ() == kind && ns.path().is_none())
    }
}

fn namespaces(spec: &Spec) -> impl Iterator<Item = &oci_spec::runtime::LinuxNamespace> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
}

fn rootfs_path(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::invalid("root: missing from config.json"))?;
    let path = bundle.join(root.path());
    let rootfs = fs::canonicalize(&path).ctx(|| format!("root.path {}", path.display()))?;
    if !rootfs.is_dir() {
        return Err(Error::invalid(format!(
            "root.path {}: not a directory",
            rootfs.display()
        )));
    }
    Ok(rootfs)
}

fn validate(spec: &Spec) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>> {
    let version = spec.version();
    if version.split('.').next() != Some("1") {
        return Err(Error::invalid(format!(
            "ociVersion {version:?} is not supported: this runtime implements 1.x"
        )));
    }
    validate_process(spec)?;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(Error::invalid(format!(
                "mounts[{i}].destination {:?} must be an absolute path",
                m.destination()
            )));
        }
    }
    let Some(linux) = spec.linux() else {
        return Err(Error::invalid("linux: missing from config.json"));
    };
    let joined = validate_namespaces(spec)?;
    let new_uts =
        namespaces(spec).any(|n| n.typ() == LinuxNamespaceType::Uts && n.path().is_none());
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !new_uts {
        return Err(Error::invalid(
            "hostname: cannot be set without a new uts namespace in linux.namespaces",
        ));
    }
    let joined_user = joined
        .iter()
        .find(|(k, _)| *k == LinuxNamespaceType::User)
        .map(|(_, fd)| fd);
    let userns = match (
        namespaces(spec).any(|n| n.typ() == LinuxNamespaceType::User),
        joined_user,
    ) {
        (_, Some(fd)) => UserNs::Joined(fd),
        (true, None) => UserNs::New,
        (false, None) => UserNs::None,
    };
    crate::linux::idmap::validate(linux, userns)?;
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        if !d.path().is_absolute() {
            return Err(Error::invalid(format!(
                "linux.devices[{i}].path {:?} must be an absolute path",
                d.path()
            )));
        }
    }
    if let Some(p) = linux.rootfs_propagation() {
        crate::linux::mounts::propagation_flags(p)
            .ok_or_else(|| Error::invalid(format!("linux.rootfsPropagation {p:?} is unknown")))?;
    }
    if let Some(seccomp) = linux.seccomp() {
        crate::linux::seccomp::validate(seccomp)?;
    }
    if let Some(path) = linux.cgroups_path() {
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(Error::invalid(format!(
                "linux.cgroupsPath {path:?} must not contain '..'"
            )));
        }
    }
    if let Some(r) = linux.resources() {
        crate::linux::resources::validate(r, "linux.resources")?;
    }
    Ok(joined)
}

fn validate_process(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("process: missing from config.json"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::invalid("process.args must not be empty"));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::invalid(format!(
            "process.cwd {:?} must be an absolute path",
            process.cwd()
        )));
    }
    let mut seen = HashSet::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        if !seen.insert(format!("{:?}", r.typ())) {
            return Err(Error::invalid(format!(
                "process.rlimits[{i}]: {:?} given twice",
                r.typ()
            )));
        }
        if r.soft() > r.hard() {
            return Err(Error::invalid(format!(
                "process.rlimits[{i}]: soft limit {} exceeds hard limit {}",
                r.soft(),
                r.hard()
            )));
        }
    }
    crate::linux::capabilities::CapabilitySets::from_spec(process.capabilities().as_ref())?;
    Ok(())
}

/// Checks the namespace list and opens each namespace given by path, proving it is one of the
/// declared type (a regular file, or a uts namespace passed as `network`, is refused here).
fn validate_namespaces(spec: &Spec) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>> {
    let mut seen = HashSet::new();
    let mut joined = Vec::new();
    for (i, ns) in namespaces(spec).enumerate() {
        if !seen.insert(ns.typ()) {
            return Err(Error::invalid(format!(
                "linux.namespaces[{i}]: {} namespace listed twice",
                ns.typ()
            )));
        }
        let Some(path) = ns.path() else { continue };
        let file = fs::File::open(path)
            .ctx(|| format!("linux.namespaces[{i}].path {}", path.display()))?;
        let fd = OwnedFd::from(file);
        let actual = sys::namespace_type(fd.as_fd()).map_err(|_| {
            Error::invalid(format!(
                "linux.namespaces[{i}].path {}: not a namespace",
                path.display()
            ))
        })?;
        if actual != ns.typ() as i32 {
            return Err(Error::invalid(format!(
                "linux.namespaces[{i}].path {}: not a {} namespace",
                path.display(),
                ns.typ()
            )));
        }
        joined.push((ns.typ(), fd));
    }
    Ok(joined)
}
