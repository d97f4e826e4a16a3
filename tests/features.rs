//! `features`: the runtime-spec features document, and its claims checked
//! against what containers actually get.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;

#[track_caller]
fn features() -> Value {
    let io = std::path::Path::new(TMP_BASE).join(format!("{}-features", unique_suffix()));
    let out = exec(&runtime(), &["features"], &io, &ExecOpts::default());
    let _ = fs::remove_dir_all(&io);
    out.assert_ok();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("features is not JSON ({e}):\n{out}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn semver(v: &str) -> (u64, u64, u64) {
    let core = v.split(['-', '+']).next().unwrap();
    let p: Vec<u64> = core
        .split('.')
        .map(|n| n.parse().unwrap_or_else(|_| panic!("not semver: {v}")))
        .collect();
    assert_eq!(p.len(), 3, "not semver: {v}");
    (p[0], p[1], p[2])
}

#[test]
fn features_is_a_valid_document() {
    let f = features();
    let min = f["ociVersionMin"].as_str().expect("ociVersionMin");
    let max = f["ociVersionMax"].as_str().expect("ociVersionMax");
    assert!(semver(min) <= semver(max), "{min} > {max}");
    let hooks: BTreeSet<String> = strings(&f["hooks"]).into_iter().collect();
    let all: BTreeSet<String> = [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ]
    .map(String::from)
    .into();
    assert_eq!(hooks, all);
    assert!(f["mountOptions"].is_array());
    assert!(f["linux"]["namespaces"].is_array());
    assert!(f["linux"]["capabilities"].is_array());
    if is_ours() {
        assert_eq!(min, "1.0.0");
        assert_eq!(max, "1.2.0");
        let ns: BTreeSet<String> = strings(&f["linux"]["namespaces"]).into_iter().collect();
        let want: BTreeSet<String> = [
            "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
        ]
        .map(String::from)
        .into();
        assert_eq!(ns, want);
        // Matches `--version`'s "spec:" line.
        let v = host_cmd(&runtime().to_string_lossy(), &["--version"]);
        assert!(v.stdout.contains(&format!("spec: {max}")), "{v}");
    }
}

/// The ends of the supported range are accepted, what lies beyond the major
/// version is not.
#[test]
fn the_oci_versions_claimed_are_accepted() {
    let f = features();
    for key in ["ociVersionMin", "ociVersionMax"] {
        let v = f[key].as_str().unwrap();
        let mut c = Container::new();
        c.set("/ociVersion", json!(v)).sh("echo ran");
        let out = c.run();
        out.assert_ok();
        assert_eq!(out.stdout, "ran\n", "{key} {v}: {out}");
    }
    if is_ours() {
        let mut c = Container::new();
        c.set("/ociVersion", json!("2.0.0")).sh("echo ran");
        let out = c.run();
        out.assert_fail();
        check_our_message(&out, "name ociVersion", |e| e.contains("ociVersion"));
        c.assert_no_debris(None);
    }
}

/// The options tests/mounts.rs relies on are all claimed.
#[test]
fn mount_options_include_those_the_suite_exercises() {
    let opts: BTreeSet<String> = strings(&features()["mountOptions"]).into_iter().collect();
    for o in [
        "bind",
        "rbind",
        "ro",
        "rw",
        "nosuid",
        "nodev",
        "noexec",
        "relatime",
        "strictatime",
        "private",
        "rprivate",
        "rslave",
        "rshared",
    ] {
        assert!(opts.contains(o), "mountOptions lacks {o}: {opts:?}");
    }
}

/// What each claimed mount option visibly does to a bind mount, as
/// mountinfo shows it: (option, per-mount option or optional field expected).
const VISIBLE: &[(&str, &str)] = &[
    ("ro", "ro"),
    ("nosuid", "nosuid"),
    ("nodev", "nodev"),
    ("noexec", "noexec"),
    ("noatime", "noatime"),
    ("nodiratime", "nodiratime"),
    ("nosymfollow", "nosymfollow"),
    ("rro", "ro"),
    ("rnosuid", "nosuid"),
    ("rnodev", "nodev"),
    ("rnoexec", "noexec"),
    ("rnoatime", "noatime"),
    ("rnodiratime", "nodiratime"),
    ("rnosymfollow", "nosymfollow"),
    ("shared", "shared:"),
    ("rshared", "shared:"),
    ("unbindable", "unbindable"),
    ("runbindable", "unbindable"),
    ("idmap", "idmapped"),
    ("ridmap", "idmapped"),
];

/// Runs a container with one bind mount per option in `opts`, printing its mountinfo.
fn bind_mount_all(opts: &[String]) -> Out {
    let mut c = Container::new();
    let src = c.host.join("src");
    fs::create_dir_all(&src).unwrap();
    for o in opts {
        let mut options = vec![o.as_str()];
        if o != "bind" && o != "rbind" {
            options.insert(0, "bind");
        }
        let mut m = json!({
            "destination": format!("/m/{o}"), "type": "bind",
            "source": src.to_string_lossy(), "options": options
        });
        if o == "idmap" || o == "ridmap" {
            // Without a user namespace, an id-mapped mount needs mappings of its own.
            let map = json!([{ "containerID": 0, "hostID": 1000, "size": 1 }]);
            m["uidMappings"] = map.clone();
            m["gidMappings"] = map;
        }
        c.add_mount(m);
    }
    c.sh("cat /proc/self/mountinfo");
    c.run()
}

/// Every claimed mount option is accepted on a bind mount, and those with a
/// per-mount effect show it in the container's mountinfo.
#[test]
fn every_claimed_mount_option_works_on_a_bind_mount() {
    let mut opts = strings(&features()["mountOptions"]);
    if runtime_is_runc_1_1() {
        // Claimed by runc 1.1, but EINVAL on a bind mount there.
        let broken = ["ratime", "remount", "rnostrictatime"];
        eprintln!("skipped for runc 1.1 (claimed, but EINVAL on a bind mount): {broken:?}");
        opts.retain(|o| !broken.contains(&o.as_str()));
    }
    let mut out = bind_mount_all(&opts);
    if !out.ok() && out.stderr.contains("cannot idmap mounts") {
        // tmpfs can be idmapped only since Linux 6.3 (the v2 guest runs 6.1): tests/idmap.rs
        // covers idmap where the scratch filesystem allows it.
        eprintln!(
            "SKIP (LOUD): idmap/ridmap left out: {TMP_BASE} cannot be idmapped here ({})",
            out.stderr.trim()
        );
        opts.retain(|o| o != "idmap" && o != "ridmap");
        out = bind_mount_all(&opts);
    }
    out.assert_ok();
    let mounts = parse_mountinfo(&out.stdout);
    for o in &opts {
        let at = format!("/m/{o}");
        let m = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == at)
            .unwrap_or_else(|| panic!("no mount at {at}:\n{}", out.stdout));
        if let Some((_, want)) = VISIBLE.iter().find(|(name, _)| name == o) {
            let shown = m
                .options
                .iter()
                .chain(&m.optional)
                .any(|x| x.starts_with(want));
            assert!(shown, "option {o} not applied: {}", m.line);
        }
    }
}

