//! `linux.seccomp`: checked with the rest of config.json (validate), compiled to BPF once per
//! distinct profile (compile, cache) by the parent before the init is cloned, and loaded by the
//! init as the very last step before execve (Filter::load). With a listener, the notify fd and the
//! container's state go to it right after the load, from the init itself.
//!
//! Why the parent compiles: the cache lives under the runtime root, which the init no longer sees
//! after pivot_root, and libseccomp's work then stays off the init's critical path.

mod cache;
mod compile;
mod validate;

use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, Spec};
use sys::seccomp::BpfProgram;

use crate::error::{Context, Error, Result};

pub use validate::{diagnose, validate};

/// A compiled filter, ready to load with a single syscall.
pub struct Filter {
    program: BpfProgram,
    flags: libc::c_ulong,
    listener: Option<Listener>,
}

/// The seccomp agent's socket, connected by the parent while its path is reachable.
struct Listener {
    socket: UnixStream,
    metadata: String,
    /// The containerProcessState message, known once the init's pid is (see `set_state`).
    state: Option<Vec<u8>>,
}

impl Filter {
    /// The filter of the spec, from the cache under `root` or freshly compiled (and cached).
    /// Also connects to `listenerPath` when the profile has NOTIFY rules.
    pub fn for_spec(spec: &Spec, root: &Path) -> Result<Option<Filter>> {
        let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
            return Ok(None);
        };
        let key = cache_key(profile)?;
        let bpf = match cache::lookup(root, &key) {
            Some(bpf) => bpf,
            None => {
                let bpf = compile::compile(profile)?;
                // The cache only saves time: a root we cannot write to is no error.
                let _ = cache::store(root, &key, &bpf);
                bpf
            }
        };
        let program = BpfProgram::from_bytes(&bpf)
            .ctx(|| "linux.seccomp: the compiled program is not valid BPF")?;

        let notify = uses_notify(profile);
        let mut flags: libc::c_ulong = 0;
        for f in profile.flags().iter().flatten() {
            flags |= match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                    sys::seccomp::SECCOMP_FILTER_FLAG_LOG
                }
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                    sys::seccomp::SECCOMP_FILTER_FLAG_TSYNC
                }
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    sys::seccomp::SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                // Only meaningful for (and only accepted by the kernel with) a listener.
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if notify => {
                    sys::seccomp::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
                }
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
            };
        }
        let listener = if notify {
            flags |= sys::seccomp::SECCOMP_FILTER_FLAG_NEW_LISTENER;
            // The kernel refuses TSYNC with a listener unless a failed sync reports ESRCH.
            if flags & sys::seccomp::SECCOMP_FILTER_FLAG_TSYNC != 0 {
                flags |= sys::seccomp::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
            }
            let path = profile
                .listener_path()
                .as_ref()
                .ok_or_else(|| Error::invalid("linux.seccomp.listenerPath: missing"))?;
            let socket = UnixStream::connect(path)
                .ctx(|| format!("linux.seccomp.listenerPath {}", path.display()))?;
            Some(Listener {
                socket,
                metadata: profile.listener_metadata().clone().unwrap_or_default(),
                state: None,
            })
        } else {
            None
        };
        Ok(Some(Filter {
            program,
            flags,
            listener,
        }))
    }

    /// The runtime-spec's containerProcessState for the listener, built by the parent (which
    /// knows the init's pid as the host sees it).
    pub fn process_state(&self, spec: &Spec, id: &str, pid: i32, bundle: &Path) -> Option<String> {
        let l = self.listener.as_ref()?;
        let annotations: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
        Some(
            serde_json::json!({
                "ociVersion": spec.version(),
                "fds": ["seccompFd"],
                "pid": pid,
                "metadata": l.metadata,
                "state": {
                    "ociVersion": spec.version(),
                    "id": id,
                    "status": "creating",
                    "pid": pid,
                    "bundle": bundle,
                    "annotations": annotations,
                },
            })
            .to_string(),
        )
    }

    /// In the init: the message `process_state` built.
    pub fn set_state(&mut self, state: String) {
        if let Some(l) = self.listener.as_mut() {
            l.state = Some(state.into_bytes());
        }
    }

    /// Loads the filter; with a listener, sends it the notify fd and the state. The only
    /// syscalls after the load are that sendmsg and the caller's execve: nothing is closed or
    /// freed here (every fd is close-on-exec), so a profile may block close, fcntl or getcwd.
    /// Without no_new_privs this needs CAP_SYS_ADMIN, which Launch keeps until here.
    pub fn load(self) -> Result<()> {
        let fd = self
            .program
            .load(self.flags)
            .ctx(|| "loading the seccomp filter (linux.seccomp)")?;
        let (Some(l), Some(fd)) = (self.listener, fd) else {
            return Ok(());
        };
        let state = l.state.unwrap_or_default();
        let fds = [fd.as_raw_fd()];
        let sent = sendmsg::<UnixAddr>(
            l.socket.as_raw_fd(),
            &[IoSlice::new(&state)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        );
        // Neither fd is closed: both are close-on-exec, and close(2) may be filtered now.
        let _ = fd.into_raw_fd();
        let _ = l.socket.into_raw_fd();
        sent.ctx(|| "sending the seccomp notify fd to linux.seccomp.listenerPath")?;
        Ok(())
    }
}

fn uses_notify(profile: &LinuxSeccomp) -> bool {
    profile
        .syscalls()
        .iter()
        .flatten()
        .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
}

/// Everything the compiled program depends on, canonically: this format, libseccomp's version,
/// the native arch and the profile without the fields that do not reach the program.
fn cache_key(profile: &LinuxSeccomp) -> Result<Vec<u8>> {
    let mut p = profile.clone();
    p.set_flags(None);
    p.set_listener_path(None);
    p.set_listener_metadata(None);
    let v = libseccomp::ScmpVersion::current()
        .map_err(|e| Error::invalid(format!("libseccomp version: {e}")))?;
    let mut key = format!(
        "proxmox-lxcri seccomp 1\0libseccomp {}.{}.{}\0{:?}\0",
        v.major,
        v.minor,
        v.micro,
        libseccomp::ScmpArch::native()
    )
    .into_bytes();
    serde_json::to_writer(&mut key, &p)
        .map_err(|e| Error::invalid(format!("linux.seccomp: {e}")))?;
    Ok(key)
}
