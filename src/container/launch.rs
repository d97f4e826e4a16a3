//! The last steps before a container process runs, shared by the init and by `exec`: resolve the
//! executable, build argv and env, set umask, drop to the spec's user and capabilities, then (once
//! released) the LSM exec labels, no_new_privs, close every runtime fd, load the seccomp filter
//! and execve.
//!
//! The filter is the last thing before execve, whatever noNewPrivileges says, so that a profile
//! may block any syscall the runtime itself makes (getcwd, fcntl, close_range, capset...). Without
//! no_new_privs, loading a filter needs CAP_SYS_ADMIN: the process keeps it in its effective and
//! permitted sets until then. execve drops it again: the sets after execve are computed from the
//! bounding, inheritable and ambient sets only, which are exactly the spec's.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use caps::{CapSet, Capability};
use nix::sys::prctl;
use nix::sys::stat::Mode;
use nix::unistd::fchdir;
use oci_spec::runtime::Process;

use crate::error::{Context, Error, Result};
use crate::linux::capabilities::CapabilitySets;
use crate::linux::lsm::Labels;
use crate::linux::mounts::{fd_path, open_or_create_in_root, Kind};
use crate::linux::process;
use crate::linux::seccomp::Filter;

/// A process ready to be exec'd: everything is checked and the credentials are final.
pub struct Launch {
    exe: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    preserve_fds: u32,
    no_new_privileges: bool,
    seccomp: Option<Filter>,
    labels: Labels,
}

impl Launch {
    /// Runs in the container's namespaces and root, still privileged; on return the process has
    /// the spec's user, groups and capabilities, and is non-dumpable.
    pub fn prepare(
        process: &Process,
        in_user_ns: bool,
        extra_env: &[String],
        preserve_fds: u32,
        seccomp: Option<Filter>,
    ) -> Result<Launch> {
        let exe = process::find_executable(process)?;
        let env = process::environment(process, extra_env)?;
        let args = process
            .args()
            .iter()
            .flatten()
            .map(|a| {
                CString::new(a.as_bytes())
                    .map_err(|_| Error::invalid("process.args: contains a NUL byte"))
            })
            .collect::<Result<Vec<_>>>()?;
        nix::sys::stat::umask(Mode::from_bits_truncate(
            process.user().umask().unwrap_or(0o022),
        ));

        let no_new_privileges = process.no_new_privileges().unwrap_or(false);
        let mut caps = CapabilitySets::from_spec(process.capabilities().as_ref())?;
        if seccomp.is_some()
            && !no_new_privileges
            && caps::has_cap(None, CapSet::Permitted, Capability::CAP_SYS_ADMIN).unwrap_or(false)
        {
            // For the seccomp load in exec(); see the module comment for why it cannot outlive
            // the execve.
            caps.effective.insert(Capability::CAP_SYS_ADMIN);
            caps.permitted.insert(Capability::CAP_SYS_ADMIN);
        }
        caps.drop_bounding()?;
        prctl::set_keepcaps(true).ctx(|| "prctl(PR_SET_KEEPCAPS)")?;
        let setgroups_allowed = !in_user_ns
            || std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "allow");
        process::switch_user(process, setgroups_allowed)?;
        prctl::set_keepcaps(false).ctx(|| "prctl(PR_SET_KEEPCAPS)")?;
        caps.apply()?;
        // The user switch may have made us dumpable again: not before the exec (CVE-2019-5736).
        prctl::set_dumpable(false).ctx(|| "prctl(PR_SET_DUMPABLE)")?;

        Ok(Launch {
            exe: CString::new(exe.as_os_str().as_bytes())
                .map_err(|_| Error::invalid("process.args[0]: NUL byte"))?,
            args,
            env,
            preserve_fds,
            no_new_privileges,
            seccomp,
            labels: Labels::of(process),
        })
    }

    /// The AppArmor/SELinux exec labels, no_new_privs, then every fd above the preserved ones
    /// close-on-exec, then the seccomp filter, then execve. Returns only on failure.
    pub fn exec(self) -> Error {
        // First, as in runc: before no_new_privs, and before the filter, which may block writes.
        if let Err(e) = self.labels.apply_on_exec() {
            return e;
        }
        if self.no_new_privileges {
            if let Err(e) = prctl::set_no_new_privs() {
                return Error::from(e).context("process.noNewPrivileges");
            }
        }
        // Preserved fds reach the process whatever flags the caller left on them, as in runc.
        for fd in 3..3 + self.preserve_fds as i32 {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            );
        }
        if let Err(e) = sys::close_range_cloexec(3 + self.preserve_fds) {
            return Error::os("close_range", e);
        }
        if let Some(filter) = self.seccomp {
            if let Err(e) = filter.load() {
                return e;
            }
        }
        match nix::unistd::execve(&self.exe, &self.args, &self.env) {
            Err(nix::errno::Errno::EPERM) if self.no_new_privileges => {
                let err =
                    Error::from(nix::errno::Errno::EPERM).context(format!("exec {:?}", self.exe));
                match self.labels.nnp_refusal_hint() {
                    Some(hint) => err.context(hint),
                    None => err,
                }
            }
            Err(e) => Error::from(e).context(format!("exec {:?}", self.exe)),
            Ok(never) => match never {},
        }
    }
}

/// Enters `process.cwd`, created if missing (as runc does). Resolved inside the container's root
/// without magic links, so `/proc/self/fd/N` can never lead to a leaked host directory
/// (CVE-2024-21626).
pub fn enter_cwd(process: &Process) -> Result<()> {
    let root: OwnedFd = File::open("/").ctx(|| "opening /")?.into();
    let cwd = process.cwd();
    let fd = open_or_create_in_root(root.as_fd(), cwd, Kind::Dir)
        .ctx(|| format!("process.cwd {}", cwd.display()))?;
    // An O_PATH fd cannot be fchdir'd into; reopen it as a directory.
    let dir =
        File::open(PathBuf::from(fd_path(&fd))).ctx(|| format!("process.cwd {}", cwd.display()))?;
    fchdir(dir.as_raw_fd()).ctx(|| format!("process.cwd {}", cwd.display()))
}
