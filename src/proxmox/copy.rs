//! Copies the bundle's rootfs into a fresh volume, keeping what a container's root needs: file
//! types (regular, directory, symlink, device, fifo, socket), hard links, owners, modes
//! (setuid/setgid/sticky included), extended attributes (file capabilities, ACLs, SELinux
//! labels) and times. Symlinks are copied as links, never followed.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::{Context, Error, Result};

/// Copies the contents of `src` into the existing, empty directory `dst`, then gives `dst` the
/// owner, mode and times of `src`.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links = HashMap::new();
    copy_dir(src, dst, &mut links)?;
    let md = fs::symlink_metadata(src).ctx(|| format!("stat {}", src.display()))?;
    apply_metadata(src, dst, &md)
}

fn copy_dir(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> Result<()> {
    for entry in fs::read_dir(src).ctx(|| format!("reading {}", src.display()))? {
        let entry = entry.ctx(|| format!("reading {}", src.display()))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let md = fs::symlink_metadata(&from).ctx(|| format!("stat {}", from.display()))?;
        copy_entry(&from, &to, &md, links)
            .map_err(|e| e.context(format!("copying {}", from.display())))?;
    }
    Ok(())
}

fn copy_entry(
    from: &Path,
    to: &Path,
    md: &Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let ft = md.file_type();
    if ft.is_dir() {
        // Private until its contents and final mode are in place.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(to)
            .ctx(|| format!("mkdir {}", to.display()))?;
        copy_dir(from, to, links)?;
        return apply_metadata(from, to, md);
    }
    if ft.is_symlink() {
        let target = fs::read_link(from).ctx(|| format!("readlink {}", from.display()))?;
        std::os::unix::fs::symlink(&target, to).ctx(|| format!("symlink {}", to.display()))?;
        return apply_metadata(from, to, md);
    }
    if md.nlink() > 1 {
        let key = (md.dev(), md.ino());
        if let Some(first) = links.get(&key) {
            return fs::hard_link(first, to).ctx(|| format!("link {}", to.display()));
        }
        links.insert(key, to.to_path_buf());
    }
    if ft.is_file() {
        fs::copy(from, to).ctx(|| format!("writing {}", to.display()))?;
    } else {
        let kind = if ft.is_block_device() {
            SFlag::S_IFBLK
        } else if ft.is_char_device() {
            SFlag::S_IFCHR
        } else if ft.is_fifo() {
            SFlag::S_IFIFO
        } else if ft.is_socket() {
            SFlag::S_IFSOCK
        } else {
            return Err(Error::invalid("unknown file type"));
        };
        mknod(to, kind, Mode::from_bits_truncate(0o600), md.rdev())
            .ctx(|| format!("mknod {}", to.display()))?;
    }
    apply_metadata(from, to, md)
}

/// Owner first (chown clears setuid/setgid and file capabilities), then extended attributes,
/// then mode, then times (last, as writing the contents of a directory changes its mtime).
fn apply_metadata(from: &Path, path: &Path, md: &Metadata) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(md.uid()), Some(md.gid()))
        .ctx(|| format!("chown {}", path.display()))?;
    if !md.file_type().is_symlink() {
        copy_xattrs(from, path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(md.mode() & 0o7777))
            .ctx(|| format!("chmod {}", path.display()))?;
    }
    utimensat(
        None,
        path,
        &TimeSpec::new(md.atime(), md.atime_nsec()),
        &TimeSpec::new(md.mtime(), md.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    )
    .ctx(|| format!("setting the times of {}", path.display()))
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let names = match sys::xattr::list(from) {
        Ok(n) => n,
        // A source file system without xattrs has none to copy.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => {
            return Err(Error::os(
                format!("listing the xattrs of {}", from.display()),
                e,
            ))
        }
    };
    for name in names {
        let what = || format!("xattr {} of {}", name.to_string_lossy(), from.display());
        let value = sys::xattr::get(from, &name).ctx(what)?;
        sys::xattr::set(to, &name, &value).ctx(what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_tree_is_copied_with_types_links_owners_modes_and_times() {
        let base = std::env::temp_dir().join(format!("lxcri-copy-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (src, dst) = (base.join("src"), base.join("dst"));
        fs::create_dir_all(src.join("etc/sub")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("etc/file"), "hello").unwrap();
        fs::set_permissions(src.join("etc/file"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(src.join("etc/file"), src.join("etc/sub/hardlink")).unwrap();
        symlink("/etc/shadow", src.join("escape")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        fs::set_permissions(src.join("etc/sub"), fs::Permissions::from_mode(0o1777)).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            std::os::unix::fs::lchown(src.join("etc/sub"), Some(1234), Some(5678)).unwrap();
        }
        // A file capability (cap_net_raw+ep, VFS_CAP_REVISION_2) and a user attribute.
        let cap = [
            0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let cap_name = std::ffi::CString::new("security.capability").unwrap();
        let user_name = std::ffi::CString::new("user.lxcri").unwrap();
        if root {
            sys::xattr::set(&src.join("etc/file"), &cap_name, &cap).unwrap();
        }
        sys::xattr::set(&src.join("etc/file"), &user_name, b"kept").unwrap();
        utimensat(
            None,
            &src.join("etc"),
            &TimeSpec::new(1_000_000, 0),
            &TimeSpec::new(1_000_000, 5),
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();

        copy_tree(&src, &dst).unwrap();

        assert_eq!(fs::read_to_string(dst.join("etc/file")).unwrap(), "hello");
        let f = fs::metadata(dst.join("etc/file")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4755);
        assert_eq!(
            sys::xattr::get(&dst.join("etc/file"), &user_name).unwrap(),
            b"kept"
        );
        if root {
            assert_eq!(
                sys::xattr::get(&dst.join("etc/file"), &cap_name).unwrap(),
                cap
            );
        }
        assert_eq!(f.nlink(), 2);
        assert_eq!(
            f.ino(),
            fs::metadata(dst.join("etc/sub/hardlink")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(dst.join("escape")).unwrap(),
            Path::new("/etc/shadow")
        );
        assert!(fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        let sub = fs::metadata(dst.join("etc/sub")).unwrap();
        assert_eq!(sub.mode() & 0o7777, 0o1777);
        if root {
            assert_eq!((sub.uid(), sub.gid()), (1234, 5678));
        }
        let etc = fs::metadata(dst.join("etc")).unwrap();
        assert_eq!((etc.mtime(), etc.mtime_nsec()), (1_000_000, 5));
        assert_eq!(
            fs::metadata(&dst).unwrap().mode() & 0o7777,
            fs::metadata(&src).unwrap().mode() & 0o7777
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