/// The per-mount flags work on a new (non-bind) mount too.
#[test]
fn claimed_flag_options_work_on_a_tmpfs() {
    let opts = strings(&features()["mountOptions"]);
    let mut c = Container::new();
    let flags = ["ro", "nosuid", "nodev", "noexec", "noatime", "nosymfollow"];
    for o in flags.iter().filter(|o| opts.iter().any(|x| x == *o)) {
        c.add_mount(json!({
            "destination": format!("/t/{o}"), "type": "tmpfs", "source": "tmpfs",
            "options": [o, "size=64k"]
        }));
    }
    c.sh("cat /proc/self/mountinfo");
    let out = c.run();
    out.assert_ok();
    let mounts = parse_mountinfo(&out.stdout);
    for o in flags.iter().filter(|o| opts.iter().any(|x| x == *o)) {
        let at = format!("/t/{o}");
        let m = mounts
            .iter()
            .find(|m| m.mount_point == at)
            .unwrap_or_else(|| panic!("no mount at {at}"));
        assert!(m.has_option(o), "{o} not applied: {}", m.line);
    }
}

/// A container with each claimed namespace runs, in a namespace of that
/// kind that is not the host's.
#[test]
fn every_claimed_namespace_works() {
    let f = features();
    for ns in strings(&f["linux"]["namespaces"]) {
        let proc_name = match ns.as_str() {
            "mount" => "mnt",
            "network" => "net",
            other => other,
        };
        let mut c = Container::new();
        c.namespace(&ns, None);
        let mut script = format!("readlink /proc/self/ns/{proc_name}");
        match ns.as_str() {
            "user" => {
                c.uid_mappings(&[(0, 100000, 65536)])
                    .gid_mappings(&[(0, 100000, 65536)]);
                c.chown_rootfs(100000, 100000);
                script.push_str("; cat /proc/self/uid_map");
            }
            "time" => {
                c.set(
                    "/linux/timeOffsets",
                    json!({ "boottime": { "secs": 1000000 }, "monotonic": { "secs": 1000 } }),
                );
                // /proc/uptime follows CLOCK_BOOTTIME.
                script.push_str("; cat /proc/uptime; cat /proc/self/timens_offsets");
            }
            "cgroup" => script.push_str("; cat /proc/self/cgroup"),
            _ => {}
        }
        c.sh(&script);
        let out = c.run();
        out.assert_ok();
        let lines = out.lines();
        let host = fs::read_link(format!("/proc/self/ns/{proc_name}")).unwrap();
        assert_ne!(
            lines[0],
            host.to_string_lossy(),
            "{ns}: the container is in the host's namespace"
        );
        match ns.as_str() {
            "user" => assert_eq!(
                lines[1].split_whitespace().collect::<Vec<_>>(),
                ["0", "100000", "65536"],
                "{out}"
            ),
            "time" => {
                let up: f64 = lines[1].split_whitespace().next().unwrap().parse().unwrap();
                assert!(up >= 1000000.0, "boottime offset not applied:\n{out}");
                let monotonic: Vec<&str> = lines
                    .iter()
                    .find(|l| l.starts_with("monotonic"))
                    .map(|l| l.split_whitespace().collect())
                    .unwrap_or_default();
                assert_eq!(monotonic, ["monotonic", "1000", "0"], "{out}");
            }
            "cgroup" => {
                // The container's cgroup is the root of its cgroup namespace.
                for l in &lines[1..] {
                    let path = l.rsplit(':').next().unwrap();
                    assert!(
                        !path.contains(&c.id),
                        "cgroup path outside the namespace root: {l}\n{out}"
                    );
                }
            }
            _ => {}
        }
    }
}

