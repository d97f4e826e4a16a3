//! A console socket served by the test, as conmon and the containerd shim
//! serve one: a unix listener the runtime connects to and sends the pty
//! master over (SCM_RIGHTS, with the pty's name as the message text).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A listening unix socket at `path`, removed on drop.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens at `dir/console.sock`.
    #[track_caller]
    pub fn new(dir: &Path) -> Self {
        let path = dir.join("console.sock");
        let listener =
            UnixListener::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        listener.set_nonblocking(true).expect("set_nonblocking");
        ConsoleSocket { path, listener }
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Accepts the runtime's connection and receives the pty master it sends.
    #[track_caller]
    pub fn receive(&self, timeout: Duration) -> Pty {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "nobody connected to the console socket {} within {timeout:?}",
                        self.path.display()
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept on {}: {e}", self.path.display()),
            }
        };
        stream.set_nonblocking(false).expect("set_nonblocking");
        stream.set_read_timeout(Some(timeout)).expect("SO_RCVTIMEO");
        let (fd, text) = sys::recv_fd(stream.as_fd())
            .unwrap_or_else(|e| panic!("receiving the pty master over the console socket: {e}"));
        Pty {
            master: File::from(fd),
            name: String::from_utf8_lossy(&text)
                .trim_end_matches('\0')
                .to_string(),
            output: Vec::new(),
        }
    }

    /// Whether a connection is waiting to be accepted (without accepting it).
    pub fn try_accept(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The master side of a container's pty, with everything read from it so far.
pub struct Pty {
    pub master: File,
    /// The text sent along with the fd (runc sends the pty's name).
    pub name: String,
    output: Vec<u8>,
}

impl Pty {
    /// Everything read so far (with the pty's `\r\n` line ends).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Reads what is available within `wait`; returns false at end of
    /// file (EIO once the slave's last holder is gone).
    fn read_some(&mut self, wait: Duration) -> bool {
        let ms = wait.as_millis().min(u16::MAX as u128) as u16;
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return true,
            Err(e) => panic!("poll on the pty master: {e}"),
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.output.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(e) => panic!("read from the pty master: {e}"),
        }
    }

    /// Reads until the output contains `needle`; panics after `timeout`.
    #[track_caller]
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(needle) {
            let now = Instant::now();
            assert!(
                now < deadline,
                "pty never showed {needle:?} within {timeout:?}; output so far:\n{:?}",
                self.output()
            );
            if !self.read_some(deadline - now) {
                assert!(
                    self.output().contains(needle),
                    "pty closed without showing {needle:?}; output:\n{:?}",
                    self.output()
                );
            }
        }
        self.output()
    }

    /// Reads until the slave side is closed (the process exited).
    #[track_caller]
    pub fn read_to_end(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            assert!(
                now < deadline,
                "pty not closed within {timeout:?}; output so far:\n{:?}",
                self.output()
            );
            if !self.read_some(deadline - now) {
                return self.output();
            }
        }
    }

    /// Types `text` into the terminal.
    #[track_caller]
    pub fn write(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .expect("write to the pty master");
    }
}
