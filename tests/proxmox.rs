//! Proxmox visibility with real containers: a temp dir stands in for /etc/pve (through
//! `--config`), volumes live on a `dir` storage in another temp dir. Checks the pct config key by
//! key, vmid allocation against existing guests and concurrent creates, the annotations, and
//! that a failure injected after every step of create leaves nothing behind.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FIRST_VMID: u32 = 100_000;

/// A stand-in Proxmox node: `pve/lxc`, `pve/qemu-server`, a `dir` storage, a lock dir and
/// the runtime config pointing at them. Removed on drop.
struct Pve {
    base: PathBuf,
    lxc: PathBuf,
    qemu: PathBuf,
    store: PathBuf,
    lock: PathBuf,
    config: PathBuf,
}

impl Pve {
    fn new() -> Self {
        clean_stale();
        let base = Path::new(TMP_BASE).join(format!("{}-pve", unique_suffix()));
        let p = Pve {
            lxc: base.join("pve/lxc"),
            qemu: base.join("pve/qemu-server"),
            store: base.join("store"),
            lock: base.join("lock"),
            config: base.join("config.json"),
            base,
        };
        for d in [&p.lxc, &p.qemu, &p.store] {
            fs::create_dir_all(d).unwrap();
        }
        p.write_config(json!({}));
        p
    }

    /// The runtime config: Proxmox enabled on the dir storage, `extra` merged into `proxmox`.
    fn write_config(&self, extra: Value) {
        let mut proxmox = json!({
            "enabled": true,
            "config_dir": self.lxc,
            "lock_dir": self.lock,
            // The LXC command socket is host-wide: each test's "node" has its own lxcpath.
            "lxcpath": self.lock.join("lxcpath"),
            "storage": {"id": "local", "type": "dir", "path": self.store},
        });
        for (k, v) in extra.as_object().unwrap() {
            proxmox[k] = v.clone();
        }
        self.write_raw(&json!({ "proxmox": proxmox }));
    }

    fn write_raw(&self, v: &Value) {
        fs::write(&self.config, serde_json::to_string_pretty(v).unwrap()).unwrap();
    }

    fn arg(&self) -> String {
        self.config.to_string_lossy().into_owned()
    }

    /// `create --config <ours>` of `c`, with optional extra environment.
    #[track_caller]
    fn create(&self, c: &Container, env: &[(&str, &str)]) -> Out {
        let opts = ExecOpts {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        c.create_opts(&["--config", &self.arg()], &opts)
    }

    fn conf_path(&self, vmid: u32) -> PathBuf {
        self.lxc.join(format!("{vmid}.conf"))
    }

    /// The vmids that have a config file.
    fn vmids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = fs::read_dir(&self.lxc)
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".conf")?.parse().ok())
            .collect();
        v.sort();
        v
    }

    /// Everything under the storage's images/ dir.
    fn images(&self) -> Vec<String> {
        sorted_names(&self.store.join("images"))
    }

    fn lock_is_free(&self, vmid: u32) -> bool {
        pct_lock_is_free(&self.lock, vmid)
    }

    /// Asserts that no config, volume or held lock is left.
    #[track_caller]
    fn assert_empty(&self) {
        assert_eq!(self.vmids(), Vec::<u32>::new(), "pct configs are left");
        let tmp: Vec<_> = fs::read_dir(&self.lxc).unwrap().flatten().collect();
        assert!(
            tmp.is_empty(),
            "files are left in {}: {tmp:?}",
            self.lxc.display()
        );
        assert_eq!(self.images(), Vec::<String>::new(), "volumes are left");
        assert!(self.lock_is_free(FIRST_VMID), "the vmid lock is still held");
    }
}

