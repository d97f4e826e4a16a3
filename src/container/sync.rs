//! The parent and the child (the container's init) talk over a socketpair in small tagged
//! messages. An error in the child travels back as a message, so `create` prints one clear error.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use crate::error::{Context, Error, Result};

#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// Parent to child: id maps written and cgroup joined; go on.
    Go,
    /// Child to parent: set up and waiting for `start`.
    Ready,
    /// Child to parent: set-up failed; the text says where.
    Failed(String),
    /// Parent to child, before Go: the state to hand the seccomp listener with the notify fd.
    SeccompState(String),
}

const TAG_GO: u8 = b'G';
const TAG_READY: u8 = b'R';
const TAG_FAILED: u8 = b'E';
const TAG_SECCOMP_STATE: u8 = b'S';
const MAX_MESSAGE: usize = 64 * 1024;

pub struct Channel(pub UnixStream);

impl Channel {
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair().ctx(|| "socketpair for the init")?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn send(&mut self, msg: &Message) -> Result<()> {
        let (tag, body): (u8, &[u8]) = match msg {
            Message::Go => (TAG_GO, b""),
            Message::Ready => (TAG_READY, b""),
            Message::Failed(text) => (TAG_FAILED, text.as_bytes()),
            Message::SeccompState(json) => (TAG_SECCOMP_STATE, json.as_bytes()),
        };
        let body = &body[..body.len().min(MAX_MESSAGE)];
        let mut frame = Vec::with_capacity(5 + body.len());
        frame.push(tag);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(body);
        self.0.write_all(&frame).ctx(|| "sending to the init")
    }

    /// The next message; Ok(None) when the other side is gone without a word.
    pub fn recv(&mut self) -> Result<Option<Message>> {
        let mut head = [0u8; 5];
        match self.0.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::os("reading from the init", e)),
        }
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(Error::invalid("oversized message from the init"));
        }
        let mut body = vec![0u8; len];
        self.0
            .read_exact(&mut body)
            .ctx(|| "reading from the init")?;
        match head[0] {
            TAG_GO => Ok(Some(Message::Go)),
            TAG_READY => Ok(Some(Message::Ready)),
            TAG_FAILED => Ok(Some(Message::Failed(
                String::from_utf8_lossy(&body).into_owned(),
            ))),
            TAG_SECCOMP_STATE => Ok(Some(Message::SeccompState(
                String::from_utf8_lossy(&body).into_owned(),
            ))),
            t => Err(Error::invalid(format!(
                "unknown message tag {t} from the init"
            ))),
        }
    }
}

/// The child's side of the handshake: tells the parent how its set-up went and hangs up; on a
/// failure (or a parent that is gone) the child exits here, since nothing is left to do.
pub fn report_setup<T>(mut channel: Channel, setup: Result<T>) -> T {
    let value = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = channel.send(&Message::Failed(e.to_string()));
            sys::exit_now(1);
        }
    };
    if channel.send(&Message::Ready).is_err() {
        sys::exit_now(1);
    }
    value
}

/// What a child does when its final execve failed: says why on its stderr (the container's)
/// and exits with 127, the shell's "command not found".
pub fn exec_failed(err: Error) -> ! {
    eprintln!("proxmox-lxcri: {err}");
    sys::exit_now(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (mut a, mut b) = Channel::pair().unwrap();
        a.send(&Message::Go).unwrap();
        a.send(&Message::Failed("mounts[1]: boom".into())).unwrap();
        assert_eq!(b.recv().unwrap(), Some(Message::Go));
        assert_eq!(
            b.recv().unwrap(),
            Some(Message::Failed("mounts[1]: boom".into()))
        );
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }
}
