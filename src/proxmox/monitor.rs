//! The LXC command-socket monitor of a pct-visible container. Proxmox decides that container
//! `<vmid>` runs by the abstract socket `@<lxcpath>/<vmid>/command` and asks it (as `lxc-info`
//! and `lxc-stop` do) for the init pid, the state and the cgroup paths. `create` starts a small
//! process that holds that socket for exactly the life of the container's init and answers those
//! questions (lxc_protocol.rs); `delete` ends it.
//!
//! The monitor is a clone of the runtime (double-forked, so it is nobody's child to wait for and
//! leaves `run`'s foreground wait alone), detached with setsid. It never enters the container's
//! namespaces and never execs, so the container cannot reach the runtime binary through it; it is
//! non-dumpable on top. It closes everything it inherited (the caller's pipes, the state dir's
//! lock), keeps only CAP_KILL (to kill an init whose uid a user namespace maps elsewhere), sets
//! no_new_privs, and runs one poll loop over a pidfd of the init, the listening socket and its
//! clients. When the init dies it exits, and the kernel drops the abstract name with its last fd,
//! which is also why a crashed monitor leaves nothing stale behind.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, getsockopt, listen, send, socket, sockopt::PeerCredentials, AddressFamily, Backlog,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::lxc_protocol::{self as proto, Action, Header, LxcState, HEADER_LEN, MAX_STATE};
use crate::error::{Context, Error, Result};
use crate::linux::cgroups;

/// The annotation that makes a container visible to pct, for now (see [`pct_vmid`]).
pub const VMID_ANNOTATION: &str = "io.proxmox.lxcri.vmid";
/// Where LXC (and Proxmox) keep containers; the socket name is built from it.
pub const DEFAULT_LXCPATH: &str = "/var/lib/lxc";
/// Overrides [`DEFAULT_LXCPATH`] (until the runtime has a configuration file).
pub const LXCPATH_ENV: &str = "PROXMOX_LXCRI_LXCPATH";

/// Connections held at once (requests in flight, lxc-stop and state waiters, idle watchers such as
/// pve-container's vm_stop, which connects and waits for the close). Beyond it new connections
/// wait in the backlog: memory stays bounded whatever a local user does.
const MAX_CONNECTIONS: usize = 256;
/// A started request must be complete within this time, or the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The vmid under which pct sees the container, or None when it is not pct-visible.
/// The one place that decides pct visibility: today the annotation, later the proxmox module's
/// vmid allocation.
pub fn pct_vmid(spec: &Spec) -> Result<Option<u32>> {
    let Some(value) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(VMID_ANNOTATION))
    else {
        return Ok(None);
    };
    // Proxmox's range for guest ids.
    match value.parse::<u32>() {
        Ok(v) if (100..=999_999_999).contains(&v) => Ok(Some(v)),
        _ => Err(Error::invalid(format!(
            "annotations[{VMID_ANNOTATION:?}]: {value:?} is not a Proxmox vmid (100..999999999)"
        ))),
    }
}

/// The lxcpath in which pct looks for the container's socket.
pub fn lxcpath() -> Result<String> {
    let path = std::env::var(LXCPATH_ENV).unwrap_or_else(|_| DEFAULT_LXCPATH.into());
    if !path.starts_with('/') || path.contains('\0') {
        return Err(Error::invalid(format!(
            "{LXCPATH_ENV}: {path:?} is not an absolute path"
        )));
    }
    Ok(path.trim_end_matches('/').to_string())
}

/// What the state file remembers of a monitor, so that `delete` can end exactly that process.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorRecord {
    pub pid: i32,
    /// Start time of `pid` (clock ticks since boot): a recycled pid is never taken for it.
    pub start_time: u64,
    /// The abstract socket, `@`-prefixed as /proc/net/unix shows it.
    pub socket: String,
    /// `<lxcpath>/<vmid>/config`, when the monitor made it (removed again on delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lxc_config: Option<std::path::PathBuf>,
}

