//! The `zfspool` storage with real ZFS and real containers: each test makes its own pool on a
//! sparse file vdev (`zpool create -m <dir>`), a parent dataset standing in for `rpool/data`,
//! and a temp dir standing in for /etc/pve. Datasets are read back with the `zfs` command, the
//! way an administrator would see them.
//!
//! ZFS needs the zfs kernel module: this machine's kernel has none, so these tests run in the
//! Debian guest (`scripts/test-guest zfs`, which builds the module with scripts/zfs-setup and
//! loads it; there LXCRI_TEST_REQUIRE_ZFS turns a missing ZFS into a failure). Elsewhere, without
//! /dev/zfs, each of them says SKIP loudly and returns; the test of the error a host without the
//! module gets runs there instead.

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FIRST_VMID: u32 = 100_000;
const ZFS: &str = "/sbin/zfs";
const ZPOOL: &str = "/sbin/zpool";

/// A throw-away pool with a parent dataset `<pool>/data`, and the stand-in Proxmox node whose
/// runtime config names it as storage `local-zfs`. Destroyed on drop.
struct Node {
    pool: String,
    parent: String,
    base: PathBuf,
    mnt: PathBuf,
    lxc: PathBuf,
    lock: PathBuf,
    config: PathBuf,
}

/// The ZFS fixture, or None (after a loud SKIP line) where ZFS cannot run.
fn node(test: &str) -> Option<Node> {
    if !is_ours() {
        eprintln!("skipped {test}: the zfspool storage is proxmox-lxcri's own feature");
        return None;
    }
    if !Path::new("/dev/zfs").exists() || !Path::new(ZPOOL).exists() {
        assert!(
            std::env::var_os("LXCRI_TEST_REQUIRE_ZFS").is_none(),
            "{test}: LXCRI_TEST_REQUIRE_ZFS is set (scripts/test-guest) but /dev/zfs or {ZPOOL} \
             is missing"
        );
        eprintln!(
            "\n*** SKIP {test}: no ZFS here (/dev/zfs or {ZPOOL} missing). These tests run in \
             the guest: scripts/test-guest zfs ***\n"
        );
        return None;
    }
    clean_stale();
    let suffix = unique_suffix();
    let base = Path::new(TMP_BASE).join(format!("{suffix}-zfs"));
    let mnt = base.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let vdev = base.join("vdev");
    // Sparse: only what is written takes memory (the guest's /tmp is a tmpfs).
    fs::File::create(&vdev).unwrap().set_len(3 << 30).unwrap();
    let pool = format!("lxcri-t{}", suffix.replace('-', "x"));
    let node = Node {
        parent: format!("{pool}/data"),
        pool,
        lxc: base.join("pve/lxc"),
        lock: base.join("lock"),
        config: base.join("config.json"),
        mnt,
        base,
    };
    zfs_cmd(
        ZPOOL,
        &[
            "create",
            "-o",
            "cachefile=none",
            // Zeros must take space: the quota test writes them.
            "-O",
            "compression=off",
            "-m",
            &node.mnt.to_string_lossy(),
            &node.pool,
            &vdev.to_string_lossy(),
        ],
    );
    zfs_cmd(ZFS, &["create", &node.parent]);
    fs::create_dir_all(&node.lxc).unwrap();
    node.write_config(json!({}));
    Some(node)
}

#[track_caller]
fn zfs_cmd(program: &str, args: &[&str]) -> String {
    let out = host_cmd(program, args);
    assert!(out.ok(), "{program} {args:?}:\n{out}");
    out.stdout
}

impl Node {
    fn write_config(&self, extra: Value) {
        let mut proxmox = json!({
            "enabled": true,
            "config_dir": self.lxc,
            "lock_dir": self.lock,
            "lxcpath": self.lock.join("lxcpath"),
            "storage": {"id": "local-zfs", "type": "zfspool", "pool": self.parent},
        });
        for (k, v) in extra.as_object().unwrap() {
            proxmox[k] = v.clone();
        }
        fs::write(
            &self.config,
            serde_json::to_string_pretty(&json!({ "proxmox": proxmox })).unwrap(),
        )
        .unwrap();
    }

