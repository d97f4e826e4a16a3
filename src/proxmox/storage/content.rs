//! What a rootfs holds, named cheaply and safely, so that containers from the same content can
//! share one clone template. The key is a SHA-256 over:
//!
//! - the image digest the engine (or the user) passes as an annotation, when there is one:
//!   `io.proxmox.lxcri.image-digest` (ours), CRI-O's `io.kubernetes.cri-o.ImageRef` (the
//!   resolved digest) or `io.kubernetes.cri-o.Image` (the image id), containerd's
//!   `io.kubernetes.cri.image-name` only when pinned by digest (`name@sha256:...`; a tag can
//!   move). Podman passes none;
//! - and always a manifest of the tree: every path, its type, mode, owner, size, mtime, device
//!   number, symlink target, hard-link group and extended attributes (file capabilities, ACLs).
//!   Engines may touch the tree after unpacking the image (mount points, /etc files): those
//!   changes show in the manifest.
//!
//! Without a digest, each inode's identity and change time (device, inode, ctime, which no
//! process can set) enter the key too: two trees then share a template only when they are the
//! very same files on disk (e.g. the same image's unpacked layers under two overlays), never
//! because they merely look alike (reproducible builds give equal sizes and mtimes to files
//! whose contents differ). File contents are never read, and a path alone never names content.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Context, Error, Result};
use sha2::{Digest, Sha256};

/// Ours: the caller vouches that containers with this value start from the same image.
pub const IMAGE_DIGEST: &str = "io.proxmox.lxcri.image-digest";
/// `false`: copy the rootfs into a fresh dataset even on a zfspool storage.
pub const CLONE: &str = "io.proxmox.lxcri.clone";
const CRIO_IMAGE_REF: &str = "io.kubernetes.cri-o.ImageRef";
const CRIO_IMAGE: &str = "io.kubernetes.cri-o.Image";
const CONTAINERD_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// Whether the container asks for a copy instead of a clone (`io.proxmox.lxcri.clone`).
pub fn clone_wanted(annotations: Option<&HashMap<String, String>>) -> Result<bool> {
    match annotations.and_then(|m| m.get(CLONE)).map(String::as_str) {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(Error::invalid(format!(
            "annotation {CLONE}: {v:?} must be true or false"
        ))),
    }
}

/// The image digest among the annotations, with the key it came from.
pub fn image_digest(
    annotations: Option<&HashMap<String, String>>,
) -> Result<Option<(&'static str, String)>> {
    let Some(map) = annotations else {
        return Ok(None);
    };
    if let Some(v) = map.get(IMAGE_DIGEST) {
        if v.is_empty() || v.len() > 1024 || v.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(Error::invalid(format!(
                "annotation {IMAGE_DIGEST}: {v:?} must be 1 to 1024 printable characters"
            )));
        }
        return Ok(Some((IMAGE_DIGEST, v.clone())));
    }
    for key in [CRIO_IMAGE_REF, CRIO_IMAGE] {
        if let Some(v) = map.get(key).filter(|v| !v.is_empty()) {
            return Ok(Some((key, v.clone())));
        }
    }
    Ok(map
        .get(CONTAINERD_IMAGE_NAME)
        .filter(|v| v.contains("@sha256:"))
        .map(|v| (CONTAINERD_IMAGE_NAME, v.clone())))
}

