//! The container's filesystem view: pivot_root, mounts and their flags,
//! masked and read-only paths, propagation, devices.

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};

/// Runs `script` after `setup`; returns (container, stdout). Panics on failure.
fn run_sh(setup: impl FnOnce(&mut Container), script: &str) -> (Container, String) {
    let mut c = Container::new();
    c.sh(script);
    setup(&mut c);
    let out = c.run();
    out.assert_ok();
    let stdout = out.stdout;
    (c, stdout)
}

/// Splits the output of a script into the part before and after a `---`
/// line.
fn split_sections(out: &str) -> Vec<&str> {
    out.split("---\n").collect()
}

/// A bind mount of host path `src` at `dest`.
fn bind(dest: &str, src: &Path, options: &[&str]) -> Value {
    json!({
        "destination": dest, "type": "bind",
        "source": src.to_string_lossy(), "options": options
    })
}

/// Creates and starts `c` and waits until it printed "started".
#[track_caller]
fn start_until_started(c: &Container) {
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
}

fn mount_at<'a>(mounts: &'a [MountInfo], mp: &str) -> &'a MountInfo {
    mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == mp)
        .unwrap_or_else(|| {
            let all: Vec<&str> = mounts.iter().map(|m| m.line.as_str()).collect();
            panic!("no mount at {mp}; mountinfo:\n{}", all.join("\n"))
        })
}

#[test]
fn pivot_root_makes_the_rootfs_the_root_and_hides_host_mounts() {
    let (c, out) = run_sh(
        |_| {},
        "cat /proc/self/mountinfo; echo ---; ls /; echo ---; \
         test -e /work && echo host-work-visible; test -e /usr && echo host-usr-visible; \
         readlink /proc/1/root",
    );
    let s = split_sections(&out);
    let mounts = parse_mountinfo(s[0]);
    let roots: Vec<&MountInfo> = mounts.iter().filter(|m| m.mount_point == "/").collect();
    assert_eq!(roots.len(), 1, "exactly one mount at / expected:\n{}", s[0]);
    let rootfs = c.rootfs.to_string_lossy();
    assert!(
        rootfs.ends_with(&roots[0].root) && roots[0].root.ends_with("/bundle/rootfs"),
        "root mount is not the rootfs {rootfs}: {}",
        roots[0].line
    );
    for m in &mounts {
        let mp = m.mount_point.as_str();
        assert!(
            mp == "/"
                || ["/proc", "/dev", "/sys"]
                    .iter()
                    .any(|p| mp == *p || mp.starts_with(&format!("{p}/"))),
            "unexpected (host?) mount in the container: {}",
            m.line
        );
    }
    let listing: Vec<&str> = s[1].lines().collect();
    assert_eq!(
        listing,
        ["bin", "dev", "etc", "home", "mnt", "proc", "root", "sys", "tmp"],
        "ls / shows more than the rootfs"
    );
    assert_eq!(s[2], "/\n");
}

#[test]
fn no_pivot_still_confines_the_process_to_the_rootfs() {
    let mut c = Container::new();
    c.sh("ls /; test -e /work && echo host-work-visible; true");
    let out = c.run_with(&["--no-pivot"]);
    out.assert_ok();
    assert_eq!(
        out.lines(),
        ["bin", "dev", "etc", "home", "mnt", "proc", "root", "sys", "tmp"],
        "{out}"
    );
}