    #[track_caller]
    fn create(&self, c: &Container, env: &[(&str, &str)]) -> Out {
        let opts = ExecOpts {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        c.create_opts(&["--config", &self.config.to_string_lossy()], &opts)
    }

    fn dataset(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.parent)
    }

    /// `zfs get -Hp -o value PROP DATASET`.
    #[track_caller]
    fn get(&self, prop: &str, dataset: &str) -> String {
        zfs_cmd(ZFS, &["get", "-Hp", "-o", "value", prop, dataset])
            .trim()
            .to_string()
    }

    /// Every dataset and snapshot below the parent (not the parent itself).
    fn datasets(&self) -> Vec<String> {
        let out = zfs_cmd(
            ZFS,
            &["list", "-H", "-o", "name", "-t", "all", "-r", &self.parent],
        );
        out.lines()
            .filter(|l| *l != self.parent)
            .map(str::to_string)
            .collect()
    }

    fn templates(&self) -> Vec<String> {
        self.datasets()
            .into_iter()
            .filter(|d| d.contains("/basevol-lxcri-") && !d.contains('@'))
            .collect()
    }

    fn vmids(&self) -> Vec<String> {
        sorted_names(&self.lxc)
    }

    fn lock_is_free(&self, vmid: u32) -> bool {
        pct_lock_is_free(&self.lock, vmid)
    }

