//! The container process's own attributes: rlimits, oom_score_adj, user and groups, umask,
//! environment, the executable's path, and sysctls.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType, Process};

use crate::error::{Context, Error, Result};

fn resource(t: PosixRlimitType) -> Resource {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

pub fn set_rlimits(limits: &[PosixRlimit]) -> Result<()> {
    for (i, l) in limits.iter().enumerate() {
        setrlimit(resource(l.typ()), l.soft(), l.hard()).ctx(|| {
            format!(
                "process.rlimits[{i}] ({:?} {} {})",
                l.typ(),
                l.soft(),
                l.hard()
            )
        })?;
    }
    Ok(())
}

pub fn set_oom_score_adj(value: i32) -> Result<()> {
    fs::write("/proc/self/oom_score_adj", value.to_string())
        .ctx(|| format!("process.oomScoreAdj {value}"))
}

/// Supplementary groups, then gid, then uid (the order in which each step still has the
/// privilege the next needs). Capabilities survive through PR_SET_KEEPCAPS, set by the caller.
pub fn switch_user(process: &Process, setgroups_allowed: bool) -> Result<()> {
    let user = process.user();
    if setgroups_allowed {
        let groups: Vec<Gid> = user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| Gid::from_raw(*g))
            .collect();
        setgroups(&groups).ctx(|| "process.user.additionalGids: setgroups")?;
    }
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    setresgid(gid, gid, gid).ctx(|| format!("process.user.gid {gid}"))?;
    setresuid(uid, uid, uid).ctx(|| format!("process.user.uid {uid}"))?;
    Ok(())
}

/// The environment for execve: the spec's, with HOME added from /etc/passwd when missing (as runc).
pub fn environment(process: &Process, extra: &[String]) -> Result<Vec<CString>> {
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    env.extend(extra.iter().cloned());
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home_of(process.user().uid()).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env.into_iter()
        .map(|e| CString::new(e).map_err(|_| Error::invalid("process.env: contains a NUL byte")))
        .collect()
}

fn home_of(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
    })
}

/// Finds `args[0]` the way runc does: a name with a slash is taken as is, a bare name is looked up
/// in the container's PATH. Checked at create time, so a missing binary fails `create`.
pub fn find_executable(process: &Process) -> Result<PathBuf> {
    let args = process.args().as_deref().unwrap_or_default();
    let arg0 = args
        .first()
        .ok_or_else(|| Error::invalid("process.args must not be empty"))?;
    let is_exec = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        let abs = if p.is_absolute() {
            p
        } else {
            process.cwd().join(p)
        };
        return if is_exec(&abs) {
            Ok(abs)
        } else {
            Err(Error::invalid(format!(
                "process.args[0] {arg0:?}: no such executable in the container"
            )))
        };
    }
    let path = process
        .env()
        .iter()
        .flatten()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|dir| Path::new(dir).join(arg0))
        .find(|p| is_exec(p))
        .ok_or_else(|| {
            Error::invalid(format!(
                "process.args[0] {arg0:?}: executable file not found in $PATH"
            ))
        })
}

/// Writes `linux.sysctl` through /proc/sys of the container's own /proc.
pub fn apply_sysctls<'a>(sysctls: impl Iterator<Item = (&'a String, &'a String)>) -> Result<()> {
    for (key, value) in sysctls {
        if key.contains("..") || key.starts_with('/') {
            return Err(Error::invalid(format!("linux.sysctl: invalid key {key:?}")));
        }
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value).ctx(|| format!("linux.sysctl {key}={value}"))?;
    }
    Ok(())
}
