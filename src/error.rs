//! The runtime's one error type: a message that names the field, path or syscall at fault, with the
//! kernel's reason appended (crun's style: the error is threaded through every call).

use std::fmt;

#[derive(Debug)]
pub struct Error {
    message: String,
    /// The host lacks what the step needs (a syscall or flag the kernel does not know): another
    /// engine may still serve the container (the runtime ADR's automatic fallback).
    unsupported: bool,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error in what the caller asked for (bad config, unknown container, wrong state).
    pub fn invalid(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            unsupported: false,
        }
    }

    /// A system call or I/O step that failed; `what` names the step and its object.
    pub fn os(what: impl Into<String>, err: std::io::Error) -> Self {
        Error {
            message: format!("{}: {}", what.into(), err),
            unsupported: false,
        }
    }

    /// A step that failed because this host does not support it (ENOSYS, EOPNOTSUPP, or EINVAL
    /// from a syscall whose flags the kernel does not know), as opposed to bad input.
    pub fn unsupported(what: impl Into<String>, err: std::io::Error) -> Self {
        Error {
            unsupported: true,
            ..Error::os(what, err)
        }
    }

    /// Whether another engine might succeed where this one failed (see `unsupported`).
    pub fn is_unsupported(&self) -> bool {
        self.unsupported
    }

    /// An error the container's init sent back as text: the errno survives only as io::Error's
    /// "(os error N)" suffix, so the classification is read back from it.
    pub fn from_init(message: String) -> Self {
        let unsupported = unsupported_text(&message);
        Error {
            message,
            unsupported,
        }
    }

    /// Prefixes more context: "while doing X: <inner>".
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error {
            message: format!("{what}: {}", self.message),
            unsupported: self.unsupported,
        }
    }
}

/// Whether an errno means "this host cannot do it" for the syscall named by `what`: ENOSYS and
/// EOPNOTSUPP always; EINVAL only from the syscalls whose flags grew over kernel versions.
pub fn unsupported_errno(what: &str, errno: Option<i32>) -> bool {
    match errno {
        Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => true,
        Some(libc::EINVAL) => ["clone3", "mount_setattr", "openat2"]
            .iter()
            .any(|s| what.contains(s)),
        _ => false,
    }
}

fn unsupported_text(message: &str) -> bool {
    let errno = [libc::ENOSYS, libc::EOPNOTSUPP, libc::EINVAL]
        .into_iter()
        .find(|e| message.contains(&format!("(os error {e})")));
    unsupported_errno(message, errno)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<nix::Error> for Error {
    fn from(err: nix::Error) -> Self {
        Error::os(err.desc(), std::io::Error::from_raw_os_error(err as i32))
    }
}

/// Attaches "what we were doing" to any std/nix error, so every message names its object.
pub trait Context<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::os(what(), e))
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::os(what(), std::io::Error::from_raw_os_error(e as i32)))
    }
}

impl<T> Context<T> for Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.context(what().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_survives_context_and_the_trip_from_the_init() {
        let e = Error::unsupported("clone3", std::io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(e.context("creating").is_unsupported());
        let text = Error::os(
            "mount_setattr of recursive options",
            std::io::Error::from_raw_os_error(libc::EINVAL),
        )
        .to_string();
        assert!(Error::from_init(text).is_unsupported());
        let bad_path = Error::os("mounts[0]", std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(!Error::from_init(bad_path.to_string()).is_unsupported());
        assert!(!Error::invalid("process: missing").is_unsupported());
    }
}