#[test]
fn masked_paths_read_empty() {
    assert!(
        !fs::read("/proc/keys").unwrap().is_empty(),
        "precondition: the host's /proc/keys is not empty"
    );
    let (_c, out) = run_sh(
        |c| {
            fs::write(c.rootfs.join("secret.txt"), "secret\n").unwrap();
            fs::create_dir(c.rootfs.join("secretdir")).unwrap();
            fs::write(c.rootfs.join("secretdir/file"), "secret\n").unwrap();
            let masked = c.config["linux"]["maskedPaths"].as_array_mut().unwrap();
            masked.push(json!("/secret.txt"));
            masked.push(json!("/secretdir"));
            masked.push(json!("/does/not/exist"));
            c.readonly(false);
        },
        "echo keys=$(wc -c < /proc/keys); echo timer_list=$(wc -c < /proc/timer_list); \
         echo acpi=$(ls -A /proc/acpi | wc -l); echo firmware=$(ls -A /sys/firmware | wc -l); \
         echo file=$(wc -c < /secret.txt); echo dir=$(ls -A /secretdir | wc -l); \
         touch /secretdir/x 2>/dev/null && echo masked-dir-writable; \
         if [ -e /proc/kcore ]; then echo kcore=$(head -c 16 /proc/kcore | wc -c); fi; \
         echo ---; cat /proc/self/mountinfo",
    );
    let s = split_sections(&out);
    let kv: Vec<&str> = s[0].lines().collect();
    for want in [
        "keys=0",
        "timer_list=0",
        "acpi=0",
        "firmware=0",
        "file=0",
        "dir=0",
    ] {
        assert!(kv.contains(&want), "{want} expected in:\n{}", s[0]);
    }
    assert!(!s[0].contains("masked-dir-writable"), "{}", s[0]);
    if let Some(k) = kv.iter().find(|l| l.starts_with("kcore=")) {
        assert_eq!(*k, "kcore=0");
    }
    let mounts = parse_mountinfo(s[1]);
    for mp in ["/proc/keys", "/proc/acpi", "/secret.txt", "/secretdir"] {
        mount_at(&mounts, mp);
    }
    assert!(mount_at(&mounts, "/secretdir").has_option("ro"));
}

#[test]
fn readonly_paths_are_read_only() {
    let (_c, out) = run_sh(
        |c| {
            fs::create_dir(c.rootfs.join("data")).unwrap();
            c.readonly(false)
                .capabilities(&["CAP_SYS_ADMIN", "CAP_KILL"])
                .config["linux"]["readonlyPaths"]
                .as_array_mut()
                .unwrap()
                .push(json!("/data"));
        },
        "touch /data/x 2>/dev/null && echo data-writable; touch /other && echo root-writable; \
         echo new > /proc/sys/kernel/domainname 2>/dev/null && echo proc-sys-writable; \
         echo ---; cat /proc/self/mountinfo",
    );
    let s = split_sections(&out);
    assert_eq!(s[0], "root-writable\n");
    let mounts = parse_mountinfo(s[1]);
    for mp in ["/data", "/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"] {
        assert!(mount_at(&mounts, mp).has_option("ro"), "{mp} is not ro");
    }
}

#[test]
fn proc_sys_is_writable_when_not_a_readonly_path() {
    // Counterpart of the test above: with CAP_SYS_ADMIN the write works when
    // /proc/sys is not listed, so the failure above is the read-only mount.
    let (_c, out) = run_sh(
        |c| {
            c.capabilities(&["CAP_SYS_ADMIN", "CAP_KILL"])
                .set("/linux/readonlyPaths", json!([]));
        },
        "echo changed > /proc/sys/kernel/domainname && cat /proc/sys/kernel/domainname",
    );
    assert_eq!(out, "changed\n");
}

#[test]
fn sysfs_is_mounted_read_only() {
    let (_c, out) = run_sh(
        |_| {},
        "grep -q . /sys/kernel/uevent_seqnum && echo sysfs-readable; \
         echo ---; cat /proc/self/mountinfo",
    );
    let s = split_sections(&out);
    assert_eq!(s[0], "sysfs-readable\n");
    let mounts = parse_mountinfo(s[1]);
    let sys = mount_at(&mounts, "/sys");
    assert_eq!(sys.fstype, "sysfs");
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(sys.has_option(o), "/sys lacks {o}: {}", sys.line);
    }
}

