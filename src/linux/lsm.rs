//! Linux security module labels: `process.apparmorProfile`, `process.selinuxLabel` (applied to
//! the container's process at its execve) and `linux.mountLabel` (the `context=` of the mounts
//! that take one). A label asked for on a host whose LSM is not enabled is an error naming the
//! field, checked before anything exists: silently running unconfined is what the label was
//! meant to prevent.
//!
//! Labels are written to the task's own /proc attr files, each checked to be on a real procfs
//! once opened (CVE-2019-16884: a /proc the image or a volume supplied must not swallow them).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;

use oci_spec::runtime::{Process, Spec};

use crate::error::{Context, Error, Result};

/// The AppArmor profile name that means "no confinement". Asked for on a host without AppArmor it
/// is what the process gets anyway, so it is not refused there (a host with AppArmor applies it).
pub const APPARMOR_UNCONFINED: &str = "unconfined";

/// Read once, on the host's /sys (the parent's check before the clone fills it, and the init
/// inherits it): after pivot_root /sys is the container's, if it has one at all.
pub fn apparmor_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y")
    })
}

const SELINUX_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0xf97c_ff8c);

/// SELinux is enabled when selinuxfs is mounted where libselinux looks for it.
/// Read once, like apparmor_enabled.
pub fn selinux_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let fs = Path::new("/sys/fs/selinux");
        nix::sys::statfs::statfs(fs).is_ok_and(|st| st.filesystem_type() == SELINUX_MAGIC)
            && fs.join("enforce").exists()
    })
}

/// The labels one process is to be exec'd with (empty strings mean none, as in runc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    apparmor: Option<String>,
    selinux: Option<String>,
}

impl Labels {
    pub fn of(process: &Process) -> Labels {
        let set = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(String::from);
        let mut apparmor = set(process.apparmor_profile());
        if apparmor.as_deref() == Some(APPARMOR_UNCONFINED) && !apparmor_enabled() {
            apparmor = None;
        }
        Labels {
            apparmor,
            selinux: set(process.selinux_label()),
        }
    }

    /// Fails, naming the field (`what` is "process" or the exec option), when a label is asked
    /// for and its LSM is not enabled here.
    /// Why an execve failed with EPERM under no_new_privs when a label is set: the kernel lets
    /// a no_new_privs process change domains only where the policy allows it (SELinux's
    /// `nnp_transition`, an AppArmor profile that is a subset of the current one).
    pub fn nnp_refusal_hint(&self) -> Option<String> {
        let (field, label) = match (&self.selinux, &self.apparmor) {
            (Some(l), _) => ("process.selinuxLabel", l),
            (None, Some(l)) => ("process.apparmorProfile", l),
            (None, None) => return None,
        };
        Some(format!(
            "the LSM refused to enter {field} {label:?} with process.noNewPrivileges set: the \
             policy must allow that transition under no_new_privs (SELinux: nnp_transition), \
             or set noNewPrivileges to false"
        ))
    }

    pub fn check(&self, what: &str) -> Result<()> {
        if let Some(p) = &self.apparmor {
            if !apparmor_enabled() {
                return Err(Error::invalid(format!(
                    "{what}.apparmorProfile {p:?}: AppArmor is not enabled on this host \
                     (/sys/module/apparmor/parameters/enabled is not Y)"
                )));
            }
            if p.contains('\n') {
                return Err(Error::invalid(format!(
                    "{what}.apparmorProfile {p:?}: contains a newline"
                )));
            }
        }
        if let Some(l) = &self.selinux {
            if !selinux_enabled() {
                return Err(Error::invalid(format!(
                    "{what}.selinuxLabel {l:?}: SELinux is not enabled on this host \
                     (no selinuxfs at /sys/fs/selinux)"
                )));
            }
            check_context(&format!("{what}.selinuxLabel"), l)?;
        }
        Ok(())
    }

    /// Sets the labels the next execve gives this task: the last step before it (after the
    /// switch to the container's user; hooks forked before it stay unlabelled).
    pub fn apply_on_exec(&self) -> Result<()> {
        if let Some(profile) = &self.apparmor {
            let text = format!("exec {profile}");
            write_attr("apparmor/exec", text.as_bytes())
                .or_else(|e| match e.raw_os_error() {
                    // Kernels before 5.1 (no per-LSM directory) take it in the shared file.
                    Some(libc::ENOENT) if !attr_dir_exists("apparmor") => {
                        write_attr("exec", text.as_bytes())
                    }
                    _ => Err(e),
                })
                .map_err(|e| {
                    let what = match e.raw_os_error() {
                        Some(libc::ENOENT) => "no such profile is loaded in the kernel",
                        _ => "applying the profile",
                    };
                    Error::os(format!("process.apparmorProfile {profile:?}: {what}"), e)
                })?;
        }
        if let Some(label) = &self.selinux {
            write_attr("exec", label.as_bytes())
                .ctx(|| format!("process.selinuxLabel {label:?}: setting the exec label"))?;
        }
        Ok(())
    }
}