impl Drop for Pve {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A parsed pct config: description lines and `key: value` pairs of the main section.
struct Conf {
    text: String,
    description: Vec<String>,
    keys: BTreeMap<String, String>,
}

/// Reads a pct config and checks every line against the rules pve-container parses by
/// (PVE::LXC::Config::parse_pct_config), independently of the runtime's own parser.
#[track_caller]
fn read_conf(path: &Path) -> Conf {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut description = Vec::new();
    let mut keys = BTreeMap::new();
    let mut order = Vec::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix('#') {
            assert!(keys.is_empty(), "comment after keys: {line:?}\n{text}");
            assert!(
                !d.contains(':') && d.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "description line not escaped like PVE::Tools::encode_text: {line:?}"
            );
            description.push(d.replace("%3A", ":"));
            continue;
        }
        let (k, v) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("not a `key: value` line: {line:?}\n{text}"));
        assert!(
            k.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && k.trim_end_matches(|c: char| c.is_ascii_digit())
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
            "key {k:?} does not match [a-z][a-z_]*\\d*"
        );
        assert!(!v.is_empty() && v.trim() == v, "bad value {v:?}");
        order.push(k.to_string());
        keys.insert(k.to_string(), v.to_string());
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order, sorted,
        "keys are not sorted as Proxmox writes them:\n{text}"
    );
    Conf {
        text,
        description,
        keys,
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("test does not know the Proxmox name of {other}"),
    }
}

