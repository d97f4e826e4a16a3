//! Compiled seccomp programs, cached under `<root>/seccomp-cache/` (crun does the same): compiling
//! a real engine's profile costs milliseconds, reading it back microseconds.
//!
//! A file is used only if everything about it checks out, otherwise the profile is compiled again
//! and the file replaced:
//! - the directory is ours (owner = euid) and closed to others (no group/other bits), not a
//!   symlink; the file likewise, opened with O_NOFOLLOW: only its owner can have written it;
//! - the file holds the *whole* key (the canonical profile, the libseccomp version, the native
//!   arch, this format's version), compared byte for byte: the name's hash only picks the file, so
//!   a collision can never hand one profile another profile's program;
//! - the header's magic and lengths add up to the file's size, the program is whole instructions
//!   within the kernel's limit, and a checksum over key and program matches (a torn or corrupted
//!   file is refused).
//!
//! Files are written to a temporary name and renamed into place, so a reader never sees half.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const DIR: &str = "seccomp-cache";
const MAGIC: &[u8; 8] = b"LXCRIBPF";
const FORMAT: u32 = 1;
/// magic, format, key length, program length, checksum.
const HEADER: usize = 8 + 4 + 4 + 4 + 8;
/// Far above any real profile; bounds what a read may allocate.
const MAX_FILE: u64 = 4 << 20;

/// FNV-1a, 64 bits: picks the file name and catches corruption. It is not what makes the cache
/// safe (see the module comment): the key is compared whole and only the owner can write.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn dir(root: &Path) -> PathBuf {
    root.join(DIR)
}

fn file_name(key: &[u8]) -> String {
    format!("{:016x}.bpf", fnv1a(&[key]))
}

/// Owned by us and writable by nobody else.
fn trusted(meta: &fs::Metadata) -> bool {
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 == 0
}

/// The cached program for `key`, if there is one that passes every check.
pub fn lookup(root: &Path, key: &[u8]) -> Option<Vec<u8>> {
    let dir = dir(root);
    let meta = fs::symlink_metadata(&dir).ok()?;
    if !meta.is_dir() || !trusted(&meta) {
        return None;
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(file_name(key)))
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || !trusted(&meta) || meta.len() > MAX_FILE {
        return None;
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut data).ok()?;
    parse(&data, key)
}

fn u32_at(data: &[u8], at: usize) -> usize {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize
}

fn parse(data: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    if data.len() < HEADER || &data[..8] != MAGIC || u32_at(data, 8) != FORMAT as usize {
        return None;
    }
    let key_len = u32_at(data, 12);
    let bpf_len = u32_at(data, 16);
    let sum = u64::from_le_bytes(data[20..28].try_into().ok()?);
    if HEADER.checked_add(key_len)?.checked_add(bpf_len)? != data.len() {
        return None;
    }
    let (stored_key, bpf) = data[HEADER..].split_at(key_len);
    if stored_key != key
        || bpf.is_empty()
        || bpf.len() % sys::seccomp::BPF_INSN_SIZE != 0
        || bpf.len() > sys::seccomp::BPF_MAX_INSNS * sys::seccomp::BPF_INSN_SIZE
        || fnv1a(&[stored_key, bpf]) != sum
    {
        return None;
    }
    Some(bpf.to_vec())
}

fn encode(key: &[u8], bpf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + key.len() + bpf.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(bpf.len() as u32).to_le_bytes());
    out.extend_from_slice(&fnv1a(&[key, bpf]).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(bpf);
    out
}

/// Stores the program for `key`. A cache that cannot be written costs only speed: the caller
/// ignores the error.
pub fn store(root: &Path, key: &[u8], bpf: &[u8]) -> std::io::Result<()> {
    let dir = dir(root);
    // The root may not exist yet: the cache is filled before the container's state dir is made.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)?;
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || !trusted(&meta) {
        return Err(std::io::Error::from_raw_os_error(libc::EPERM));
    }
    let name = file_name(key);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(&encode(key, bpf))?;
        drop(f);
        fs::rename(&tmp, dir.join(&name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An entry encoded and read back, as lookup() would.
#[cfg(test)]
fn roundtrip(key: &[u8], bpf: &[u8]) -> Option<Vec<u8>> {
    parse(&encode(key, bpf), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BPF: &[u8] = &[6, 0, 0, 0, 0, 0, 255, 127];

    #[test]
    fn an_intact_entry_reads_back() {
        assert_eq!(roundtrip(b"key", BPF).as_deref(), Some(BPF));
    }

    #[test]
    fn any_changed_byte_or_another_key_is_refused() {
        let good = encode(b"key", BPF);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert_eq!(parse(&bad, b"key"), None, "byte {i} flipped");
        }
        assert_eq!(parse(&good, b"kez"), None);
        assert_eq!(parse(&good[..good.len() - 1], b"key"), None);
        assert_eq!(roundtrip(b"key", &BPF[..7]), None);
    }

    #[test]
    fn files_not_owned_by_us_or_open_to_others_are_not_read() {
        let root = std::env::temp_dir().join(format!("lxcri-cache-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        store(&root, b"key", BPF).unwrap();
        assert_eq!(lookup(&root, b"key").as_deref(), Some(BPF));
        let file = dir(&root).join(file_name(b"key"));
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&root, b"key"), None);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(dir(&root), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(lookup(&root, b"key"), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
