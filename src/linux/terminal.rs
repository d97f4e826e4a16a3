//! `process.terminal`: a pty allocated inside the container's devpts, its master sent over the
//! console socket with SCM_RIGHTS exactly as runc does (conmon and the containerd shim rely on it),
//! the slave made the process's stdio and controlling terminal.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::pty::{posix_openpt, ptsname_r, unlockpt};

use super::mounts::{fd_path, open_or_create_in_root, Kind};
use crate::error::{Context, Error, Result};

/// Connects to `--console-socket` (before the clone, so the init inherits the connection and
/// never needs the host path).
pub fn connect(path: &Path) -> Result<UnixStream> {
    let meta = std::fs::metadata(path).ctx(|| format!("--console-socket {}", path.display()))?;
    if !meta.file_type().is_socket() {
        return Err(Error::invalid(format!(
            "--console-socket {}: not a unix socket",
            path.display()
        )));
    }
    UnixStream::connect(path).ctx(|| format!("--console-socket {}", path.display()))
}

/// In the init (after pivot_root, /dev/pts mounted): allocates the pty, binds the slave onto
/// /dev/console, sends the master away, and makes the slave our stdio and controlling terminal.
pub fn setup(console: &UnixStream, size: Option<(u16, u16)>, uid: u32) -> Result<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx(|| "process.terminal: opening /dev/ptmx")?;
    unlockpt(&master).ctx(|| "process.terminal: unlockpt")?;
    let name = ptsname_r(&master).ctx(|| "process.terminal: ptsname")?;
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .ctx(|| format!("process.terminal: opening {name}"))?
        .into();
    if let Some((rows, cols)) = size {
        sys::set_window_size(slave.as_fd(), rows, cols)
            .ctx(|| "process.consoleSize: TIOCSWINSZ")?;
    }
    nix::unistd::fchown(
        slave.as_raw_fd(),
        Some(nix::unistd::Uid::from_raw(uid)),
        None,
    )
    .ctx(|| format!("process.terminal: chown {name}"))?;
    bind_console(&name)?;
    sys::send_fd(console.as_fd(), name.as_bytes(), master.as_fd())
        .ctx(|| "--console-socket: sending the pty master")?;
    drop(master);

    nix::unistd::setsid().ctx(|| "setsid")?;
    sys::set_controlling_terminal(slave.as_fd()).ctx(|| "process.terminal: TIOCSCTTY")?;
    for target in 0..=2 {
        nix::unistd::dup2(slave.as_raw_fd(), target)
            .ctx(|| format!("process.terminal: dup2 onto fd {target}"))?;
    }
    Ok(())
}

/// /dev/console shows the container's own pty, as in runc.
fn bind_console(slave: &str) -> Result<()> {
    let root: OwnedFd = File::open("/").ctx(|| "opening /")?.into();
    let target = open_or_create_in_root(root.as_fd(), Path::new("/dev/console"), Kind::File)
        .ctx(|| "/dev/console")?;
    mount(
        Some(slave),
        fd_path(&target).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| "bind of the pty onto /dev/console")
}