    /// No dataset, snapshot, mount point, config or held lock is left.
    #[track_caller]
    fn assert_empty(&self) {
        assert_eq!(self.datasets(), Vec::<String>::new(), "datasets are left");
        assert_eq!(self.vmids(), Vec::<String>::new(), "configs are left");
        let dirs: Vec<_> = fs::read_dir(self.mnt.join("data"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(dirs.is_empty(), "mount points are left: {dirs:?}");
        assert!(self.lock_is_free(FIRST_VMID), "the vmid lock is still held");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Containers are dropped (deleted) first: they are declared after their node.
        let _ = host_cmd(ZPOOL, &["destroy", "-f", &self.pool]);
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn annotate(c: &mut Container, pairs: &[(&str, &str)]) {
    let map: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    c.set("/annotations", Value::Object(map));
}

fn record_dataset(c: &Container) -> String {
    let text = fs::read_to_string(c.state_dir().join("state.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["proxmox"]["volume"]["dataset"]
        .as_str()
        .unwrap_or_else(|| panic!("no dataset in the state: {v}"))
        .to_string()
}

#[test]
fn a_container_gets_a_proxmox_subvol_with_its_properties_and_a_quota_it_cannot_pass() {
    let Some(node) = node("a_container_gets_a_proxmox_subvol...") else {
        return;
    };
    let mut c = Container::new();
    // 1 GiB is the smallest size the config takes; write past it.
    annotate(
        &mut c,
        &[
            ("io.proxmox.lxcri.size", "1"),
            ("io.proxmox.lxcri.clone", "false"),
        ],
    );
    c.readonly(false).sh(
        "cat /etc/passwd >/dev/null && dd if=/dev/zero of=/big bs=1M count=1100 2>&1; \
         echo dd-exit=$?",
    );
    node.create(&c, &[]).assert_ok();

    let ds = node.dataset(&format!("subvol-{FIRST_VMID}-disk-0"));
    assert_eq!(record_dataset(&c), ds);
    assert_eq!(node.get("type", &ds), "filesystem");
    assert_eq!(node.get("acltype", &ds), "posix");
    assert_eq!(node.get("xattr", &ds), "sa");
    assert_eq!(node.get("refquota", &ds), (1u64 << 30).to_string());
    assert_eq!(node.get("origin", &ds), "-", "a copy, not a clone");
    assert_eq!(node.get("mounted", &ds), "yes");
    let mountpoint = node.mnt.join(format!("data/subvol-{FIRST_VMID}-disk-0"));
    assert_eq!(node.get("mountpoint", &ds), mountpoint.to_string_lossy());
    assert!(
        mountpoint.join("bin/busybox").exists(),
        "the rootfs is copied in"
    );
    let conf = fs::read_to_string(node.lxc.join(format!("{FIRST_VMID}.conf"))).unwrap();
    assert!(
        conf.lines()
            .any(|l| l == format!("rootfs: local-zfs:subvol-{FIRST_VMID}-disk-0,size=1G")),
        "{conf}"
    );

    c.start().assert_ok();
    c.wait_status("stopped", Duration::from_secs(600));
    let out = c.container_stdout();
    assert!(out.contains("Disk quota exceeded"), "{out}");
    assert!(!out.contains("dd-exit=0"), "{out}");
    let used: u64 = node.get("referenced", &ds).parse().unwrap();
    assert!(
        used <= (1 << 30) + (16 << 20),
        "referenced {used} > refquota"
    );

    c.delete().assert_ok();
    c.assert_no_debris(None);
    node.assert_empty();
}

#[test]
fn a_size_of_zero_sets_no_quota_and_keep_leaves_the_dataset() {
    let Some(node) = node("a_size_of_zero_sets_no_quota_and_keep_leaves_the_dataset") else {
        return;
    };
    node.write_config(json!({"keep": true, "default_disk_size_gib": 0}));
    let mut c = Container::new();
    annotate(&mut c, &[("io.proxmox.lxcri.clone", "false")]);
    node.create(&c, &[]).assert_ok();
    let ds = node.dataset(&format!("subvol-{FIRST_VMID}-disk-0"));
    assert_eq!(node.get("refquota", &ds), "0");
    c.delete().assert_ok();
    c.assert_no_debris(None);
    assert_eq!(
        node.datasets(),
        std::slice::from_ref(&ds),
        "keep leaves the dataset"
    );
    assert_eq!(node.vmids(), [format!("{FIRST_VMID}.conf")]);
    assert!(node.lock_is_free(FIRST_VMID));
    assert_eq!(node.get("mounted", &ds), "yes");
}

#[test]
fn clones_of_one_template_per_content_run_side_by_side_and_outlive_each_other() {
    let Some(node) = node("clones_of_one_template_per_content...") else {
        return;
    };
    let mut first = Container::new();
    fs::write(first.rootfs.join("etc/motd"), "from the image\n").unwrap();
    first
        .readonly(false)
        .sh("cat /etc/motd; echo first > /mine; ls /");
    node.create(&first, &[]).assert_ok();
    let ds1 = record_dataset(&first);
    let templates = node.templates();
    assert_eq!(templates.len(), 1, "{:?}", node.datasets());
    let snap = format!("{}@__base__", templates[0]);
    assert_eq!(node.get("origin", &ds1), snap);
    assert_eq!(node.get("canmount", &templates[0]), "noauto");
    assert_eq!(node.get("acltype", &ds1), "posix");
    assert_eq!(node.get("xattr", &ds1), "sa");
    assert_eq!(node.get("refquota", &ds1), (8u64 << 30).to_string());

    // The same files on disk (a second bundle whose root is the first one's rootfs, as two
    // containers of one image share its unpacked layers): a clone of the same snapshot.
    let mut second = Container::new();
    second
        .set("/root/path", json!(first.rootfs))
        .readonly(false)
        .sh("cat /etc/motd; ls /mine 2>&1; echo second > /mine2");
    node.create(&second, &[]).assert_ok();
    let ds2 = record_dataset(&second);
    assert_ne!(ds1, ds2);
    assert_eq!(node.get("origin", &ds2), snap);
    assert_eq!(node.templates(), templates, "no second template");
    assert_eq!(node.get("clones", &snap).split(',').count(), 2);

    // Equal-looking files elsewhere, no digest: never taken for the same content.
    let other = Container::new();
    fs::write(other.rootfs.join("etc/motd"), "from the image\n").unwrap();
    node.create(&other, &[]).assert_ok();
    assert_eq!(node.templates().len(), 2);
    assert_ne!(node.get("origin", &record_dataset(&other)), snap);

    first.start().assert_ok();
    first.wait_status("stopped", Duration::from_secs(60));
    let out = first.container_stdout();
    assert!(
        out.starts_with("from the image\n") && out.contains("mine"),
        "{out}"
    );
    // Deleting the first clone leaves the template and the second clone working.
    first.delete().assert_ok();
    assert!(!node.datasets().contains(&ds1));
    assert!(node.datasets().contains(&snap));
    second.start().assert_ok();
    second.wait_status("stopped", Duration::from_secs(60));
    let out = second.container_stdout();
    assert!(out.starts_with("from the image\n"), "{out}");
    assert!(
        out.contains("No such file"),
        "the first clone's write leaked: {out}"
    );
    second.delete().assert_ok();
    other.delete().assert_ok();
    // Templates are a cache: delete never destroys them.
    assert_eq!(node.templates().len(), 2);
    assert!(node.vmids().is_empty());
}

#[test]
fn an_image_digest_shares_a_template_across_unpackings_of_the_same_tree() {
    let Some(node) = node("an_image_digest_shares_a_template...") else {
        return;
    };
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut a = Container::new();
    let mut b = Container::new();
    // Two unpackings of one image: same metadata, different inodes.
    host_cmd(
        "/usr/bin/cp",
        &[
            "-a",
            "--remove-destination",
            "-T",
            &a.rootfs.to_string_lossy(),
            &b.rootfs.to_string_lossy(),
        ],
    )
    .assert_ok();
    annotate(&mut a, &[("io.kubernetes.cri-o.ImageRef", digest)]);
    annotate(&mut b, &[("io.proxmox.lxcri.image-digest", digest)]);
    node.create(&a, &[]).assert_ok();
    node.create(&b, &[]).assert_ok();
    let origin = node.get("origin", &record_dataset(&a));
    assert_ne!(origin, "-");
    assert_eq!(node.get("origin", &record_dataset(&b)), origin);
    // Another digest over the same tree is another content.
    let mut c = Container::new();
    c.set("/root/path", json!(a.rootfs));
    annotate(&mut c, &[("io.proxmox.lxcri.image-digest", "sha256:other")]);
    node.create(&c, &[]).assert_ok();
    assert_ne!(node.get("origin", &record_dataset(&c)), origin);
    assert_eq!(node.templates().len(), 2);
}

#[test]
fn a_failure_after_any_step_of_create_leaves_no_dataset_config_or_lock() {
    let Some(node) = node("a_failure_after_any_step_of_create...") else {
        return;
    };
    for (clone, steps) in [
        (
            "true",
            &["vmid", "template", "volume", "copy", "config", "created"][..],
        ),
        (
            "false",
            &["vmid", "volume", "copy", "config", "created"][..],
        ),
    ] {
        for step in steps {
            let mut c = Container::new();
            annotate(&mut c, &[("io.proxmox.lxcri.clone", clone)]);
            let out = node.create(&c, &[("PROXMOX_LXCRI_FAIL_AT", step)]);
            assert!(
                !out.ok(),
                "create succeeded despite PROXMOX_LXCRI_FAIL_AT={step} (clone={clone}): a \
                 release build? (fail points exist only in debug builds)\n{out}"
            );
            assert!(
                out.stderr
                    .contains(&format!("injected failure after step {step:?}")),
                "{out}"
            );
            c.assert_no_debris(None);
            node.assert_empty();
        }
    }
    // A template that already had a clone stays when a later clone's create fails.
    let keep = Container::new();
    node.create(&keep, &[]).assert_ok();
    let mut c = Container::new();
    c.set("/root/path", json!(keep.rootfs));
    node.create(&c, &[("PROXMOX_LXCRI_FAIL_AT", "config")])
        .assert_fail();
    assert_eq!(node.templates().len(), 1);
    keep.delete().assert_ok();
}

/// A node's runtime config in a scratch dir (no pool behind it): pct configs in `<base>/pve/lxc`,
/// `storage` made from the base dir. Returns the base, the config dir and the config file.
fn scratch_node(name: &str, storage: impl FnOnce(&Path) -> Value) -> (PathBuf, PathBuf, PathBuf) {
    let base = Path::new(TMP_BASE).join(format!("{}-{name}", unique_suffix()));
    let lxc = base.join("pve/lxc");
    fs::create_dir_all(&lxc).unwrap();
    let config = base.join("config.json");
    let doc = json!({"proxmox": {"enabled": true, "config_dir": lxc, "lock_dir": base.join("lock"),
        "lxcpath": base.join("lxcpath"), "storage": storage(&base)}});
    fs::write(&config, doc.to_string()).unwrap();
    (base, lxc, config)
}

#[test]
fn without_the_zfs_module_only_zfs_storage_fails_and_says_why() {
    if !is_ours() {
        return;
    }
    if Path::new("/dev/zfs").exists() {
        eprintln!(
            "\n*** SKIP without_the_zfs_module...: /dev/zfs exists here; this runs on hosts \
             without the zfs module (the CI host) ***\n"
        );
        return;
    }
    let (base, lxc, config) = scratch_node("nozfs", |base| {
        json!([
            {"id": "local-zfs", "type": "zfspool", "pool": "rpool/data"},
            {"id": "local", "type": "dir", "path": base}])
    });
    let arg = config.to_string_lossy().into_owned();
    let c = Container::new();
    let out = c.create_opts(&["--config", &arg], &ExecOpts::default());
    out.assert_fail();
    assert!(
        out.stderr.contains("storage \"local-zfs\" (zfspool): ")
            && (out.stderr.contains("/dev/zfs") || out.stderr.contains("libzfs_core.so.3")),
        "{out}"
    );
    c.assert_no_debris(None);
    assert_eq!(fs::read_dir(&lxc).unwrap().count(), 0, "a config is left");
    // The same node's dir storage works: ZFS is needed only where it is used.
    let mut d = Container::new();
    d.set("/annotations", json!({"io.proxmox.lxcri.storage": "local"}))
        .sh("echo ok");
    let out = d.run_with(&["--config", &arg]);
    out.assert_ok();
    assert_eq!(out.stdout, "ok\n");
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn without_libzfs_core_only_zfs_storage_fails_and_names_the_library() {
    if !is_ours() {
        return;
    }
    let (base, lxc, config) = scratch_node(
        "nolib",
        |_| json!({"id": "local-zfs", "type": "zfspool", "pool": "rpool/data"}),
    );
    let c = Container::new();
    // Debug builds load the library by this name instead: one that exists nowhere.
    let opts = ExecOpts {
        env: vec![(
            "PROXMOX_LXCRI_TEST_LIBZFS_CORE".into(),
            "libzfs_core-lxcri-absent.so.3".into(),
        )],
        ..Default::default()
    };
    let out = c.create_opts(&["--config", &config.to_string_lossy()], &opts);
    out.assert_fail();
    assert!(
        out.stderr
            .contains("storage \"local-zfs\" (zfspool): cannot load libzfs_core-lxcri-absent.so.3")
            && out.stderr.contains("install libzfs4linux"),
        "{out}"
    );
    c.assert_no_debris(None);
    assert_eq!(fs::read_dir(&lxc).unwrap().count(), 0, "a config is left");
    // A container that opts out of Proxmox visibility never loads it.
    let mut d = Container::new();
    d.set("/annotations", json!({"io.proxmox.lxcri.enabled": "false"}));
    d.create_opts(&["--config", &config.to_string_lossy()], &opts)
        .assert_ok();
    d.delete().assert_ok();
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn concurrent_creates_from_one_content_fill_one_template() {
    let Some(node) = node("concurrent_creates_from_one_content_fill_one_template") else {
        return;
    };
    let image = Container::new();
    let containers: Vec<Container> = (0..3)
        .map(|_| {
            let mut c = Container::new();
            c.set("/root/path", json!(image.rootfs));
            c
        })
        .collect();
    let config = node.config.to_string_lossy().into_owned();
    let running: Vec<Running> = containers
        .iter()
        .map(|c| {
            c.write_config();
            let args = [
                "--root",
                &c.root.to_string_lossy(),
                "create",
                "--config",
                &config,
                "--bundle",
                &c.bundle.to_string_lossy(),
                &c.id,
            ]
            .map(String::from);
            spawn(&c.runtime, &args, &c.io, &ExecOpts::default())
        })
        .collect();
    for r in running {
        r.wait(Duration::from_secs(300)).assert_ok();
    }
    let templates = node.templates();
    assert_eq!(templates.len(), 1, "{:?}", node.datasets());
    let snap = format!("{}@__base__", templates[0]);
    let mut datasets: Vec<String> = containers.iter().map(record_dataset).collect();
    for ds in &datasets {
        assert_eq!(node.get("origin", ds), snap);
    }
    datasets.sort();
    datasets.dedup();
    assert_eq!(datasets.len(), 3);
    for c in &containers {
        c.delete().assert_ok();
    }
    assert!(node.vmids().is_empty());
}