/// Sets the SELinux label of keys this task creates (the session keyring joined next), as runc
/// does; nothing without a label.
pub fn set_keyring_label(process: &Process) -> Result<()> {
    match process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        Some(label) if selinux_enabled() => write_attr("keycreate", label.as_bytes())
            .ctx(|| format!("process.selinuxLabel {label:?}: setting the keyring label")),
        _ => Ok(()),
    }
}

/// `linux.mountLabel`, when set.
pub fn mount_label(spec: &Spec) -> Option<&str> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.mount_label().as_deref())
        .filter(|l| !l.is_empty())
}

/// Everything in the spec that needs an LSM, checked before anything exists.
pub fn check_spec(spec: &Spec) -> Result<()> {
    if let Some(p) = spec.process() {
        Labels::of(p).check("process")?;
    }
    if let Some(label) = mount_label(spec) {
        if !selinux_enabled() {
            return Err(Error::invalid(format!(
                "linux.mountLabel {label:?}: SELinux is not enabled on this host \
                 (no selinuxfs at /sys/fs/selinux)"
            )));
        }
        if label.contains('"') {
            return Err(Error::invalid(format!(
                "linux.mountLabel {label:?}: a context cannot contain a double quote"
            )));
        }
        check_context("linux.mountLabel", label)?;
    }
    Ok(())
}

/// Refuses a context the loaded policy does not know, as the kernel would at its use: there the
/// error is a bare EINVAL from a mount or an attr write, here it names `field`. The kernel
/// validates what is written to selinuxfs's `context` (libselinux's security_check_context).
/// Any other failure (e.g. a policy denying check_context) leaves the check to that use.
fn check_context(field: &str, label: &str) -> Result<()> {
    let res = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/sys/fs/selinux/context")
        .and_then(|mut f| f.write(label.as_bytes()));
    match res {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(Error::invalid(format!(
            "{field} {label:?}: not a valid context in the loaded SELinux policy"
        ))),
        _ => Ok(()),
    }
}

/// The mount data that labels a new filesystem of type `typ` with `label` (runc's
/// label.FormatMountLabel): every filesystem but those whose files carry their own labels
/// (proc, sysfs, cgroups) or that take none (mqueue, labelled after mounting instead).
pub fn mount_context(typ: &str, label: &str) -> Option<String> {
    let own = ["proc", "sysfs", "cgroup", "cgroup2", "mqueue", "bind", ""];
    (!own.contains(&typ)).then(|| format!("context=\"{label}\""))
}

/// Labels the root of a just mounted filesystem that takes no `context=` option (mqueue), a
/// directory `path` names (e.g. a /proc/self/fd magic link to it).
pub fn label_mount_root(path: &Path, label: &str) -> Result<()> {
    let name = std::ffi::CString::new("security.selinux").unwrap_or_default();
    // "/.": the xattr call does not follow a last-component symlink, and on the /proc/self/fd
    // link itself procfs answers EOPNOTSUPP; through it, the directory is labelled.
    sys::xattr::set(&path.join("."), &name, label.as_bytes())
        .ctx(|| format!("linux.mountLabel {label:?}: labelling the mount's root"))
}

fn attr_dir_exists(lsm: &str) -> bool {
    Path::new("/proc/thread-self/attr").join(lsm).is_dir()
}

/// Writes `value` to /proc/thread-self/attr/`name`, in one write (the kernel takes a label only
/// whole), refusing a file that is not on a procfs.
fn write_attr(name: &str, value: &[u8]) -> std::io::Result<()> {
    let path = Path::new("/proc/thread-self/attr").join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)?;
    let st = nix::sys::statfs::fstatfs(file.as_fd()).map_err(std::io::Error::from)?;
    if st.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(std::io::Error::other(format!(
            "{} is not on a procfs",
            path.display()
        )));
    }
    let n = file.write(value)?;
    if n != value.len() {
        return Err(std::io::Error::other("short write"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_context_skips_filesystems_with_their_own_labels() {
        let l = "system_u:object_r:container_file_t:s0:c1,c2";
        assert_eq!(
            mount_context("tmpfs", l).as_deref(),
            Some("context=\"system_u:object_r:container_file_t:s0:c1,c2\"")
        );
        assert!(mount_context("devpts", l).is_some());
        for t in ["proc", "sysfs", "mqueue", "cgroup2"] {
            assert_eq!(mount_context(t, l), None, "{t}");
        }
    }

    #[test]
    fn empty_labels_are_no_labels() {
        let mut p = Process::default();
        p.set_apparmor_profile(Some(String::new()));
        p.set_selinux_label(Some(String::new()));
        assert_eq!(Labels::of(&p), Labels::default());
        assert!(Labels::of(&p).check("process").is_ok());
    }
}
