//! Namespaces: new ones, joined ones (by path), user namespace mappings,
//! namespaced sysctls.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

const NS_KINDS: &[&str] = &["net", "ipc", "uts", "mnt", "pid", "cgroup", "user"];

/// Inode of each /proc/self/ns/* link as seen by a container process.
fn ns_inodes_inside(c: &mut Container) -> BTreeMap<String, u64> {
    c.sh("for n in net ipc uts mnt pid cgroup user; do echo $n $(stat -L -c %i /proc/self/ns/$n); done");
    let out = c.run();
    out.assert_ok();
    out.lines()
        .into_iter()
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("ns line");
            (k.to_string(), v.parse().expect("inode"))
        })
        .collect()
}

fn host_ns_inode(kind: &str) -> u64 {
    inode(Path::new(&format!("/proc/self/ns/{kind}")))
}

#[test]
fn listed_namespaces_are_new_and_the_others_are_shared_with_the_host() {
    let mut c = Container::new();
    // The default config lists pid, network, ipc, uts, mount.
    let inside = ns_inodes_inside(&mut c);
    for kind in NS_KINDS {
        let new = ["net", "ipc", "uts", "mnt", "pid"].contains(kind);
        let same = inside[*kind] == host_ns_inode(kind);
        assert_eq!(
            same, !new,
            "{kind} namespace: new expected: {new}; {inside:?}"
        );
    }
}

#[test]
fn without_network_and_ipc_entries_the_host_ones_are_used() {
    let mut c = Container::new();
    c.remove_namespace("network").remove_namespace("ipc");
    let inside = ns_inodes_inside(&mut c);
    assert_eq!(inside["net"], host_ns_inode("net"));
    assert_eq!(inside["ipc"], host_ns_inode("ipc"));
    assert_ne!(inside["uts"], host_ns_inode("uts"));
}

#[test]
fn cgroup_namespace_is_new_when_listed() {
    let mut c = Container::new();
    c.namespace("cgroup", None);
    let inside = ns_inodes_inside(&mut c);
    assert_ne!(inside["cgroup"], host_ns_inode("cgroup"));
}

#[test]
fn a_new_network_namespace_has_only_loopback() {
    let mut c = Container::new();
    c.sh("ls /sys/class/net");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "lo\n", "{out}");
}

#[test]
fn joins_a_network_namespace_made_with_ip_netns_add() {
    let ns = NetNs::new();
    let mut c = Container::new();
    c.namespace("network", Some(&ns.path.to_string_lossy()))
        .sh("stat -L -c %i /proc/self/ns/net");
    let out = c.run();
    out.assert_ok();
    let want = inode(&ns.path);
    assert_ne!(want, host_ns_inode("net"));
    assert_eq!(out.stdout.trim(), want.to_string(), "{out}");
}

#[test]
fn joins_the_uts_namespace_of_another_container() {
    let mut first = Container::new();
    first.hostname("first-host").sh("echo started; sleep 100");
    first.create().assert_ok();
    first.start().assert_ok();
    first.wait_container_stdout("started", WAIT);
    let pid = first.pid();

    let mut second = Container::new();
    second
        .namespace("uts", Some(&format!("/proc/{pid}/ns/uts")))
        .remove("/hostname")
        .sh("hostname; stat -L -c %i /proc/self/ns/uts");
    let out = second.run();
    out.assert_ok();
    let want = inode(Path::new(&format!("/proc/{pid}/ns/uts")));
    assert_eq!(out.stdout, format!("first-host\n{want}\n"), "{out}");
}

#[test]
fn joins_the_ipc_namespace_of_another_container() {
    let mut first = Container::new();
    first.sh("echo started; sleep 100");
    first.create().assert_ok();
    first.wait_status("created", WAIT);
    let pid = first.pid();
    let want = inode(Path::new(&format!("/proc/{pid}/ns/ipc")));
    assert_ne!(want, host_ns_inode("ipc"));

    let mut second = Container::new();
    second
        .namespace("ipc", Some(&format!("/proc/{pid}/ns/ipc")))
        .sh("stat -L -c %i /proc/self/ns/ipc");
    let out = second.run();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), want.to_string(), "{out}");
}

fn user_ns_container(uid_maps: &[(u32, u32, u32)], script: &str) -> Container {
    let mut c = Container::new();
    c.namespace("user", None)
        .uid_mappings(uid_maps)
        .gid_mappings(uid_maps)
        .sh(script);
    // Container root must be able to read its rootfs.
    c.chown_rootfs(uid_maps[0].1, uid_maps[0].1);
    c
}

