//! seccomp(2) with a raw BPF program: the runtime compiles the filter (or reads it from its cache)
//! once, and loading it is then a single syscall with the spec's flags, as late as possible.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::{check, Result};

pub use libc::{
    SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_NEW_LISTENER, SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
    SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
};

/// The size of one classic BPF instruction (struct sock_filter).
pub const BPF_INSN_SIZE: usize = 8;
/// The kernel's limit on the length of one filter (BPF_MAXINSNS).
pub const BPF_MAX_INSNS: usize = 4096;

/// A classic BPF program, already split into instructions so that loading it allocates nothing.
pub struct BpfProgram(Vec<libc::sock_filter>);

impl BpfProgram {
    /// Parses the byte form libseccomp exports (struct sock_filter in native byte order).
    /// Refuses a length that is not whole instructions or beyond the kernel's limit.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let n = bytes.len() / BPF_INSN_SIZE;
        if bytes.is_empty() || bytes.len() % BPF_INSN_SIZE != 0 || n > BPF_MAX_INSNS {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(BpfProgram(
            bytes
                .chunks_exact(BPF_INSN_SIZE)
                .map(|c| libc::sock_filter {
                    code: u16::from_ne_bytes([c[0], c[1]]),
                    jt: c[2],
                    jf: c[3],
                    k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                })
                .collect(),
        ))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// seccomp(SECCOMP_SET_MODE_FILTER, flags, prog) for the calling thread. With
    /// SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns the notify fd (close-on-exec).
    /// Needs no_new_privs or CAP_SYS_ADMIN in the caller's user namespace.
    pub fn load(&self, flags: libc::c_ulong) -> Result<Option<OwnedFd>> {
        let prog = libc::sock_fprog {
            len: self.0.len() as libc::c_ushort,
            // The kernel only reads the program; the cast to *mut is what the C struct demands.
            filter: self.0.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `self.0`, which holds `len` initialised instructions and
        // outlives the call; the kernel copies the program and does not keep the pointer.
        let ret = check(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        })?;
        if flags & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
            // SAFETY: with NEW_LISTENER the return value is a new fd that nobody else owns.
            Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as i32) }))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_bytes_refuses_partial_instructions_and_empty_programs() {
        assert!(BpfProgram::from_bytes(&[]).is_err());
        assert!(BpfProgram::from_bytes(&[0; 12]).is_err());
        assert!(BpfProgram::from_bytes(&[0; 8 * (BPF_MAX_INSNS + 1)]).is_err());
        assert_eq!(BpfProgram::from_bytes(&[0; 16]).unwrap().len(), 2);
    }
}