/// Every claimed capability can be granted (those the test itself holds:
/// root here lacks some), and together they are all the kernel has.
#[test]
fn every_claimed_capability_can_be_granted() {
    let caps = strings(&features()["linux"]["capabilities"]);
    let last: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let known: Vec<&str> = caps
        .iter()
        .map(String::as_str)
        .filter(|c| cap_number(c).is_some_and(|n| n <= last))
        .collect();
    if is_ours() {
        assert_eq!(
            known.len() as u32,
            last + 1,
            "not every capability of this kernel is claimed: {caps:?}"
        );
    }
    let own = fs::read_to_string("/proc/self/status").unwrap();
    let own = u64::from_str_radix(status_field(&own, "CapBnd").unwrap(), 16).unwrap();
    let known: Vec<&str> = known
        .into_iter()
        .filter(|c| own & cap_mask(&[c]) != 0)
        .collect();
    assert!(
        known.len() > 30,
        "the test holds too few capabilities: {known:?}"
    );
    let mut c = Container::new();
    c.capabilities(&known).sh("grep CapEff /proc/self/status");
    let out = c.run();
    out.assert_ok();
    let eff = u64::from_str_radix(out.stdout.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff, cap_mask(&known), "{out}");
}

/// The cgroup version of this host is claimed, and limits land in its files: the v1 pids
/// hierarchy on a v1/hybrid host, the unified hierarchy on a pure v2 host (the guest).
#[test]
fn the_claimed_cgroup_version_is_used() {
    let f = features();
    let (version, dir) = if unified_host() {
        ("v2", std::path::Path::new(CGROUP_MOUNT).to_path_buf())
    } else {
        ("v1", std::path::Path::new(CGROUP_MOUNT).join("pids"))
    };
    if f["linux"]["cgroup"][version] != true {
        panic!("this host uses cgroup {version}, but {version} is not claimed: {f}");
    }
    let mut c = Container::new();
    c.set("/linux/resources/pids", json!({ "limit": 42 }));
    c.start_idle();
    let max = fs::read_to_string(dir.join(CGROUP_PARENT).join(&c.id).join("pids.max")).unwrap();
    assert_eq!(max.trim(), "42");
}

