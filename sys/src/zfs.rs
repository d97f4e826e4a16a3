//! libzfs_core (OpenZFS's thin wrapper over the /dev/zfs ioctls), loaded with dlopen on first
//! use instead of being linked: linking it (and the dozen libraries it pulls in) costs every
//! start of the runtime about 0.9 ms and 1 MB, and would make the binary refuse to start on a
//! host without ZFS. The function signatures are those of OpenZFS 2.1's libzfs_core.h and
//! libnvpair.h, as zfs-core-sys 0.5 declares them (Debian bookworm ships 2.1.11 as
//! libzfs_core.so.3 and libnvpair.so.3 in libzfs4linux and libnvpair3linux).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::OnceLock;

use crate::Result;

pub const LIBZFS_CORE: &str = "libzfs_core.so.3";
pub const LIBNVPAIR: &str = "libnvpair.so.3";

/// A property value for a new dataset. Index properties (acltype, xattr, ...) take their
/// numeric value: the kernel refuses strings for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropValue {
    U64(u64),
    Str(String),
}

type NvList = c_void;
/// lzc_dataset_type: LZC_DATSET_TYPE_ZFS.
const LZC_DATSET_TYPE_ZFS: c_uint = 2;
/// nvlist_alloc flag: one value per name.
const NV_UNIQUE_NAME: c_uint = 1;

type InitFn = unsafe extern "C" fn() -> c_int;
type CreateFn = unsafe extern "C" fn(*const c_char, c_uint, *mut NvList, *mut u8, c_uint) -> c_int;
type DestroyFn = unsafe extern "C" fn(*const c_char) -> c_int;
type ExistsFn = unsafe extern "C" fn(*const c_char) -> c_uint;
type NvAllocFn = unsafe extern "C" fn(*mut *mut NvList, c_uint, c_int) -> c_int;
type NvFreeFn = unsafe extern "C" fn(*mut NvList);
type NvAddU64Fn = unsafe extern "C" fn(*mut NvList, *const c_char, u64) -> c_int;
type NvAddStrFn = unsafe extern "C" fn(*mut NvList, *const c_char, *const c_char) -> c_int;
type NvAddBoolFn = unsafe extern "C" fn(*mut NvList, *const c_char) -> c_int;
type SnapshotFn = unsafe extern "C" fn(*mut NvList, *mut NvList, *mut *mut NvList) -> c_int;
type CloneFn = unsafe extern "C" fn(*const c_char, *const c_char, *mut NvList) -> c_int;
/// The second argument is a boolean_t (an int enum in libspl).
type DestroySnapsFn = unsafe extern "C" fn(*mut NvList, c_int, *mut *mut NvList) -> c_int;

struct Fns {
    lzc_create: CreateFn,
    lzc_destroy: DestroyFn,
    lzc_exists: ExistsFn,
    lzc_snapshot: SnapshotFn,
    lzc_clone: CloneFn,
    lzc_destroy_snaps: DestroySnapsFn,
    nvlist_alloc: NvAllocFn,
    nvlist_free: NvFreeFn,
    nvlist_add_uint64: NvAddU64Fn,
    nvlist_add_string: NvAddStrFn,
    nvlist_add_boolean: NvAddBoolFn,
}

/// The loaded and initialised library; lives until the process exits.
pub struct Lzc {
    fns: Fns,
}

/// The library to load. Debug builds take another name from PROXMOX_LXCRI_TEST_LIBZFS_CORE, so
/// that tests can show the error of a host without it on a host that has it.
fn library_name() -> String {
    #[cfg(debug_assertions)]
    if let Ok(name) = std::env::var("PROXMOX_LXCRI_TEST_LIBZFS_CORE") {
        return name;
    }
    LIBZFS_CORE.to_string()
}

static LZC: OnceLock<std::result::Result<Lzc, String>> = OnceLock::new();

