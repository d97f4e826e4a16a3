//! Extended attributes of a path itself (the l* calls: a symlink is never followed), for copying
//! file capabilities and ACLs along with a file.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::{check, Result};

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// The names of the extended attributes of `path`.
pub fn list(path: &Path) -> Result<Vec<CString>> {
    let p = cpath(path)?;
    loop {
        // SAFETY: a NULL buffer of size 0 asks only for the size of the list.
        let size = check(unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) } as _)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` has room for `buf.len()` bytes, which is what is passed.
        match check(
            unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) } as _,
        ) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .filter_map(|n| CString::new(n).ok())
                    .collect());
            }
            // The list grew between the two calls: ask again.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The value of attribute `name` of `path`.
pub fn get(path: &Path, name: &CString) -> Result<Vec<u8>> {
    let p = cpath(path)?;
    loop {
        // SAFETY: a NULL buffer of size 0 asks only for the size of the value.
        let size =
            check(
                unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) } as _,
            )?;
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` has room for `buf.len()` bytes, which is what is passed.
        match check(unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        } as _)
        {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sets attribute `name` of `path` to `value`.
pub fn set(path: &Path, name: &CString, value: &[u8]) -> Result<()> {
    let p = cpath(path)?;
    // SAFETY: the strings are NUL-terminated; pointer and length describe `value`.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    } as _)?;
    Ok(())
}
