//! The container lifecycle: `create` (the parent side), the init (the child side) and the messages
//! between them.

pub mod create;
pub mod exec;
pub mod foreground;
pub mod init;
pub mod launch;
pub mod sync;