fn state_file(c: &Container) -> Value {
    let text = fs::read_to_string(c.state_dir().join("state.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Tests here check the runtime's own Proxmox support; runc has none.
fn skip() -> bool {
    if is_ours() {
        return false;
    }
    eprintln!(
        "skipped: Proxmox visibility is proxmox-lxcri's own feature; runtime under test is {}",
        runtime().display()
    );
    true
}

#[test]
fn the_pct_config_describes_the_container_key_by_key() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    let mut c = Container::new();
    fs::write(c.rootfs.join("etc/os-release"), "NAME=Debian\nID=debian\n").unwrap();
    c.hostname("web01")
        .readonly(false)
        .set(
            "/linux/resources/memory",
            json!({"limit": 256 << 20, "swap": 384 << 20}),
        )
        .set(
            "/linux/resources/cpu",
            json!({"quota": 150000, "period": 100000, "shares": 2048}),
        )
        .set(
            "/annotations",
            json!({"io.proxmox.lxcri.net0": "name=eth0,bridge=vmbr0,ip=dhcp"}),
        )
        .sh("echo from-the-volume > /marker; cat /etc/os-release");
    pve.create(&c, &[]).assert_ok();

    assert_eq!(pve.vmids(), [FIRST_VMID]);
    let conf = read_conf(&pve.conf_path(FIRST_VMID));
    let volid = format!("local:{FIRST_VMID}/subvol-{FIRST_VMID}-disk-0.subvol");
    let want: BTreeMap<String, String> = [
        ("arch", host_arch().to_string()),
        ("cpulimit", "1.5".into()),
        ("cpuunits", "2048".into()),
        ("hostname", "web01".into()),
        ("memory", "256".into()),
        ("net0", "name=eth0,bridge=vmbr0,ip=dhcp".into()),
        ("ostype", "debian".into()),
        ("rootfs", format!("{volid},size=0T")),
        ("swap", "128".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(conf.keys, want, "config:\n{}", conf.text);
    assert!(
        conf.description[0].starts_with(&format!("OCI container {} ", c.id)),
        "{:?}",
        conf.description
    );
    assert_eq!(
        conf.description[1],
        format!("bundle {}", c.bundle.display())
    );

    // The container's root is the volume, a copy of the bundle's rootfs.
    let volume = pve.store.join(format!(
        "images/{FIRST_VMID}/subvol-{FIRST_VMID}-disk-0.subvol"
    ));
    assert_eq!(state_file(&c)["rootfs"], json!(volume));
    assert_eq!(c.state_json()["rootfs"], json!(volume));
    c.start().assert_ok();
    c.wait_status("stopped", Duration::from_secs(10));
    assert!(c.container_stdout().contains("ID=debian"));
    assert_eq!(
        fs::read_to_string(volume.join("marker")).unwrap(),
        "from-the-volume\n"
    );
    assert!(
        !c.rootfs.join("marker").exists(),
        "the bundle's rootfs was written"
    );

    c.delete().assert_ok();
    c.assert_no_debris(None);
    pve.assert_empty();
}

#[test]
fn a_container_with_a_mapped_user_namespace_is_unprivileged() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    let mut c = Container::new();
    c.namespace("user", None)
        .uid_mappings(&[(0, 100000, 65536)])
        .gid_mappings(&[(0, 100000, 65536)])
        .sh("id -u; stat -c %u /bin/busybox");
    c.chown_rootfs(100000, 100000);
    pve.create(&c, &[]).assert_ok();
    let conf = read_conf(&pve.conf_path(FIRST_VMID));
    assert_eq!(conf.keys.get("unprivileged").map(String::as_str), Some("1"));
    assert_eq!(
        conf.keys.get("ostype").map(String::as_str),
        Some("unmanaged")
    );
    // Owners survive the copy: root of the namespace owns its files.
    let volume = pve.store.join(format!(
        "images/{FIRST_VMID}/subvol-{FIRST_VMID}-disk-0.subvol"
    ));
    assert_eq!(
        fs::symlink_metadata(volume.join("bin/busybox"))
            .unwrap()
            .uid(),
        100000
    );
    c.start().assert_ok();
    c.wait_status("stopped", Duration::from_secs(10));
    assert_eq!(c.container_stdout(), "0\n0\n");
    c.delete().assert_ok();
    pve.assert_empty();
}

#[test]
fn without_a_user_namespace_the_config_says_nothing_of_privileges() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    let c = Container::new();
    pve.create(&c, &[]).assert_ok();
    let conf = read_conf(&pve.conf_path(FIRST_VMID));
    assert!(!conf.keys.contains_key("unprivileged"), "{}", conf.text);
    assert_eq!(
        conf.keys["memory"], "512",
        "Proxmox's default without a limit"
    );
    assert_eq!(conf.keys["swap"], "512");
    assert!(
        !conf.keys.contains_key("net0"),
        "net0 only from the annotation"
    );
    assert_eq!(conf.keys["hostname"], "lxcri-test");
}

#[test]
fn vmids_used_by_any_guest_are_skipped() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    fs::write(pve.conf_path(FIRST_VMID), "hostname: handmade\n").unwrap();
    fs::write(
        pve.qemu.join(format!("{}.conf", FIRST_VMID + 1)),
        "name: vm\n",
    )
    .unwrap();
    fs::write(
        pve.base.join("pve/.vmlist"),
        json!({"version": 3, "ids": {(FIRST_VMID + 2).to_string(): {"node": "other", "type": "lxc", "version": 1}}})
            .to_string(),
    )
    .unwrap();
    let c = Container::new();
    pve.create(&c, &[]).assert_ok();
    assert_eq!(state_file(&c)["proxmox"]["vmid"], FIRST_VMID + 3);
    assert!(pve.conf_path(FIRST_VMID + 3).exists());
    assert_eq!(
        fs::read_to_string(pve.conf_path(FIRST_VMID)).unwrap(),
        "hostname: handmade\n",
        "someone else's config was touched"
    );
    c.delete().assert_ok();
    assert_eq!(pve.vmids(), [FIRST_VMID], "only our config is removed");
}

#[test]
fn concurrent_creates_get_different_vmids() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    let containers: Vec<Container> = (0..4).map(|_| Container::new()).collect();
    let arg = pve.arg();
    let running: Vec<Running> = containers
        .iter()
        .map(|c| {
            c.write_config();
            let b = c.bundle.to_string_lossy().into_owned();
            let args = [
                "--root",
                &c.root.to_string_lossy(),
                "create",
                "--config",
                &arg,
                "--bundle",
                &b,
                &c.id,
            ]
            .map(String::from);
            spawn(&c.runtime, &args, &c.io, &ExecOpts::default())
        })
        .collect();
    for r in running {
        r.wait(CMD_TIMEOUT).assert_ok();
    }
    let mut vmids: Vec<u64> = containers
        .iter()
        .map(|c| state_file(c)["proxmox"]["vmid"].as_u64().unwrap())
        .collect();
    vmids.sort();
    let want: Vec<u64> = (0..4).map(|i| FIRST_VMID as u64 + i).collect();
    assert_eq!(vmids, want, "each create took its own, lowest free vmid");
    for c in &containers {
        let vmid = state_file(c)["proxmox"]["vmid"].as_u64().unwrap() as u32;
        let conf = read_conf(&pve.conf_path(vmid));
        assert!(
            conf.description[0].contains(&c.id),
            "{vmid}.conf is not {}'s",
            c.id
        );
        assert!(conf.keys["rootfs"].contains(&format!("subvol-{vmid}-disk-0")));
    }
    for c in &containers {
        c.delete().assert_ok();
    }
    pve.assert_empty();
}