/// The container a monitor serves.
pub struct Target<'a> {
    pub vmid: u32,
    pub lxcpath: &'a str,
    pub init_pid: i32,
    /// The container's state dir (its exec fifo tells "created" from "running").
    pub state_dir: &'a Path,
    pub cgroup_path: &'a Path,
}

/// Binds the socket (so a vmid already in use fails `create` here), then starts the monitor.
pub fn start(t: &Target<'_>) -> Result<MonitorRecord> {
    let name = proto::socket_name(t.lxcpath, &t.vmid.to_string());
    let listener = bind_abstract(&name)?;
    let lxc_config = ensure_lxc_config(t)?;
    let pidfd = sys::pidfd_open(t.init_pid).ctx(|| format!("pidfd_open {}", t.init_pid))?;
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe")?;
    let cloned = sys::clone3(0, None).map_err(|e| Error::os("clone3 of the LXC monitor", e))?;
    let sys::CloneResult::Parent(middle) = cloned else {
        drop(rx);
        sys::exit_now(detach_and_fork(t, listener, pidfd, tx));
    };
    drop((tx, listener, pidfd));
    let mut buf = [0u8; 4];
    let got = fs::File::from(rx).read_exact(&mut buf);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(middle), None);
    got.ctx(|| "starting the LXC monitor")?;
    let pid = i32::from_ne_bytes(buf);
    let start_time = crate::state::process_start_time(pid)
        .ok_or_else(|| Error::invalid("the LXC monitor died as it started"))?;
    Ok(MonitorRecord {
        pid,
        start_time,
        socket: format!("@{name}"),
        lxc_config,
    })
}

/// liblxc's tools (`lxc-info`, which Proxmox also calls) refuse a container without
/// `<lxcpath>/<name>/config`; Proxmox writes one when pct starts a container, so we do for ours.
/// Returns the path when we made it (an existing one is left alone).
fn ensure_lxc_config(t: &Target<'_>) -> Result<Option<std::path::PathBuf>> {
    use std::io::Write;
    let dir = std::path::Path::new(t.lxcpath).join(t.vmid.to_string());
    fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let path = dir.join("config");
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(format!("lxc.uts.name = {}\n", t.vmid).as_bytes())
                .ctx(|| format!("writing {}", path.display()))?;
            Ok(Some(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(Error::os(format!("writing {}", path.display()), e)),
    }
}

/// Ends the monitor (if it still runs) and waits until it is gone, so that its socket is too.
pub fn stop(rec: &MonitorRecord) {
    if let Some(path) = &rec.lxc_config {
        let _ = fs::remove_file(path);
        if let Some(dir) = path.parent() {
            let _ = fs::remove_dir(dir); // only if empty: Proxmox may keep files there
        }
    }
    let Ok(pidfd) = sys::pidfd_open(rec.pid) else {
        return;
    };
    if crate::state::process_start_time(rec.pid) != Some(rec.start_time) {
        return;
    }
    let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(2000u16));
}

fn bind_abstract(name: &str) -> Result<UnixListener> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .ctx(|| "socket(AF_UNIX)")?;
    let addr = UnixAddr::new_abstract(name.as_bytes()).ctx(|| format!("socket name @{name}"))?;
    match bind(sock.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(nix::errno::Errno::EADDRINUSE) => {
            return Err(Error::invalid(format!(
                "the LXC command socket @{name} is taken: a container with this vmid is running"
            )))
        }
        Err(e) => return Err(Error::from(e).context(format!("bind @{name}"))),
    }
    let backlog = Backlog::new(64).ctx(|| "listen backlog")?;
    listen(&sock, backlog).ctx(|| format!("listen @{name}"))?;
    Ok(UnixListener::from(sock))
}