/// Makes `host/prop` a *shared* host tmpfs with an empty dir `sub` and rbind-mounts it at /prop
/// in `c`; returns its path and the tmpfs (unmounted when dropped).
fn bind_shared_prop(c: &mut Container) -> (PathBuf, HostTmpfs) {
    let prop = c.host.join("prop");
    let tmpfs = HostTmpfs::shared(&prop);
    fs::create_dir(prop.join("sub")).unwrap();
    c.add_mount(bind("/prop", &prop, &["rbind"]));
    (prop, tmpfs)
}

/// Container with a bind mount at /prop of a *shared* host tmpfs at
/// `host/prop`, and optionally `linux.rootfsPropagation`. Returns the
/// container's mountinfo entries for `/` and `/prop`.
fn propagation_tags(propagation: Option<&str>) -> (MountInfo, MountInfo) {
    let mut c = Container::new();
    let _prop = bind_shared_prop(&mut c);
    c.sh("cat /proc/self/mountinfo");
    if let Some(p) = propagation {
        c.rootfs_propagation(p);
    }
    let out = c.run();
    out.assert_ok();
    let mounts = parse_mountinfo(&out.stdout);
    (
        mount_at(&mounts, "/").clone(),
        mount_at(&mounts, "/prop").clone(),
    )
}

fn is_slave(m: &MountInfo) -> bool {
    m.optional.iter().any(|t| t.starts_with("master:"))
}

#[test]
fn root_mount_is_never_shared_with_the_host() {
    for p in [None, Some("private"), Some("rprivate"), Some("rslave")] {
        let (root, _) = propagation_tags(p);
        assert!(root.optional.is_empty(), "{p:?}: {}", root.line);
    }
}

#[test]
fn default_propagation_makes_host_mounts_slaves() {
    let (_, prop) = propagation_tags(None);
    assert!(is_slave(&prop) && prop.shared().is_none(), "{}", prop.line);
}

#[test]
fn rootfs_propagation_rprivate_cuts_off_host_mounts() {
    let (_, prop) = propagation_tags(Some("rprivate"));
    assert!(prop.optional.is_empty(), "{}", prop.line);
}

#[test]
fn rootfs_propagation_rslave_makes_host_mounts_slaves() {
    let (_, prop) = propagation_tags(Some("rslave"));
    assert!(is_slave(&prop) && prop.shared().is_none(), "{}", prop.line);
}

#[test]
fn rootfs_propagation_rshared_keeps_host_mounts_shared() {
    let (_, prop) = propagation_tags(Some("rshared"));
    assert!(prop.shared().is_some(), "{}", prop.line);
}

/// `private` (unlike `rprivate`) only applies to the root mount itself.
#[test]
fn rootfs_propagation_private_is_not_recursive() {
    let (root, prop) = propagation_tags(Some("private"));
    assert!(root.optional.is_empty(), "{}", root.line);
    assert!(prop.shared().is_some(), "{}", prop.line);
}

/// Mounts the host makes below a shared bind source after the container
/// started reach the container unless propagation is private.
fn sees_host_mount_made_after_start(propagation: Option<&str>) -> bool {
    let mut c = Container::new();
    let (prop, _tmpfs) = bind_shared_prop(&mut c);
    c.sh(
        "echo started; while [ ! -e /tmp/go ]; do sleep 0.02; done; \
         cat /prop/sub/marker 2>/dev/null || echo no-marker",
    );
    if let Some(p) = propagation {
        c.rootfs_propagation(p);
    }
    start_until_started(&c);
    let _sub = HostTmpfs::new(&prop.join("sub"));
    fs::write(prop.join("sub/marker"), "marker\n").unwrap();
    fs::write(c.rootfs.join("tmp/go"), "").unwrap();
    c.wait_status("stopped", WAIT);
    let out = c.container_stdout();
    match out.as_str() {
        "started\nmarker\n" => true,
        "started\nno-marker\n" => false,
        _ => panic!("unexpected output: {out:?}"),
    }
}

