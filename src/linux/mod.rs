//! One kernel concern per module; the container code composes them.

pub mod capabilities;
pub mod cgroup_events;
pub mod cgroupfs;
pub mod cgroups;
pub mod devices;
pub mod idmap;
pub mod lsm;
pub mod mount_idmap;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod resources;
pub mod rootfs;
pub mod rootless;
pub mod seccomp;
pub mod signals;
pub mod systemd_cgroup;
pub mod terminal;