impl Lzc {
    /// Loads libzfs_core and opens /dev/zfs, once per process. The error says what is missing.
    pub fn get() -> std::result::Result<&'static Lzc, String> {
        LZC.get_or_init(Lzc::load).as_ref().map_err(Clone::clone)
    }

    fn load() -> std::result::Result<Lzc, String> {
        let core = dlopen(&library_name())
            .map_err(|e| format!("{e} (install libzfs4linux, which provides it)"))?;
        let nvpair = dlopen(LIBNVPAIR)
            .map_err(|e| format!("{e} (install libnvpair3linux, which provides it)"))?;
        use std::mem::transmute;
        // SAFETY (for every symbol below): each name is looked up in the library that defines
        // it and given the C signature its OpenZFS 2.1 header declares; the handles are never
        // closed, so the pointers stay valid for the life of the process.
        let (init, fns) = unsafe {
            (
                transmute::<*mut c_void, InitFn>(dlsym(core, "libzfs_core_init")?),
                Fns {
                    lzc_create: transmute::<*mut c_void, CreateFn>(dlsym(core, "lzc_create")?),
                    lzc_destroy: transmute::<*mut c_void, DestroyFn>(dlsym(core, "lzc_destroy")?),
                    lzc_exists: transmute::<*mut c_void, ExistsFn>(dlsym(core, "lzc_exists")?),
                    lzc_snapshot: transmute::<*mut c_void, SnapshotFn>(dlsym(
                        core,
                        "lzc_snapshot",
                    )?),
                    lzc_clone: transmute::<*mut c_void, CloneFn>(dlsym(core, "lzc_clone")?),
                    lzc_destroy_snaps: transmute::<*mut c_void, DestroySnapsFn>(dlsym(
                        core,
                        "lzc_destroy_snaps",
                    )?),
                    nvlist_alloc: transmute::<*mut c_void, NvAllocFn>(dlsym(
                        nvpair,
                        "nvlist_alloc",
                    )?),
                    nvlist_free: transmute::<*mut c_void, NvFreeFn>(dlsym(nvpair, "nvlist_free")?),
                    nvlist_add_uint64: transmute::<*mut c_void, NvAddU64Fn>(dlsym(
                        nvpair,
                        "nvlist_add_uint64",
                    )?),
                    nvlist_add_string: transmute::<*mut c_void, NvAddStrFn>(dlsym(
                        nvpair,
                        "nvlist_add_string",
                    )?),
                    nvlist_add_boolean: transmute::<*mut c_void, NvAddBoolFn>(dlsym(
                        nvpair,
                        "nvlist_add_boolean",
                    )?),
                },
            )
        };
        // SAFETY: libzfs_core_init takes no arguments; it opens /dev/zfs and returns an errno.
        let err = unsafe { init() };
        if err != 0 {
            return Err(format!(
                "libzfs_core_init: cannot open /dev/zfs: {} (is the zfs kernel module loaded? \
                 `modprobe zfs`)",
                std::io::Error::from_raw_os_error(err)
            ));
        }
        Ok(Lzc { fns })
    }

    /// Whether the dataset (or snapshot) exists.
    pub fn exists(&self, name: &str) -> bool {
        let Ok(name) = CString::new(name) else {
            return false;
        };
        // SAFETY: `name` is NUL-terminated and outlives the call.
        unsafe { (self.fns.lzc_exists)(name.as_ptr()) != 0 }
    }

    /// lzc_create of a file system with the given properties.
    pub fn create_filesystem(&self, name: &str, props: &[(&str, PropValue)]) -> Result<()> {
        let cname = cstring(name)?;
        let list = self.nvlist(props)?;
        // SAFETY: `cname` is NUL-terminated, `list.0` a valid nvlist owned by `list`; no
        // wrapping key is passed (NULL, 0). Both outlive the call.
        let err = unsafe {
            (self.fns.lzc_create)(
                cname.as_ptr(),
                LZC_DATSET_TYPE_ZFS,
                list.ptr,
                std::ptr::null_mut(),
                0,
            )
        };
        errno(err)
    }

    /// lzc_destroy of a file system (not recursive: children or clones make it fail).
    pub fn destroy(&self, name: &str) -> Result<()> {
        let cname = cstring(name)?;
        // SAFETY: `cname` is NUL-terminated and outlives the call.
        errno(unsafe { (self.fns.lzc_destroy)(cname.as_ptr()) })
    }

    /// lzc_snapshot of one snapshot (`fs@name`).
    pub fn snapshot(&self, snap: &str) -> Result<()> {
        let snaps = self.name_list(snap)?;
        let mut errors: *mut NvList = std::ptr::null_mut();
        // SAFETY: `snaps.ptr` is a valid nvlist; no properties (NULL). On failure libzfs_core
        // may hand back an error list in `errors`, which we own and free at once.
        let err = unsafe { (self.fns.lzc_snapshot)(snaps.ptr, std::ptr::null_mut(), &mut errors) };
        self.free_list(errors);
        errno(err)
    }

    /// lzc_clone: a new file system `name` from the snapshot `origin`, with properties (clones
    /// inherit from their parent dataset, not from the origin).
    pub fn clone(&self, name: &str, origin: &str, props: &[(&str, PropValue)]) -> Result<()> {
        let (cname, corigin) = (cstring(name)?, cstring(origin)?);
        let list = self.nvlist(props)?;
        // SAFETY: both names are NUL-terminated, `list.ptr` a valid nvlist; all outlive the call.
        errno(unsafe { (self.fns.lzc_clone)(cname.as_ptr(), corigin.as_ptr(), list.ptr) })
    }

    /// lzc_destroy_snaps of one snapshot, not deferred: a snapshot that has clones is kept
    /// and the call fails with EEXIST.
    pub fn destroy_snapshot(&self, snap: &str) -> Result<()> {
        let snaps = self.name_list(snap)?;
        let mut errors: *mut NvList = std::ptr::null_mut();
        // SAFETY: `snaps.ptr` is a valid nvlist; defer = B_FALSE; `errors` as in snapshot().
        let err = unsafe { (self.fns.lzc_destroy_snaps)(snaps.ptr, 0, &mut errors) };
        self.free_list(errors);
        errno(err)
    }

    /// A list holding `name` as a boolean (the shape lzc_snapshot and lzc_destroy_snaps take).
    fn name_list(&self, name: &str) -> Result<OwnedNvList<'_>> {
        let list = self.nvlist(&[])?;
        let cname = cstring(name)?;
        // SAFETY: `list.ptr` is a valid nvlist; the name is copied into it.
        errno(unsafe { (self.fns.nvlist_add_boolean)(list.ptr, cname.as_ptr()) })?;
        Ok(list)
    }

    fn free_list(&self, list: *mut NvList) {
        if !list.is_null() {
            // SAFETY: a non-NULL error list from libzfs_core belongs to the caller, freed once.
            unsafe { (self.fns.nvlist_free)(list) }
        }
    }

    fn nvlist(&self, props: &[(&str, PropValue)]) -> Result<OwnedNvList<'_>> {
        let mut ptr: *mut NvList = std::ptr::null_mut();
        // SAFETY: nvlist_alloc writes a new list to `ptr` (KM_SLEEP = 0 in user space).
        errno(unsafe { (self.fns.nvlist_alloc)(&mut ptr, NV_UNIQUE_NAME, 0) })?;
        let list = OwnedNvList { lzc: self, ptr };
        for (key, value) in props {
            let ckey = cstring(key)?;
            // SAFETY: `list.ptr` is a valid nvlist; the strings are NUL-terminated and are
            // copied into the list before the call returns.
            let err = unsafe {
                match value {
                    PropValue::U64(v) => (self.fns.nvlist_add_uint64)(list.ptr, ckey.as_ptr(), *v),
                    PropValue::Str(s) => {
                        let cs = cstring(s)?;
                        (self.fns.nvlist_add_string)(list.ptr, ckey.as_ptr(), cs.as_ptr())
                    }
                }
            };
            errno(err)?;
        }
        Ok(list)
    }
}