/// The middle process: leaves the caller's session, forks the monitor, reports its pid, exits.
fn detach_and_fork(t: &Target<'_>, listener: UnixListener, pidfd: OwnedFd, tx: OwnedFd) -> i32 {
    if nix::unistd::setsid().is_err() {
        return 1;
    }
    match sys::clone3(0, None) {
        Ok(sys::CloneResult::Child) => {
            let code = match become_monitor(&listener, &pidfd) {
                Ok(()) => serve(t, listener, pidfd),
                Err(_) => 1,
            };
            sys::exit_now(code)
        }
        Ok(sys::CloneResult::Parent(pid)) => {
            let ok = nix::unistd::write(&tx, &pid.to_ne_bytes()).is_ok_and(|n| n == 4);
            i32::from(!ok)
        }
        Err(_) => 1,
    }
}

/// Sheds what the monitor must not hold: fds, privileges, the working directory, heap.
fn become_monitor(listener: &UnixListener, pidfd: &OwnedFd) -> Result<()> {
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .ctx(|| "/dev/null")?;
    for fd in 0..3 {
        nix::unistd::dup2(null.as_raw_fd(), fd).ctx(|| "dup2 /dev/null")?;
    }
    drop(null);
    sys::close_fds_except(&[listener.as_raw_fd(), pidfd.as_raw_fd()]).ctx(|| "close_range")?;
    nix::unistd::chdir("/").ctx(|| "chdir /")?;
    let _ = nix::sys::prctl::set_name(c"lxcri-monitor");
    nix::sys::prctl::set_dumpable(false).ctx(|| "prctl(PR_SET_DUMPABLE)")?;
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .ctx(|| "sigprocmask")?;
    drop_privileges()?;
    sys::trim_heap();
    Ok(())
}

/// Keeps CAP_KILL only (if it was there): the monitor reads files root owns (the state dir, the
/// cgroup files), which needs no capability, and signals the init, which in a user namespace runs
/// under another uid.
fn drop_privileges() -> Result<()> {
    use caps::{CapSet, Capability, CapsHashSet};
    let err = |e: caps::errors::CapsError| Error::invalid(format!("dropping capabilities: {e}"));
    for cap in caps::all() {
        if cap != Capability::CAP_KILL {
            // Fails only without CAP_SETPCAP, i.e. when there is nothing to drop.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    let keep: CapsHashSet = caps::read(None, CapSet::Permitted)
        .map_err(err)?
        .into_iter()
        .filter(|c| *c == Capability::CAP_KILL)
        .collect();
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err)?;
    nix::sys::prctl::set_no_new_privs().ctx(|| "prctl(PR_SET_NO_NEW_PRIVS)")
}

/// The container as the monitor sees it.
struct View {
    name: String,
    lxcpath: String,
    init_pid: i32,
    fifo: PathBuf,
    cgroup_path: PathBuf,
}

impl proto::Container for View {
    fn name(&self) -> &str {
        &self.name
    }

    fn lxcpath(&self) -> &str {
        &self.lxcpath
    }

    fn init_pid(&self) -> i32 {
        self.init_pid
    }

    fn state(&self) -> LxcState {
        if self.fifo.exists() {
            LxcState::Starting
        } else if cgroups::is_frozen(&self.cgroup_path) {
            LxcState::Frozen
        } else {
            LxcState::Running
        }
    }

    fn cgroup_path(&self, controller: Option<&str>) -> Option<String> {
        let rel = self
            .cgroup_path
            .strip_prefix("/")
            .unwrap_or(&self.cgroup_path);
        let answer = || Some(Path::new("/").join(rel).to_string_lossy().into_owned());
        if let Some(c) = controller {
            // A controller name is one path component, never a way out of /sys/fs/cgroup.
            let ok = !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'=');
            if !ok {
                return None;
            }
        }
        let root = Path::new("/sys/fs/cgroup");
        if cgroups::is_unified() {
            let known = match controller {
                None => true,
                Some(c) => fs::read_to_string(root.join("cgroup.controllers"))
                    .is_ok_and(|s| s.split_whitespace().any(|x| x == c)),
            };
            return if known && root.join(rel).is_dir() {
                answer()
            } else {
                None
            };
        }
        let hierarchy = match controller {
            None => "unified",
            Some(c) => c.strip_prefix("name=").unwrap_or(c),
        };
        if root.join(hierarchy).join(rel).is_dir() {
            answer()
        } else {
            None
        }
    }
}