#[test]
fn a_requested_vmid_is_used_and_a_taken_one_refused() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    let mut c = Container::new();
    c.set("/annotations", json!({"io.proxmox.lxcri.vmid": "123456"}));
    pve.create(&c, &[]).assert_ok();
    assert_eq!(pve.vmids(), [123456]);

    let mut d = Container::new();
    d.set("/annotations", json!({"io.proxmox.lxcri.vmid": "123456"}));
    let out = pve.create(&d, &[]);
    out.assert_fail();
    assert!(out.stderr.contains("vmid 123456"), "{out}");
    d.assert_no_debris(None);
    assert_eq!(pve.vmids(), [123456]);
    assert_eq!(pve.images(), ["123456"], "no volume for the refused create");
    assert!(read_conf(&pve.conf_path(123456)).description[0].contains(&c.id));
}

#[test]
fn annotations_opt_in_and_out() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    // Enabled in the config, refused by the container.
    let mut out_c = Container::new();
    out_c.set("/annotations", json!({"io.proxmox.lxcri.enabled": "false"}));
    pve.create(&out_c, &[]).assert_ok();
    assert!(pve.vmids().is_empty());
    assert!(state_file(&out_c).get("proxmox").is_none());
    assert_eq!(out_c.state_json()["rootfs"], json!(out_c.rootfs));

    // Disabled in the config, asked for by the container, with a size.
    pve.write_config(json!({"enabled": false}));
    let plain = Container::new();
    pve.create(&plain, &[]).assert_ok();
    assert!(pve.vmids().is_empty(), "disabled: no config");
    let mut in_c = Container::new();
    in_c.set(
        "/annotations",
        json!({"io.proxmox.lxcri.enabled": "true", "io.proxmox.lxcri.size": "4"}),
    );
    pve.create(&in_c, &[]).assert_ok();
    assert_eq!(pve.vmids(), [FIRST_VMID]);
    // A dir subvol has no quota: Proxmox records it as 0 whatever was asked.
    assert!(read_conf(&pve.conf_path(FIRST_VMID)).keys["rootfs"].ends_with(",size=0T"));
}

#[test]
fn the_storage_annotation_picks_a_configured_storage() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    let other = pve.base.join("other-store");
    fs::create_dir_all(&other).unwrap();
    pve.write_config(json!({"storage": [
        {"id": "local", "type": "dir", "path": pve.store},
        {"id": "bulk", "type": "dir", "path": other},
    ]}));
    let mut c = Container::new();
    c.set("/annotations", json!({"io.proxmox.lxcri.storage": "bulk"}));
    pve.create(&c, &[]).assert_ok();
    let conf = read_conf(&pve.conf_path(FIRST_VMID));
    assert!(conf.keys["rootfs"].starts_with(&format!("bulk:{FIRST_VMID}/subvol-")));
    assert!(other.join(format!("images/{FIRST_VMID}")).is_dir());
    assert!(pve.images().is_empty());

    let mut d = Container::new();
    d.set(
        "/annotations",
        json!({"io.proxmox.lxcri.storage": "nowhere"}),
    );
    let out = pve.create(&d, &[]);
    out.assert_fail();
    assert!(
        out.stderr.contains("io.proxmox.lxcri.storage") && out.stderr.contains("nowhere"),
        "{out}"
    );
    d.assert_no_debris(None);
}

