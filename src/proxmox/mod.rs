//! Proxmox VE integration: what makes a container visible to pct.

pub mod lxc_protocol;
pub mod monitor;
