//! Writing a file so that readers see the old content or the new one, never half of it: a temp file
//! in the same directory, then rename. No fsync: state lives on tmpfs (/run), where it buys nothing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Context, Result};

pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .ctx(|| format!("writing {}", tmp.display()))?;
    if let Err(e) = f.write_all(data) {
        let _ = fs::remove_file(&tmp);
        return Err(e).ctx(|| format!("writing {}", tmp.display()));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        crate::error::Error::os(format!("renaming to {}", path.display()), e)
    })
}

/// Opens (creating it and its directory) a lock file the way pct opens its own: for append,
/// mode 0644, never removed afterwards (removing one could let two holders in).
pub fn open_lock_file(dir: &Path, name: &str) -> Result<fs::File> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))
}