struct OwnedNvList<'a> {
    lzc: &'a Lzc,
    ptr: *mut NvList,
}

impl Drop for OwnedNvList<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from nvlist_alloc and is freed exactly once, here.
        unsafe { (self.lzc.fns.nvlist_free)(self.ptr) }
    }
}

fn dlopen(name: &str) -> std::result::Result<*mut c_void, String> {
    let cname = CString::new(name).map_err(|_| format!("bad library name {name:?}"))?;
    // SAFETY: `cname` is NUL-terminated; dlopen has no other preconditions. Loading runs the
    // library's constructors, which is what using it requires.
    let handle = unsafe { libc::dlopen(cname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("cannot load {name}: {}", dlerror()));
    }
    Ok(handle)
}

fn dlsym(handle: *mut c_void, name: &str) -> std::result::Result<*mut c_void, String> {
    let cname = CString::new(name).map_err(|_| format!("bad symbol name {name:?}"))?;
    // SAFETY: `handle` came from a successful dlopen and `cname` is NUL-terminated.
    let sym = unsafe { libc::dlsym(handle, cname.as_ptr()) };
    if sym.is_null() {
        return Err(format!("symbol {name} not found: {}", dlerror()));
    }
    Ok(sym)
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call
    // in this thread; it is copied at once.
    unsafe {
        let msg = libc::dlerror();
        if msg.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(msg).to_string_lossy().into_owned()
        }
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// libzfs_core returns 0 or an errno value.
fn errno(err: c_int) -> Result<()> {
    if err == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_reported_by_name() {
        match Lzc::get() {
            Ok(_) => eprintln!("libzfs_core is installed and /dev/zfs opened: nothing to check"),
            Err(e) => assert!(
                e.contains(LIBZFS_CORE) || e.contains("libzfs_core_init"),
                "{e}"
            ),
        }
    }

    #[test]
    fn loading_fails_cleanly_for_an_unknown_library() {
        let e = dlopen("libdoes-not-exist-lxcri.so.9").unwrap_err();
        assert!(e.contains("libdoes-not-exist-lxcri.so.9"), "{e}");
    }
}
