//! Engine integration (issue 6): the runtime under real engines from Debian's packages — podman
//! (with conmon, catatonit) and containerd (with ctr and its runc v2 shim) — each scenario run with
//! the runtime under test (`LXCRI_TEST_RUNTIME`, or the binary this crate builds) and, as the
//! control, with Debian's runc: `podman::run_rm::ours` and `podman::run_rm::runc`.
//!
//! The engines run on private storage below `/tmp/lxe/<pid>-<n>` and call the runtime through a
//! wrapper that records every call; a failing scenario prints the calls with their exit codes, and
//! with `LXCRI_ENGINES_CALLS=DIR` every scenario writes them to `DIR/<test>.log`.
//!
//! These tests are slow (seconds each). Select them with `cargo test --test engines`, only ours with
//! `cargo test --test engines -- ours`; leave them out of a full run with
//! `cargo test -- --skip podman:: --skip containerd::`.

#[path = "../common/mod.rs"]
mod common;
mod harness;

/// Defines the tests `NAME::ours` and `NAME::runc`, which run the scenario fn `NAME` with the
/// runtime under test and with runc.
macro_rules! scenario {
    ($name:ident) => {
        mod $name {
            #[test]
            fn ours() {
                super::$name(crate::harness::Rt::Ours)
            }
            #[test]
            fn runc() {
                super::$name(crate::harness::Rt::Runc)
            }
        }
    };
}

mod containerd;
mod podman;