#[test]
fn host_mount_events_propagate_into_the_container_by_default() {
    assert!(sees_host_mount_made_after_start(None));
}

#[test]
fn host_mount_events_do_not_reach_an_rprivate_container() {
    assert!(!sees_host_mount_made_after_start(Some("rprivate")));
}

/// With `rshared` a mount the container makes below a shared bind mount
/// appears on the host.
#[test]
fn rootfs_propagation_rshared_propagates_container_mounts_to_the_host() {
    let mut c = Container::new();
    let (prop, _tmpfs) = bind_shared_prop(&mut c);
    c.rootfs_propagation("rshared")
        .capabilities(&["CAP_SYS_ADMIN", "CAP_KILL"])
        .sh(
            "mount -t tmpfs -o size=1m from-container /prop/sub && echo mounted; \
             echo started; while [ ! -e /tmp/go ]; do sleep 0.02; done",
        );
    start_until_started(&c);
    assert!(c.container_stdout().contains("mounted"));
    let on_host = host_mounts_mentioning(&prop.join("sub"));
    fs::write(c.rootfs.join("tmp/go"), "").unwrap();
    c.wait_status("stopped", WAIT);
    let _ = host_cmd(
        "/usr/bin/umount",
        &["-l", &prop.join("sub").to_string_lossy()],
    );
    assert!(
        on_host.iter().any(|l| l.contains("from-container")),
        "container mount did not reach the host: {on_host:?}"
    );
}

#[test]
fn root_readonly_rejects_writes() {
    let (c, out) = run_sh(
        |c| {
            c.readonly(true);
        },
        "touch /x 2>/dev/null && echo wrote; echo ---; cat /proc/self/mountinfo",
    );
    let s = split_sections(&out);
    assert_eq!(s[0], "");
    assert!(mount_at(&parse_mountinfo(s[1]), "/").has_option("ro"));
    assert!(!c.rootfs.join("x").exists());
}

#[test]
fn root_not_readonly_accepts_writes() {
    let (c, out) = run_sh(
        |c| {
            c.readonly(false);
        },
        "echo data > /x && echo wrote; echo ---; cat /proc/self/mountinfo",
    );
    let s = split_sections(&out);
    assert_eq!(s[0], "wrote\n");
    assert!(mount_at(&parse_mountinfo(s[1]), "/").has_option("rw"));
    assert_eq!(fs::read_to_string(c.rootfs.join("x")).unwrap(), "data\n");
}

#[test]
fn bind_mount_with_ro_is_visible_and_read_only() {
    let mut c = Container::new();
    let src = c.host.join("data");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("hello"), "hello from host\n").unwrap();
    c.add_mount(bind("/data", &src, &["bind", "ro"]))
        .readonly(false)
        .sh(
            "cat /data/hello; touch /data/new 2>/dev/null && echo wrote; \
             echo ---; cat /proc/self/mountinfo",
        );
    let out = c.run();
    out.assert_ok();
    let s = split_sections(&out.stdout);
    assert_eq!(s[0], "hello from host\n");
    let m = mount_at(&parse_mountinfo(s[1]), "/data").clone();
    assert!(m.has_option("ro"), "{}", m.line);
    assert!(!src.join("new").exists());
    // The mountpoint was created in the rootfs.
    assert!(c.rootfs.join("data").is_dir());
}

#[test]
fn bind_mount_rw_writes_reach_the_host() {
    let mut c = Container::new();
    let src = c.host.join("data");
    fs::create_dir(&src).unwrap();
    c.add_mount(bind("/mnt/data", &src, &["rbind", "rw"]))
        .sh("echo from-container > /mnt/data/new");
    c.run().assert_ok();
    assert_eq!(
        fs::read_to_string(src.join("new")).unwrap(),
        "from-container\n"
    );
}