impl View {
    /// STOP: SIGKILL to the init (LXC's default lxc.signal.stop, and what `pct stop` asks for),
    /// then thaw a frozen container so that the kill lands.
    fn stop(&self, pidfd: &OwnedFd) -> std::result::Result<(), i32> {
        sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if cgroups::is_frozen(&self.cgroup_path) {
            let rel = self
                .cgroup_path
                .strip_prefix("/")
                .unwrap_or(&self.cgroup_path);
            let _ = if cgroups::is_unified() {
                fs::write(
                    Path::new("/sys/fs/cgroup").join(rel).join("cgroup.freeze"),
                    "0",
                )
            } else {
                fs::write(
                    Path::new("/sys/fs/cgroup/freezer")
                        .join(rel)
                        .join("freezer.state"),
                    "THAWED",
                )
            };
        }
        Ok(())
    }
}

/// A connection with a request on its way in.
struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    header: Option<Header>,
    /// Set by the first byte: an idle connection is held, a started request must finish.
    deadline: Option<Instant>,
    /// LXC's credential rule: root, or the monitor's own uid and gid.
    denied: bool,
}

/// A connection kept after its request: lxc-stop waiting for the close, or a state client.
struct Held {
    stream: UnixStream,
    states: Option<[bool; MAX_STATE]>,
}

enum Outcome {
    Pending,
    Done,
    Hold(Held),
}