/// The content key of the tree at `root`: 64 hex digits.
pub fn key(digest: Option<&str>, root: &Path) -> Result<String> {
    let mut m = Manifest {
        hash: Sha256::new(),
        inode_identity: digest.is_none(),
        links: HashMap::new(),
    };
    m.hash.update(b"proxmox-lxcri content v1\0");
    match digest {
        Some(d) => m.field(b"digest", d.as_bytes()),
        None => m.field(b"digest", b""),
    }
    let md = fs::symlink_metadata(root).ctx(|| format!("stat {}", root.display()))?;
    // The root's own identity is left out: an overlay's root is the container's upper dir.
    m.entry(root, Path::new(""), &md, false)?;
    m.walk(root, Path::new(""))?;
    let digest = m.hash.finalize();
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

struct Manifest {
    hash: Sha256,
    inode_identity: bool,
    /// (dev, ino) of multiply-linked files -> the first path seen.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl Manifest {
    /// Length-prefixed, so that no two different manifests hash the same bytes.
    fn field(&mut self, tag: &[u8], value: &[u8]) {
        self.hash.update(tag);
        self.hash.update((value.len() as u64).to_le_bytes());
        self.hash.update(value);
    }

    fn walk(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .ctx(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .ctx(|| format!("reading {}", dir.display()))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let md = fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
            self.entry(&path, &rel, &md, self.inode_identity)?;
            if md.file_type().is_dir() {
                self.walk(&path, &rel)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &Path, md: &fs::Metadata, identity: bool) -> Result<()> {
        self.field(b"path", rel.as_os_str().as_bytes());
        let mut meta = Vec::with_capacity(64);
        for v in [
            u64::from(md.mode()),
            u64::from(md.uid()),
            u64::from(md.gid()),
            md.mtime() as u64,
            md.mtime_nsec() as u64,
            md.rdev(),
            if md.is_dir() { 0 } else { md.size() },
        ] {
            meta.extend_from_slice(&v.to_le_bytes());
        }
        if identity {
            for v in [
                md.dev(),
                md.ino(),
                md.ctime() as u64,
                md.ctime_nsec() as u64,
            ] {
                meta.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.field(b"meta", &meta);
        if md.file_type().is_symlink() {
            let target = fs::read_link(path).ctx(|| format!("readlink {}", path.display()))?;
            self.field(b"link", target.as_os_str().as_bytes());
            return Ok(());
        }
        if !md.is_dir() && md.nlink() > 1 {
            let first = self
                .links
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.as_os_str().as_bytes().to_vec())
                .clone();
            self.field(b"hardlink", &first);
        }
        match sys::xattr::list(path) {
            Ok(mut names) => {
                names.sort();
                for name in names {
                    let value = sys::xattr::get(path, &name).ctx(|| {
                        format!(
                            "xattr {} of {}",
                            OsStr::from_bytes(name.as_bytes()).to_string_lossy(),
                            path.display()
                        )
                    })?;
                    self.field(b"xattr", name.as_bytes());
                    self.field(b"value", &value);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => {
                return Err(Error::os(
                    format!("listing the xattrs of {}", path.display()),
                    e,
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn digests_come_from_ours_then_crio_then_a_pinned_containerd_name() {
        let d = |p: &[(&str, &str)]| image_digest(Some(&ann(p))).unwrap().map(|x| x.1);
        assert_eq!(d(&[]), None);
        assert_eq!(
            d(&[(IMAGE_DIGEST, "sha256:aa"), (CRIO_IMAGE_REF, "x")]),
            Some("sha256:aa".into())
        );
        assert_eq!(
            d(&[(CRIO_IMAGE, "id"), (CRIO_IMAGE_REF, "ref")]),
            Some("ref".into())
        );
        assert_eq!(d(&[(CONTAINERD_IMAGE_NAME, "nginx:1.27")]), None);
        assert_eq!(
            d(&[(CONTAINERD_IMAGE_NAME, "nginx@sha256:ab")]),
            Some("nginx@sha256:ab".into())
        );
        let e = image_digest(Some(&ann(&[(IMAGE_DIGEST, "a b")])))
            .unwrap_err()
            .to_string();
        assert!(e.contains(IMAGE_DIGEST), "{e}");
        let e = clone_wanted(Some(&ann(&[(CLONE, "no")])))
            .unwrap_err()
            .to_string();
        assert!(e.contains(CLONE), "{e}");
        assert!(!clone_wanted(Some(&ann(&[(CLONE, "false")]))).unwrap());
        assert!(clone_wanted(None).unwrap());
    }

    #[test]
    fn keys_follow_metadata_and_digest_and_never_the_path_alone() {
        let base = std::env::temp_dir().join(format!("lxcri-content-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (a, b) = (base.join("a"), base.join("b"));
        for t in [&a, &b] {
            fs::create_dir_all(t.join("etc")).unwrap();
            fs::write(t.join("etc/conf"), "one").unwrap();
            symlink("conf", t.join("etc/link")).unwrap();
            let f = fs::File::options()
                .write(true)
                .open(t.join("etc/conf"))
                .unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(7))
                .unwrap();
        }
        // With a digest, equal-looking trees share a key; without, they are different files.
        let ka = key(Some("sha256:1"), &a).unwrap();
        assert_eq!(ka.len(), 64);
        assert_eq!(ka, key(Some("sha256:1"), &b).unwrap());
        assert_ne!(ka, key(Some("sha256:2"), &a).unwrap());
        assert_ne!(key(None, &a).unwrap(), key(None, &b).unwrap());
        assert_eq!(key(None, &a).unwrap(), key(None, &a).unwrap());
        // Any metadata change moves the key, even under the same digest.
        symlink("other", b.join("etc/link2")).unwrap();
        assert_ne!(ka, key(Some("sha256:1"), &b).unwrap());
        fs::remove_file(b.join("etc/link2")).unwrap();
        fs::set_permissions(
            b.join("etc/conf"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert_ne!(ka, key(Some("sha256:1"), &b).unwrap());
        // Without a digest, rewriting a file in place (same size, mtime put back) moves it.
        let before = key(None, &a).unwrap();
        fs::write(a.join("etc/conf"), "two").unwrap();
        let f = fs::File::options()
            .write(true)
            .open(a.join("etc/conf"))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .unwrap();
        assert_ne!(before, key(None, &a).unwrap());
        fs::remove_dir_all(&base).unwrap();
    }
}