#[test]
fn bind_mount_of_a_file() {
    let mut c = Container::new();
    let src = c.host.join("hosts");
    fs::write(&src, "127.0.0.1 bound\n").unwrap();
    c.add_mount(bind("/etc/hosts", &src, &["bind", "ro"]))
        .sh("cat /etc/hosts");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "127.0.0.1 bound\n");
    assert!(
        c.rootfs.join("etc/hosts").is_file(),
        "file mountpoint not created"
    );
}

#[test]
fn tmpfs_with_nosuid_nodev_noexec_has_those_flags() {
    let (c, out) = run_sh(
        |c| {
            c.add_mount(json!({
                "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "noexec", "mode=700", "size=1m"]
            }));
        },
        "stat -c %a /scratch; cat /bin/busybox > /scratch/bb; chmod 755 /scratch/bb; \
         /scratch/bb true 2>/dev/null; echo exec-rc=$?; \
         echo ---; cat /proc/self/mountinfo",
    );
    let s = split_sections(&out);
    assert_eq!(s[0], "700\nexec-rc=126\n");
    let m = mount_at(&parse_mountinfo(s[1]), "/scratch").clone();
    assert_eq!(m.fstype, "tmpfs");
    for o in ["rw", "nosuid", "nodev", "noexec"] {
        assert!(m.has_option(o), "/scratch lacks {o}: {}", m.line);
    }
    assert!(
        m.super_options.iter().any(|o| o == "size=1024k"),
        "{}",
        m.line
    );
    // Nothing of the tmpfs is on the host.
    assert!(!c.rootfs.join("scratch/true").exists());
}

#[test]
fn tmpfs_without_flags_allows_exec() {
    let (_c, out) = run_sh(
        |c| {
            c.add_mount(json!({
                "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                "options": ["size=4m"]
            }));
        },
        "cat /bin/busybox > /scratch/true; chmod 755 /scratch/true; /scratch/true; echo exec-rc=$?",
    );
    assert_eq!(out, "exec-rc=0\n");
}

fn tree_with_submount(c: &Container) -> HostTmpfs {
    let tree = c.host.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("top"), "").unwrap();
    let sub = HostTmpfs::new(&tree.join("sub"));
    fs::write(tree.join("sub/marker"), "in submount\n").unwrap();
    sub
}

/// Runs `script` with the tree of [`tree_with_submount`] bound at /tree with `option`; its stdout.
fn run_with_tree_bound(option: &str, script: &str) -> String {
    let mut c = Container::new();
    let _sub = tree_with_submount(&c);
    c.add_mount(bind("/tree", &c.host.join("tree"), &[option]))
        .sh(script);
    let out = c.run();
    out.assert_ok();
    out.stdout
}

#[test]
fn rbind_mount_is_recursive() {
    let out = run_with_tree_bound("rbind", "ls /tree; cat /tree/sub/marker");
    assert_eq!(out, "sub\ntop\nin submount\n");
}

#[test]
fn bind_mount_without_r_is_not_recursive() {
    let out = run_with_tree_bound("bind", "ls /tree; ls -A /tree/sub | wc -l");
    assert_eq!(out, "sub\ntop\n0\n");
}

#[test]
fn mounts_are_not_visible_on_the_host() {
    let mut c = Container::new();
    let src = c.host.join("data");
    fs::create_dir(&src).unwrap();
    c.add_mount(bind("/data", &src, &["rbind"]))
        .add_mount(json!({
            "destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": []
        }))
        .sh("echo started; sleep 100");
    start_until_started(&c);
    let leaked = c.host_mounts();
    assert!(
        leaked.is_empty(),
        "container mounts on the host:\n{}",
        leaked.join("\n")
    );
    assert!(host_mounts_mentioning(&src).is_empty());
}

const DEFAULT_CHAR_DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

