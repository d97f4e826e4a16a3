//! Waiting in the foreground for a process we started (`run`, `exec` without --detach): signals
//! sent to us go on to it, and with a terminal its pty is copied to and from the caller's.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::termios::{self, SetArg};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Context, Error, Result};

const FORWARDED: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Puts the caller's terminal in raw mode for the life of the value.
struct RawMode {
    saved: Option<termios::Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

fn copy_window_size(to: BorrowedFd<'_>) {
    if let Ok((rows, cols)) = sys::window_size(std::io::stdin().as_fd()) {
        let _ = sys::set_window_size(to, rows, cols);
    }
}

/// Waits for `child` (ours, so its pid cannot be reused before we reap it), passing signals sent
/// to us on to it and copying terminal traffic. Returns its exit code, or 128 + the signal that
/// killed it.
pub fn wait_forwarding(child: i32, terminal: Option<OwnedFd>) -> Result<i32> {
    let pid = Pid::from_raw(child);
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for s in FORWARDED {
        mask.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .ctx(|| "sigprocmask")?;
    let sfd = SignalFd::new(&mask).ctx(|| "signalfd")?;
    let _raw = terminal.as_ref().map(|_| RawMode::enter());
    let mut master = terminal.map(std::fs::File::from);
    if let Some(m) = &master {
        copy_window_size(m.as_fd());
    }
    let mut stdin_open = true;
    loop {
        // Check before blocking: the init may have exited before the mask was set.
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(drain(master, code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(drain(master, 128 + sig as i32)),
            Ok(_) => {}
            Err(e) => return Err(Error::from(e).context("waiting for the container")),
        }
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = &master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        poll(&mut fds, PollTimeout::NONE).ctx(|| "poll")?;
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready.get(1) == Some(&true) {
            if let Some(m) = master.as_mut() {
                if copy_once(m, &mut std::io::stdout()).is_err() {
                    master = None; // the pty is gone: the process closed it or exited
                }
            }
        }
        if ready.get(2) == Some(&true) {
            if let Some(m) = master.as_mut() {
                if copy_once(&mut std::io::stdin(), m).is_err() {
                    stdin_open = false;
                }
            }
        }
        if ready[0] {
            if let Some(info) = sfd.read_signal().ctx(|| "reading signalfd")? {
                match info.ssi_signo as i32 {
                    libc::SIGCHLD => {}
                    libc::SIGWINCH if master.is_some() => {
                        if let Some(m) = &master {
                            copy_window_size(m.as_fd());
                        }
                    }
                    signo => {
                        if let Ok(sig) = Signal::try_from(signo) {
                            let _ = nix::sys::signal::kill(pid, sig);
                        }
                    }
                }
            }
        }
    }
}

/// One read and the matching write; an error or end of file ends that direction.
fn copy_once(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    let n = from.read(&mut buf)?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    to.write_all(&buf[..n])?;
    to.flush()
}

/// The process is gone: pass on what it wrote last, then report its exit code.
fn drain(master: Option<std::fs::File>, code: i32) -> i32 {
    if let Some(mut m) = master {
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&m),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        while copy_once(&mut m, &mut std::io::stdout()).is_ok() {}
    }
    code
}
