//! Id-mapped bind mounts (runtime-spec 1.1 `mounts[].uidMappings`/`gidMappings`, runc's `idmap`
//! and `ridmap` options): what `stat` shows inside the container, with and without a user
//! namespace, recursion, and bad input refused naming the field with nothing left behind.

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};

/// Whether the filesystem of the test's scratch dirs can be idmapped here (tmpfs only since Linux
/// 6.3, overlayfs since 5.19): probed once with a real container. Where it cannot, the kernel's
/// refusal is what tests/idmap.rs checks elsewhere; the mapping tests say so loudly and return.
fn idmap_works_here(test: &str) -> bool {
    static WORKS: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let res = WORKS.get_or_init(|| {
        let mut c = Container::new();
        let src = c.host.join("probe");
        fs::create_dir_all(&src).unwrap();
        c.add_mount(with_maps(
            bind("/p", &src, &["bind"]),
            maps(0, 1, 1),
            maps(0, 1, 1),
        ))
        .sh("true");
        let out = c.run();
        match out.stderr.contains("cannot idmap mounts") {
            true => Err(out.stderr.trim().to_string()),
            false => Ok(()),
        }
    });
    if let Err(why) = res {
        eprintln!(
            "SKIP (LOUD) {test}: the filesystem of {TMP_BASE} cannot be idmapped by this \
             kernel ({why}); it runs on the development host (ext4, Linux 6.18)"
        );
    }
    res.is_ok()
}

fn maps(c: u32, h: u32, size: u32) -> Value {
    json!([{ "containerID": c, "hostID": h, "size": size }])
}

/// A host dir holding `f` owned by 1000:1000 and `g` owned by 1001:1002.
fn owned_tree(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    for (name, uid, gid) in [("f", 1000, 1000), ("g", 1001, 1002)] {
        let p = dir.join(name);
        fs::write(&p, name).unwrap();
        chown(&p, Some(uid), Some(gid)).unwrap();
    }
    dir.to_path_buf()
}

fn bind(dest: &str, src: &Path, options: &[&str]) -> Value {
    json!({ "destination": dest, "type": "bind", "source": src.to_string_lossy(),
            "options": options })
}

fn with_maps(mut m: Value, uid: Value, gid: Value) -> Value {
    m["uidMappings"] = uid;
    m["gidMappings"] = gid;
    m
}

/// The idmapped mounts (and the `idmapped` flag mountinfo shows for them).
fn idmapped_mount_points(mountinfo: &str) -> Vec<String> {
    parse_mountinfo(mountinfo)
        .into_iter()
        .filter(|m| m.has_option("idmapped"))
        .map(|m| m.mount_point)
        .collect()
}

#[test]
fn an_idmapped_bind_mount_shows_the_mapped_owners_without_a_user_namespace() {
    if !idmap_works_here("an_idmapped_bind_mount_shows_the_mapped_owners_without_a_user_namespace")
    {
        return;
    }
    let mut c = Container::new();
    let src = owned_tree(&c.host.join("src"));
    c.add_mount(with_maps(
        bind("/idm", &src, &["bind", "ro"]),
        maps(1000, 2000, 2),
        maps(1000, 3000, 3),
    ))
    .add_mount(bind("/plain", &src, &["bind"]))
    .sh("stat -c %u:%g /idm/f /idm/g /plain/f; \
         touch /idm/new 2>/dev/null && echo idm-writable; echo ---; cat /proc/self/mountinfo");
    let out = c.run();
    out.assert_ok();
    let s: Vec<&str> = out.stdout.split("---\n").collect();
    assert_eq!(
        s[0].lines().collect::<Vec<_>>(),
        ["2000:3000", "2001:3002", "1000:1000"],
        "{out}"
    );
    if is_ours() {
        assert_eq!(idmapped_mount_points(s[1]), ["/idm"], "{out}");
    }
    // The files themselves are untouched.
    let meta = fs::metadata(src.join("f")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    c.delete();
    c.assert_no_debris(None);
}

fn user_ns(c: &mut Container) {
    c.namespace("user", None)
        .uid_mappings(&[(0, 100000, 65536)])
        .gid_mappings(&[(0, 100000, 65536)]);
    c.chown_rootfs(100000, 100000);
}

#[test]
fn idmap_without_mappings_takes_the_container_user_namespace() {
    if !idmap_works_here("idmap_without_mappings_takes_the_container_user_namespace") {
        return;
    }
    let mut c = Container::new();
    user_ns(&mut c);
    let src = owned_tree(&c.host.join("src"));
    c.add_mount(bind("/idm", &src, &["bind", "idmap"]))
        .add_mount(bind("/plain", &src, &["bind"]))
        .sh("stat -c %u:%g /idm/f /idm/g /plain/f");
    let out = c.run();
    out.assert_ok();
    let overflow = fs::read_to_string("/proc/sys/kernel/overflowuid").unwrap();
    let overflow = overflow.trim();
    // Through the container's own mapping the ids read as on disk; unmapped they overflow.
    assert_eq!(
        out.lines(),
        ["1000:1000", "1001:1002", &format!("{overflow}:{overflow}")],
        "{out}"
    );
}

#[test]
fn idmap_without_mappings_takes_a_joined_user_namespace() {
    if !idmap_works_here("idmap_without_mappings_takes_a_joined_user_namespace") {
        return;
    }
    let mut owner = Container::new();
    user_ns(&mut owner);
    let pid = owner.start_idle();
    let mut c = Container::new();
    // The pid namespace too: a new one would belong to the host's user namespace, whose procfs
    // the joined one may not mount.
    c.namespace("user", Some(&format!("/proc/{pid}/ns/user")))
        .namespace("pid", Some(&format!("/proc/{pid}/ns/pid")));
    c.chown_rootfs(100000, 100000);
    let src = owned_tree(&c.host.join("src"));
    c.add_mount(bind("/idm", &src, &["bind", "idmap"]))
        .sh("stat -c %u:%g /idm/f /idm/g");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.lines(), ["1000:1000", "1001:1002"], "{out}");
}

