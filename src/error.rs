//! The runtime's one error type: a message that names the field, path or syscall at fault, with the
//! kernel's reason appended (crun's style: the error is threaded through every call).

use std::fmt;

#[derive(Debug)]
pub struct Error {
    message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error in what the caller asked for (bad config, unknown container, wrong state).
    pub fn invalid(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// A system call or I/O step that failed; `what` names the step and its object.
    pub fn os(what: impl Into<String>, err: std::io::Error) -> Self {
        Error {
            message: format!("{}: {}", what.into(), err),
        }
    }

    /// Prefixes more context: "while doing X: <inner>".
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error {
            message: format!("{what}: {}", self.message),
        }
    }
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
