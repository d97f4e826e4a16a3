//! The engine harness: a private world per scenario ([`env`]), the engines in it ([`podman`],
//! [`containerd`]) and a real terminal to drive them from ([`pty`]).

pub mod containerd;
pub mod env;
pub mod podman;
pub mod pty;

pub use containerd::Containerd;
pub use env::Rt;
pub use podman::{Podman, IMAGE};

use std::fs;
use std::path::PathBuf;

/// The host path of `file` in the cgroup v1 `controller` hierarchy of process `pid` (as its
/// `/proc/<pid>/cgroup` says), e.g. the freezer's `freezer.state`.
#[track_caller]
pub fn cgroup_file(pid: i64, controller: &str, file: &str) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
    let path = text
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("process {pid} is in no {controller} cgroup:\n{text}"));
    PathBuf::from(crate::common::CGROUP_MOUNT)
        .join(controller)
        .join(path.trim_start_matches('/'))
        .join(file)
}

/// The contents of a cgroup file, trimmed.
#[track_caller]
pub fn read_trimmed(path: &std::path::Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The namespace link (`/proc/<pid>/ns/<ns>`) of a host process.
#[track_caller]
pub fn ns_of(pid: i64, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"))
        .to_string_lossy()
        .into_owned()
}
