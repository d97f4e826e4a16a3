//! Passing one file descriptor over a unix socket (SCM_RIGHTS), as runc does for console sockets:
//! the fd travels with a short text (the pty's name).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::Result;

fn io(e: nix::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Sends `fd` with `text` over the connected unix socket `sock`.
pub fn send_fd(sock: BorrowedFd<'_>, text: &[u8], fd: BorrowedFd<'_>) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(if text.is_empty() { b"\0" } else { text })];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(io)?;
    Ok(())
}

/// Receives one fd (and its text) from `sock`; close-on-exec on arrival.
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<(OwnedFd, Vec<u8>)> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io)?;
    let len = msg.bytes;
    let mut received = None;
    for cmsg in msg.cmsgs().map_err(io)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel installed this fd in our table for this message; nobody
                // else owns it. Extra fds beyond the first are wrapped too, so they get closed.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                received.get_or_insert(owned);
            }
        }
    }
    let fd = received.ok_or_else(|| std::io::Error::from_raw_os_error(libc::EBADMSG))?;
    Ok((fd, buf[..len].to_vec()))
}