#[test]
fn bad_annotations_and_config_values_are_named_and_leave_nothing() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    for (key, value) in [
        ("io.proxmox.lxcri.vmid", "12ab"),
        ("io.proxmox.lxcri.enabled", "maybe"),
        ("io.proxmox.lxcri.size", "8G"),
        ("io.proxmox.lxcri.net0", "bridge=vmbr0"),
        ("io.proxmox.lxcri.net0", "name=eth0\nrootfs: /"),
    ] {
        let mut c = Container::new();
        c.set("/annotations", json!({ key: value }));
        let out = pve.create(&c, &[]);
        out.assert_fail();
        assert!(
            out.stderr.contains(key),
            "error does not name {key}:\n{out}"
        );
        c.assert_no_debris(None);
        pve.assert_empty();
    }
    for (bad, key) in [
        (json!({"vmid_range": [10, 20]}), "proxmox.vmid_range"),
        (
            json!({"storage": {"id": "local", "type": "dir"}}),
            "proxmox.storage.path",
        ),
        (json!({"enabled": "yes"}), "proxmox.enabled"),
    ] {
        pve.write_config(bad);
        let c = Container::new();
        let out = pve.create(&c, &[]);
        out.assert_fail();
        assert!(
            out.stderr.contains(key) && out.stderr.contains(&pve.arg()),
            "error does not name {key} and the file:\n{out}"
        );
        c.assert_no_debris(None);
        pve.assert_empty();
    }
    // Asking for visibility on a host with no runtime config at all.
    let mut c = Container::new();
    c.set("/annotations", json!({"io.proxmox.lxcri.enabled": "true"}));
    fs::remove_file(&pve.config).unwrap();
    let out = pve.create(&c, &[]);
    out.assert_fail();
    assert!(
        out.stderr.contains("proxmox.storage is not configured"),
        "{out}"
    );
    c.assert_no_debris(None);
}

#[test]
fn a_failure_after_any_step_of_create_leaves_nothing_behind() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    for step in ["vmid", "volume", "copy", "config", "created"] {
        let c = Container::new();
        let out = pve.create(&c, &[("PROXMOX_LXCRI_FAIL_AT", step)]);
        assert!(
            !out.ok(),
            "create succeeded despite PROXMOX_LXCRI_FAIL_AT={step}: is the runtime a release \
             build? (the fail points exist only in debug builds)\n{out}"
        );
        assert!(
            out.stderr
                .contains(&format!("injected failure after step {step:?}")),
            "{out}"
        );
        c.assert_no_debris(None);
        pve.assert_empty();
    }
    // And the vmid is free again for the next create.
    let c = Container::new();
    pve.create(&c, &[]).assert_ok();
    assert_eq!(pve.vmids(), [FIRST_VMID]);
}

#[test]
fn the_binary_does_not_link_libzfs_core() {
    let out = host_cmd("/usr/bin/ldd", &[&our_binary().to_string_lossy()]);
    out.assert_ok();
    assert!(
        !out.stdout.contains("zfs") && !out.stdout.contains("nvpair"),
        "ZFS libraries are linked (they must be loaded only when used):\n{out}"
    );
}

#[test]
fn delete_with_keep_leaves_config_and_volume() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    pve.write_config(json!({"keep": true}));
    let c = Container::new();
    pve.create(&c, &[]).assert_ok();
    c.delete().assert_ok();
    c.assert_no_debris(None);
    assert_eq!(pve.vmids(), [FIRST_VMID]);
    assert!(pve
        .store
        .join(format!(
            "images/{FIRST_VMID}/subvol-{FIRST_VMID}-disk-0.subvol/bin/busybox"
        ))
        .exists());
    assert!(pve.lock_is_free(FIRST_VMID));
}

#[test]
fn delete_leaves_a_config_that_is_no_longer_ours() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    let c = Container::new();
    pve.create(&c, &[]).assert_ok();
    // An administrator reused the vmid meanwhile.
    fs::write(
        pve.conf_path(FIRST_VMID),
        "#another guest\nhostname: other\n",
    )
    .unwrap();
    let out = c.delete();
    out.assert_ok();
    assert!(out.stderr.contains("no longer describes"), "{out}");
    assert_eq!(
        fs::read_to_string(pve.conf_path(FIRST_VMID)).unwrap(),
        "#another guest\nhostname: other\n"
    );
    assert!(pve.images().is_empty(), "our volume is still removed");
}

#[test]
fn run_and_delete_force_clean_up_the_proxmox_side() {
    if skip() {
        return;
    }
    let pve = Pve::new();
    let mut c = Container::new();
    c.sh("echo hello");
    let out = c.run_with(&["--config", &pve.arg()]);
    out.assert_ok();
    assert_eq!(out.stdout, "hello\n");
    c.assert_no_debris(None);
    pve.assert_empty();

    let mut d = Container::new();
    d.sh("sleep 100");
    pve.create(&d, &[]).assert_ok();
    d.start().assert_ok();
    d.delete_force().assert_ok();
    d.assert_no_debris(None);
    pve.assert_empty();
}