fn serve(t: &Target<'_>, listener: UnixListener, pidfd: OwnedFd) -> i32 {
    let view = View {
        name: t.vmid.to_string(),
        lxcpath: t.lxcpath.to_string(),
        init_pid: t.init_pid,
        fifo: t.state_dir.join(crate::state::EXEC_FIFO),
        cgroup_path: t.cgroup_path.to_path_buf(),
    };
    let mut clients: Vec<Client> = Vec::new();
    let mut held: Vec<Held> = Vec::new();
    loop {
        let now = Instant::now();
        clients.retain(|c| c.deadline.is_none_or(|d| d > now));
        let timeout = clients
            .iter()
            .filter_map(|c| c.deadline)
            .min()
            .map(|d| {
                let ms = d.saturating_duration_since(now).as_millis() + 1;
                PollTimeout::try_from(ms.min(10_000) as i32).unwrap_or(PollTimeout::NONE)
            })
            .unwrap_or(PollTimeout::NONE);
        let accepting = clients.len() + held.len() < MAX_CONNECTIONS;
        let revents: Vec<PollFlags> = {
            let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            fds.push(PollFd::new(
                listener.as_fd(),
                if accepting {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                },
            ));
            fds.extend(
                clients
                    .iter()
                    .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)),
            );
            fds.extend(
                held.iter()
                    .map(|h| PollFd::new(h.stream.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            fds.iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect()
        };
        if !revents[0].is_empty() {
            break; // the init is gone
        }
        let (client_ev, held_ev) = revents[2..].split_at(clients.len());
        // Held connections say nothing more; anything from them (data, hang-up) ends them.
        let mut i = 0;
        held.retain(|_| {
            let keep = held_ev[i].is_empty();
            i += 1;
            keep
        });
        for idx in (0..clients.len()).rev() {
            if client_ev[idx].is_empty() {
                continue;
            }
            match read_request(&mut clients[idx], &view, &pidfd) {
                Outcome::Pending => {}
                Outcome::Done => {
                    clients.swap_remove(idx);
                }
                Outcome::Hold(h) => {
                    clients.swap_remove(idx);
                    held.push(h);
                }
            }
        }
        if accepting && !revents[1].is_empty() {
            accept_all(&listener, &mut clients, held.len());
        }
    }
    // Registered state clients learn that the container stopped; then the socket goes first, so
    // that whoever sees its connection close finds the name gone too.
    let msg = proto::state_message(&view.name, LxcState::Stopped);
    for h in &held {
        if h.states.is_some_and(|s| s[LxcState::Stopped as usize]) {
            let _ = send_all(&h.stream, &msg);
        }
    }
    drop(listener);
    drop(clients);
    drop(held);
    0
}

fn accept_all(listener: &UnixListener, clients: &mut Vec<Client>, held: usize) {
    while clients.len() + held < MAX_CONNECTIONS {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let denied = match getsockopt(&stream, PeerCredentials) {
            Ok(c) => {
                c.uid() != 0
                    && (c.uid() != nix::unistd::getuid().as_raw()
                        || c.gid() != nix::unistd::getgid().as_raw())
            }
            Err(_) => true,
        };
        clients.push(Client {
            stream,
            buf: Vec::new(),
            header: None,
            deadline: None,
            denied,
        });
    }
}

/// Reads what has arrived of a request; answers it once complete.
fn read_request(c: &mut Client, view: &View, pidfd: &OwnedFd) -> Outcome {
    let mut chunk = [0u8; 4096];
    loop {
        let need = HEADER_LEN + c.header.and_then(|h| h.data_len()).unwrap_or(0);
        let want = (need - c.buf.len()).min(chunk.len());
        match (&c.stream).read(&mut chunk[..want]) {
            // A request cut short: LXC drops it unanswered.
            Ok(0) => return Outcome::Done,
            Ok(n) => {
                c.buf.extend_from_slice(&chunk[..n]);
                c.deadline
                    .get_or_insert_with(|| Instant::now() + REQUEST_TIMEOUT);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Outcome::Pending,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Outcome::Done,
        }
        if c.header.is_none() && c.buf.len() == HEADER_LEN {
            let mut raw = [0u8; HEADER_LEN];
            raw.copy_from_slice(&c.buf);
            let header = Header::parse(&raw);
            // More data than LXC accepts: dropped unanswered, before any of it is read.
            if header.data_len().is_none() {
                return Outcome::Done;
            }
            c.header = Some(header);
        }
        let Some(header) = c.header else { continue };
        if c.buf.len() == HEADER_LEN + header.data_len().unwrap_or(0) {
            return respond(c, header, view, pidfd);
        }
    }
}

fn respond(c: &mut Client, header: Header, view: &View, pidfd: &OwnedFd) -> Outcome {
    let stream = match c.stream.try_clone() {
        Ok(s) => s,
        Err(_) => return Outcome::Done,
    };
    if c.denied {
        let _ = send_all(&stream, &proto::reply_value(-libc::EPERM, 0));
        return Outcome::Done;
    }
    match proto::answer(header, &c.buf[HEADER_LEN..], view) {
        Action::Reply(bytes) => {
            let _ = send_all(&stream, &bytes);
            Outcome::Done
        }
        Action::Close => Outcome::Done,
        Action::SendInitPidfd => {
            let _ = sys::send_fd(stream.as_fd(), &proto::reply_value(0, 0), pidfd.as_fd());
            Outcome::Done
        }
        Action::Stop => match view.stop(pidfd) {
            Ok(()) => Outcome::Hold(Held {
                stream,
                states: None,
            }),
            Err(errno) => {
                let _ = send_all(&stream, &proto::reply_value(-errno, 0));
                Outcome::Done
            }
        },
        Action::WatchStates(mask) => {
            if send_all(&stream, &proto::reply_watching()).is_err() {
                return Outcome::Done;
            }
            Outcome::Hold(Held {
                stream,
                states: Some(mask),
            })
        }
    }
}

/// Sends a whole (small) answer without blocking the loop: a client that does not read it loses
/// it.
fn send_all(stream: &UnixStream, bytes: &[u8]) -> nix::Result<()> {
    let n = send(
        stream.as_raw_fd(),
        bytes,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    )?;
    if n == bytes.len() {
        Ok(())
    } else {
        Err(nix::errno::Errno::EAGAIN)
    }
}