fn normalize_map(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn user_namespace_maps_container_root_to_host_uid_100000() {
    let c = user_ns_container(
        &[(0, 100000, 65536)],
        "cat /proc/self/uid_map; echo ---; cat /proc/self/gid_map; echo ---; id -u; id -g; \
         echo started; exec sleep 100",
    );
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    let out = c.container_stdout();
    let s: Vec<&str> = out.split("---\n").collect();
    assert_eq!(normalize_map(s[0]), ["0 100000 65536"], "{out}");
    assert_eq!(normalize_map(s[1]), ["0 100000 65536"], "{out}");
    assert_eq!(s[2], "0\n0\nstarted\n");
    let pid = c.pid();
    assert_eq!(
        proc_status_field(pid, "Uid").map(|v| normalize_map(&v)),
        Some(vec!["100000 100000 100000 100000".to_string()])
    );
    assert_eq!(
        proc_status_field(pid, "Gid").map(|v| normalize_map(&v)),
        Some(vec!["100000 100000 100000 100000".to_string()])
    );
    assert_ne!(
        inode(Path::new(&format!("/proc/{pid}/ns/user"))),
        host_ns_inode("user")
    );
}

#[test]
fn user_namespace_with_several_ranges_maps_each() {
    let mut c = user_ns_container(
        &[(0, 100000, 1000), (1000, 200000, 1000)],
        "cat /proc/self/uid_map; echo ---; cat /proc/self/gid_map; echo ---; id -u; \
         echo started; exec sleep 100",
    );
    c.user(1000, 1000);
    c.create().assert_ok();
    c.start().assert_ok();
    c.wait_container_stdout("started", WAIT);
    let out = c.container_stdout();
    let s: Vec<&str> = out.split("---\n").collect();
    let want = ["0 100000 1000", "1000 200000 1000"];
    assert_eq!(normalize_map(s[0]), want, "{out}");
    assert_eq!(normalize_map(s[1]), want, "{out}");
    assert_eq!(s[2], "1000\nstarted\n");
    // Container uid 1000 is host uid 200000.
    let pid = c.pid();
    assert_eq!(
        proc_status_field(pid, "Uid").map(|v| normalize_map(&v)),
        Some(vec!["200000 200000 200000 200000".to_string()])
    );
}

#[test]
fn files_owned_by_unmapped_host_ids_show_as_the_overflow_id() {
    let c = user_ns_container(
        &[(0, 100000, 65536)],
        "stat -c '%u %g' /etc/passwd /etc/group",
    );
    // Make one file owned by host root, which is not mapped.
    host_cmd(
        "/usr/bin/chown",
        &["0:0", &c.rootfs.join("etc/group").to_string_lossy()],
    )
    .assert_ok();
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "0 0\n65534 65534\n", "{out}");
}

#[test]
fn sysctl_net_ipv4_ip_forward_is_set_in_the_new_network_namespace() {
    let host_before = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let mut c = Container::new();
    c.sysctl("net.ipv4.ip_forward", "1")
        .sh("cat /proc/sys/net/ipv4/ip_forward");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "1\n");
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_before,
        "the host's ip_forward changed"
    );
}

#[test]
fn sysctl_kernel_shm_rmid_forced_is_set_in_the_new_ipc_namespace() {
    let host_before = fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap();
    let mut c = Container::new();
    c.sysctl("kernel.shm_rmid_forced", "1")
        .sh("cat /proc/sys/kernel/shm_rmid_forced");
    let out = c.run();
    out.assert_ok();
    assert_eq!(out.stdout, "1\n");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap(),
        host_before
    );
}

#[test]
fn sysctl_in_a_joined_network_namespace_applies_to_that_namespace() {
    let ns = NetNs::new();
    let mut c = Container::new();
    c.namespace("network", Some(&ns.path.to_string_lossy()))
        .sysctl("net.ipv4.ip_forward", "1")
        .sh("true");
    c.run().assert_ok();
    let out = host_cmd(
        "/usr/sbin/ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ],
    );
    out.assert_ok();
    assert_eq!(out.stdout, "1\n");
}

#[test]
fn only_the_processes_of_the_pid_namespace_are_visible() {
    let mut c = Container::new();
    // The glob is expanded by the shell itself: it sees pid 1 (itself) and the
    // background sleep.
    c.sh("sleep 100 & echo /proc/[0-9]*; kill $!");
    let out = c.run();
    out.assert_ok();
    let pids: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{out}");
    assert_eq!(pids[0], "/proc/1", "{out}");
}