#[test]
fn default_devices_exist_and_work() {
    let (_c, out) = run_sh(
        |_| {},
        "for d in null zero full random urandom tty; do stat -c '%n %F %t %T %a %u %g' /dev/$d; done; \
         echo ---; for l in fd stdin stdout stderr ptmx; do echo \"$l -> $(readlink /dev/$l)\"; done; \
         echo ---; echo x > /dev/null && echo null-ok; echo zero=$(head -c 4 /dev/zero | wc -c); \
         echo urandom=$(head -c 4 /dev/urandom | wc -c); echo x 2>/dev/null > /dev/full || echo full-enospc; \
         echo ---; cat /proc/self/mountinfo",
    );
    let s = split_sections(&out);
    let want: Vec<String> = DEFAULT_CHAR_DEVICES
        .iter()
        .map(|(n, ma, mi)| format!("/dev/{n} character special file {ma:x} {mi:x} 666 0 0"))
        .collect();
    assert_eq!(s[0].lines().collect::<Vec<_>>(), want);
    assert_eq!(
        s[1],
        "fd -> /proc/self/fd\nstdin -> /proc/self/fd/0\nstdout -> /proc/self/fd/1\n\
         stderr -> /proc/self/fd/2\nptmx -> pts/ptmx\n"
    );
    assert_eq!(s[2], "null-ok\nzero=4\nurandom=4\nfull-enospc\n");
    let mounts = parse_mountinfo(s[3]);
    for (mp, fstype) in [
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
    ] {
        assert_eq!(mount_at(&mounts, mp).fstype, fstype, "{mp}");
    }
}

#[test]
fn linux_devices_are_created_with_type_numbers_mode_and_owner() {
    let (_c, out) = run_sh(
        |c| {
            c.add_device(json!({
                "path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                "fileMode": 0o666, "uid": 0, "gid": 0
            }))
            .add_device(json!({
                "path": "/dev/sub/myzero", "type": "c", "major": 1, "minor": 5,
                "fileMode": 0o640, "uid": 1000, "gid": 1000
            }))
            .add_device(json!({
                "path": "/dev/myfifo", "type": "p", "fileMode": 0o600
            }));
        },
        "stat -c '%n %F %t %T %a %u %g' /dev/mynull /dev/sub/myzero /dev/myfifo",
    );
    assert_eq!(
        out,
        "/dev/mynull character special file 1 3 666 0 0\n\
         /dev/sub/myzero character special file 1 5 640 1000 1000\n\
         /dev/myfifo fifo 0 0 600 0 0\n"
    );
}

#[test]
fn linux_devices_can_be_used_when_the_cgroup_allows_them() {
    let (_c, out) = run_sh(
        |c| {
            c.add_device(json!({
                "path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                "fileMode": 0o666, "uid": 0, "gid": 0
            }))
            .set(
                "/linux/resources/devices",
                json!([
                    { "allow": false, "access": "rwm" },
                    { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" }
                ]),
            );
        },
        "echo x > /dev/mynull && echo write-ok",
    );
    assert_eq!(out, "write-ok\n");
}

/// `tmpcopyup` (podman's --read-only adds it): the tmpfs starts with a copy of what it covers,
/// modes included, and is writable while the root is not.
#[test]
fn tmpcopyup_fills_a_tmpfs_with_what_it_covers() {
    if skip_unless_ours() {
        return; // runc 1.1 has it too, but the check of the copy's mode is ours
    }
    let (_, out) = run_sh(
        |c| {
            c.readonly(true).add_mount(json!({
                "destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                "options": ["rw", "nosuid", "nodev", "tmpcopyup"]
            }));
        },
        "grep -c root /etc/passwd; stat -c '%a' /etc/passwd; touch /etc/new && echo writable; \
         touch /x 2>/dev/null || echo root-ro; grep ' /etc ' /proc/self/mountinfo | grep -c tmpfs",
    );
    assert_eq!(out, "1\n644\nwritable\nroot-ro\n1\n");
}
