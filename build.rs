//! Link settings that cut the runtime's own start-up, which engines pay on every `create`, `start`,
//! `state` and `delete` (each a new process). Figures: benches/README.md, "Start-up cost".
//!
//! - A non-PIE executable: the ~9000 absolute pointers in .data.rel.ro (clap, serde and std
//!   tables) are resolved at link time instead of being relocated by ld.so at every start, which
//!   wrote, and so copied, every one of those pages: ~43 page faults fewer per process.
//! - libgcc_s (unwinder) and libseccomp linked statically: two shared objects fewer for ld.so to
//!   find, map, relocate and initialise (libgcc_s also probes CPUID in its constructor, which
//!   traps in a VM): ~10 page faults fewer. Our crate's libraries come first on the link line, so
//!   the dynamic `-lgcc_s`/`-lseccomp` the std and libseccomp-sys crates ask for become unneeded
//!   and `--as-needed` drops them. libc (and libm, whose static archive needs ld.so internals)
//!   stay shared: ZFS support dlopen()s libzfs_core, which a static glibc cannot do reliably.
//!
//! A static archive that is missing (no libseccomp.a) leaves that library dynamic, as before.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    // glibc targets only: musl's are static already, other systems link differently.
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    // The executable's own image loses address randomisation (libraries, heap, stack keep it):
    // PROXMOX_LXCRI_PIE=1 builds a PIE for who prefers that to the start-up cost.
    println!("cargo:rerun-if-env-changed=PROXMOX_LXCRI_PIE");
    if var("PROXMOX_LXCRI_PIE") != "1" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    for lib in ["gcc_eh", "seccomp"] {
        if let Some(dir) = static_lib_dir(lib) {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static:-bundle={lib}");
        } else {
            println!("cargo:warning=lib{lib}.a not found: lib{lib} stays a shared library");
        }
    }
}

/// The directory of lib`name`.a as the C compiler (rustc's linker driver) finds it.
fn static_lib_dir(name: &str) -> Option<PathBuf> {
    let cc = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
        .arg(format!("-print-file-name=lib{name}.a"))
        .output()
        .ok()?;
    // An archive the compiler cannot find comes back as the bare name.
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    if !out.status.success() || !path.is_absolute() || !path.is_file() {
        return None;
    }
    path.parent().map(PathBuf::from)
}