// ---------------------------------------------------------------------------
// What is not claimed must not be silently ignored either: the runtime-spec
// says that a property the runtime cannot apply MUST be an error.
// ---------------------------------------------------------------------------

/// `config` tweaked by `setup` must fail to create (the feature is not
/// implemented), naming `field`, without debris.
#[track_caller]
fn unclaimed_feature_is_refused(setup: impl FnOnce(&mut Container), field: &str) {
    let mut c = Container::new();
    c.sh("echo ran");
    setup(&mut c);
    let out = c.run_native_only();
    out.assert_fail();
    assert!(!out.stdout.contains("ran"), "the container ran:\n{out}");
    check_our_message(&out, &format!("name {field}"), |e| e.contains(field));
    c.assert_no_debris(None);
}

// AppArmor and SELinux labels: tests/bad_input.rs (lsm_labels_that_cannot_be_applied_...).

/// Claimed, id-mapped mounts must take effect (tests/idmap.rs has the details); unclaimed (runc
/// 1.1), they must be refused rather than mounted unmapped.
#[test]
fn idmapped_mounts_are_applied_when_claimed_and_never_silently_ignored() {
    let claimed = features()["linux"]["mountExtensions"]["idmap"]["enabled"] == true;
    if is_ours() {
        assert!(claimed, "idmapped mounts are implemented but not claimed");
    }
    let setup = |c: &mut Container| {
        let src = c.host.join("idmapped");
        fs::create_dir_all(&src).unwrap();
        std::os::unix::fs::chown(&src, Some(1000), Some(1000)).unwrap();
        c.add_mount(json!({
            "destination": "/mnt", "type": "bind",
            "source": src.to_string_lossy(), "options": ["rbind"],
            "uidMappings": [{ "containerID": 1000, "hostID": 0, "size": 1 }],
            "gidMappings": [{ "containerID": 1000, "hostID": 0, "size": 1 }]
        }));
    };
    if !claimed {
        unclaimed_feature_is_refused(setup, "uidMappings");
        return;
    }
    let mut c = Container::new();
    setup(&mut c);
    c.sh("stat -c %u:%g /mnt");
    let out = c.run();
    if out.stderr.contains("cannot idmap mounts") {
        eprintln!(
            "SKIP (LOUD): {TMP_BASE} cannot be idmapped here ({}); tests/idmap.rs runs where \
             it can",
            out.stderr.trim()
        );
        return;
    }
    out.assert_ok();
    assert_eq!(out.stdout, "0:0\n", "{out}");
}

/// AppArmor and SELinux are claimed (the runtime applies them, as runc's features says whatever
/// the host has); where the LSM is off a label is refused: tests/lsm.rs.
#[test]
fn lsm_support_is_claimed() {
    let f = features();
    if is_ours() {
        assert_eq!(f["linux"]["apparmor"]["enabled"], true, "{f}");
        assert_eq!(f["linux"]["selinux"]["enabled"], true, "{f}");
    }
}