#[test]
fn explicit_mappings_apply_inside_a_user_namespace() {
    if !idmap_works_here("explicit_mappings_apply_inside_a_user_namespace") {
        return;
    }
    let mut c = Container::new();
    user_ns(&mut c);
    let src = owned_tree(&c.host.join("src"));
    c.add_mount(with_maps(
        bind("/idm", &src, &["bind"]),
        maps(1000, 100007, 2),
        maps(1000, 100020, 3),
    ))
    .sh("stat -c %u:%g /idm/f /idm/g");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.lines(), ["7:20", "8:22"], "{out}");
}

/// A bind mount on the host, undone on drop.
struct HostBind(PathBuf);

impl HostBind {
    fn new(src: &Path, dst: &Path) -> Self {
        host_cmd(
            "/usr/bin/mount",
            &["--bind", &src.to_string_lossy(), &dst.to_string_lossy()],
        )
        .assert_ok();
        HostBind(dst.to_path_buf())
    }
}

impl Drop for HostBind {
    fn drop(&mut self) {
        let _ = host_cmd("/usr/bin/umount", &["-l", &self.0.to_string_lossy()]);
    }
}

#[test]
fn ridmap_maps_the_submounts_too_and_idmap_only_the_top() {
    if !idmap_works_here("ridmap_maps_the_submounts_too_and_idmap_only_the_top") {
        return;
    }
    let mut c = Container::new();
    let tree = owned_tree(&c.host.join("tree"));
    fs::create_dir(tree.join("sub")).unwrap();
    let other = owned_tree(&c.host.join("other"));
    let _sub = HostBind::new(&other, &tree.join("sub"));
    let (u, g) = (maps(1000, 2000, 2), maps(1000, 3000, 3));
    c.add_mount(with_maps(
        bind("/idmap", &tree, &["rbind", "idmap"]),
        u.clone(),
        g.clone(),
    ))
    .add_mount(with_maps(
        bind("/ridmap", &tree, &["rbind", "ridmap"]),
        u,
        g,
    ))
    .sh("stat -c %u:%g /idmap/f /idmap/sub/g /ridmap/f /ridmap/sub/g");
    let out = c.run();
    out.assert_ok();
    assert_eq!(
        out.lines(),
        ["2000:3000", "1001:1002", "2000:3000", "2001:3002"],
        "{out}"
    );
}

/// `mount` added as the last entry must fail `run`, naming `mounts[i]` and `want`, and leave
/// nothing behind.
#[track_caller]
fn refused(mount: Value, want: &str) {
    let mut c = Container::new();
    let i = c.config["mounts"].as_array().map_or(0, |m| m.len());
    c.add_mount(mount).sh("echo ran");
    let out = c.run_native_only();
    out.assert_fail();
    assert!(!out.stdout.contains("ran"), "the container ran:\n{out}");
    check_our_message(&out, &format!("name mounts[{i}] and {want}"), |e| {
        e.contains(&format!("mounts[{i}]")) && e.contains(want)
    });
    eprintln!("refused as expected: {}", out.stderr.trim());
    c.assert_no_debris(None);
}

#[test]
fn mappings_on_a_mount_that_is_no_bind_are_refused() {
    let m = json!({ "destination": "/t", "type": "tmpfs", "source": "tmpfs",
                    "uidMappings": maps(0, 1000, 1), "gidMappings": maps(0, 1000, 1) });
    refused(m, "bind mounts only");
}

#[test]
fn uid_mappings_without_gid_mappings_are_refused() {
    let dir = std::env::temp_dir();
    let mut m = bind("/t", &dir, &["bind"]);
    m["uidMappings"] = maps(0, 1000, 1);
    refused(m, "gidMappings");
}

#[test]
fn idmap_without_mappings_or_a_user_namespace_is_refused() {
    refused(
        bind("/t", &std::env::temp_dir(), &["bind", "idmap"]),
        "user namespace",
    );
}

/// sysfs cannot be idmapped: the kernel's EINVAL becomes an error naming the mount, and the
/// detached copy made for it goes away with the failed create.
#[test]
fn a_filesystem_that_cannot_be_idmapped_is_refused_and_leaves_no_mount() {
    refused(
        with_maps(
            bind("/t", Path::new("/sys/fs"), &["bind"]),
            maps(0, 1000, 1),
            maps(0, 1000, 1),
        ),
        "cannot idmap",
    );
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = info
        .lines()
        .filter(|l| l.contains(" - sysfs ") && l.contains("idmapped"))
        .collect();
    assert!(left.is_empty(), "an idmapped sysfs mount is left: {left:?}");
}
