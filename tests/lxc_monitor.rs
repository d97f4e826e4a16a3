//! Proxmox sees pct-visible containers running: the LXC command socket `@<lxcpath>/<vmid>/command`
//! held by a monitor for the life of the container's init, checked with the real clients of
//! Debian's `lxc` package (lxc-info, lxc-stop) and with a raw client speaking LXC's protocol the
//! way pve-container's PVE::LXC::Command does. Each test has its own lxcpath (the socket name
//! includes it) and its own vmid.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const LXC_INFO: &str = "/usr/bin/lxc-info";
const LXC_STOP: &str = "/usr/bin/lxc-stop";
const VMID_ANNOTATION: &str = "io.proxmox.lxcri.vmid";
const LXCPATH_ENV: &str = "PROXMOX_LXCRI_LXCPATH";

// LXC command numbers (src/lxc/commands.h).
const GET_STATE: u32 = 3;
const GET_INIT_PID: u32 = 4;
const GET_CGROUP: u32 = 6;
const FREEZE: u32 = 15;
const GET_LIMIT_CGROUP: u32 = 19;
const HEADER_LEN: usize = 16;

static VMID_SEQ: AtomicU32 = AtomicU32::new(0);

/// A pct-visible container: the vmid annotation and its own lxcpath (the runtime writes the
/// `<lxcpath>/<vmid>/config` liblxc's tools need, as Proxmox does for its containers).
struct Pct {
    c: Container,
    vmid: u32,
    lxcpath: PathBuf,
}

impl Pct {
    fn new(args: &[&str]) -> Pct {
        Self::with_lxcpath(args, None)
    }

    fn with_lxcpath(args: &[&str], lxcpath: Option<PathBuf>) -> Pct {
        assert!(
            Path::new(LXC_INFO).exists() && Path::new(LXC_STOP).exists(),
            "these tests need Debian's lxc package (lxc-info, lxc-stop): run scripts/install-deps"
        );
        let mut c = Container::new();
        c.args(args);
        // Unique across concurrently running test binaries and within this one.
        let vmid =
            100_000 + (std::process::id() % 10_000) * 100 + VMID_SEQ.fetch_add(1, Ordering::SeqCst);
        c.set("/annotations", json!({ VMID_ANNOTATION: vmid.to_string() }));
        let lxcpath = lxcpath.unwrap_or_else(|| c.base.join("lxc"));
        fs::create_dir_all(&lxcpath).expect("create lxcpath");
        Pct { c, vmid, lxcpath }
    }

    fn opts(&self) -> ExecOpts {
        ExecOpts {
            env: vec![(
                LXCPATH_ENV.into(),
                self.lxcpath.to_string_lossy().into_owned(),
            )],
            ..Default::default()
        }
    }

    #[track_caller]
    fn create(&self) -> Out {
        self.c.create_opts(&[], &self.opts())
    }

    /// Created and started; returns the init's pid.
    #[track_caller]
    fn run(&self) -> i64 {
        self.create().assert_ok();
        self.c.start().assert_ok();
        self.c.wait_status("running", WAIT);
        self.c.pid()
    }

    fn socket_name(&self) -> String {
        format!("{}/{}/command", self.lxcpath.display(), self.vmid)
    }

    /// The monitor's pid as the state file records it.
    fn monitor_pid(&self) -> i64 {
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(self.c.state_dir().join("state.json")).unwrap())
                .unwrap();
        state["monitor"]["pid"]
            .as_i64()
            .expect("state.json has monitor.pid")
    }

    #[track_caller]
    fn lxc(&self, tool: &str, extra: &[&str]) -> Out {
        let vmid = self.vmid.to_string();
        let path = self.lxcpath.to_string_lossy().into_owned();
        let mut args = vec!["-n", &vmid, "-P", &path];
        args.extend_from_slice(extra);
        host_cmd(tool, &args)
    }

    fn connect(&self) -> UnixStream {
        let addr = SocketAddr::from_abstract_name(self.socket_name().as_bytes()).unwrap();
        UnixStream::connect_addr(&addr).expect("connect to the command socket")
    }
}

/// The abstract sockets of the host, as /proc/net/unix lists them (pve-container's check_running
/// reads this file).
fn unix_sockets() -> String {
    fs::read_to_string("/proc/net/unix").unwrap()
}

fn has_socket(name: &str) -> bool {
    unix_sockets()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(&format!("@{name}")))
}

fn request(cmd: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&cmd.to_ne_bytes());
    out.extend_from_slice(&(data.len() as i32).to_ne_bytes());
    out.extend_from_slice(&0u64.to_ne_bytes());
    out.extend_from_slice(data);
    out
}

/// Sends `bytes`, then reads until the monitor closes: (ret, datalen, pointer field, data), or
/// None when it closed without an answer.
fn transact(s: &mut UnixStream, bytes: &[u8]) -> Option<(i32, i32, i64, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .expect("the monitor answers or closes in time");
    if all.is_empty() {
        return None;
    }
    assert!(all.len() >= HEADER_LEN, "short answer {all:?}");
    let ret = i32::from_ne_bytes(all[0..4].try_into().unwrap());
    let len = i32::from_ne_bytes(all[4..8].try_into().unwrap());
    let ptr = i64::from_ne_bytes(all[8..16].try_into().unwrap());
    Some((ret, len, ptr, all[HEADER_LEN..].to_vec()))
}

fn field<'a>(out: &'a Out, name: &str) -> Option<&'a str> {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim()))
}

#[test]
fn lxc_info_reports_a_running_container_its_init_pid_and_cgroup_figures() {
    if skip_unless_ours() {
        return;
    }
    let p = Pct::new(&["sleep", "1000000"]);
    p.create().assert_ok();
    assert!(
        has_socket(&p.socket_name()),
        "no socket after create:\n{}",
        unix_sockets()
    );
    // Created, not started: LXC's word for it is STARTING (Proxmox goes by the socket alone).
    let out = p.lxc(LXC_INFO, &[]);
    out.assert_ok();
    assert_eq!(field(&out, "State:"), Some("STARTING"), "{out}");

    p.c.start().assert_ok();
    p.c.wait_status("running", WAIT);
    let pid = p.c.pid();
    let out = p.lxc(LXC_INFO, &[]);
    out.assert_ok();
    assert_eq!(field(&out, "State:"), Some("RUNNING"), "{out}");
    assert_eq!(field(&out, "PID:"), Some(pid.to_string().as_str()), "{out}");
    // lxc-info reads these from the cgroup paths the monitor reports: they exist only if those
    // paths are the container's.
    assert!(field(&out, "CPU use:").is_some(), "no CPU figure:\n{out}");
    let mem = field(&out, "Memory use:").unwrap_or_else(|| panic!("no memory figure:\n{out}"));
    assert!(!mem.starts_with("0.00 "), "memory use is zero: {out}");
    // `lxc-info -p`, as PVE::LXC::find_lxc_pid runs it.
    let out = p.lxc(LXC_INFO, &["-p"]);
    assert_eq!(field(&out, "PID:"), Some(pid.to_string().as_str()), "{out}");
}

#[test]
fn the_cgroup_paths_are_those_pve_reads_its_figures_from() {
    if skip_unless_ours() {
        return;
    }
    let p = Pct::new(&["sleep", "1000000"]);
    let pid = p.run();
    // PVE::LXC::Command::get_cgroup_path($vmid, 'memory', $limiting).
    for cmd in [GET_CGROUP, GET_LIMIT_CGROUP] {
        let (ret, len, _, data) =
            transact(&mut p.connect(), &request(cmd, b"memory\0")).expect("an answer");
        assert_eq!(ret, 0);
        assert_eq!(len as usize, data.len());
        let path = std::str::from_utf8(data.strip_suffix(b"\0").expect("NUL-terminated")).unwrap();
        let procs = Path::new("/sys/fs/cgroup")
            .join(if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                ""
            } else {
                "memory"
            })
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        let text = fs::read_to_string(&procs)
            .unwrap_or_else(|e| panic!("{} (from {path:?}): {e}", procs.display()));
        assert!(
            text.lines().any(|l| l == pid.to_string()),
            "init {pid} is not in {}:\n{text}",
            procs.display()
        );
    }
    let (ret, _, value, _) = transact(&mut p.connect(), &request(GET_INIT_PID, b"")).unwrap();
    assert_eq!((ret, value), (0, pid));
    let (ret, _, value, _) = transact(&mut p.connect(), &request(GET_STATE, b"")).unwrap();
    assert_eq!((ret, value), (0, 2), "GET_STATE is RUNNING (2)");
}

#[test]
fn lxc_stop_kills_the_container_and_its_socket_goes_with_it() {
    if skip_unless_ours() {
        return;
    }
    let p = Pct::new(&["sleep", "1000000"]);
    let pid = p.run();
    let monitor = p.monitor_pid();
    // `pct stop` runs `lxc-stop --kill`, which returns once the monitor closes the connection.
    p.lxc(LXC_STOP, &["--kill"]).assert_ok();
    assert_eq!(p.c.status(), "stopped");
    assert!(!pid_alive(pid));
    assert!(
        wait_until(Duration::from_secs(2), || !has_socket(&p.socket_name())),
        "the socket outlived the container:\n{}",
        unix_sockets()
    );
    assert!(wait_until(Duration::from_secs(2), || !pid_alive(monitor)));
    let out = p.lxc(LXC_INFO, &[]);
    assert_eq!(field(&out, "State:"), Some("STOPPED"), "{out}");
    p.c.delete().assert_ok();
}

#[test]
fn lxc_stop_shuts_down_gracefully_with_sigpwr_and_a_state_client() {
    if skip_unless_ours() {
        return;
    }
    // `pct shutdown` runs `lxc-stop --nokill --timeout N`: SIGPWR to the init, then waiting for
    // STOPPED through LXC_CMD_ADD_STATE_CLIENT.
    let p = Pct::new(&[
        "sh",
        "-c",
        "trap 'exit 0' PWR; while :; do sleep 0.05; done",
    ]);
    p.run();
    let t = Instant::now();
    p.lxc(LXC_STOP, &["--nokill", "--timeout", "20"])
        .assert_ok();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(p.c.status(), "stopped");
    p.c.delete().assert_ok();
}

#[test]
fn delete_removes_the_socket_and_the_monitor() {
    if skip_unless_ours() {
        return;
    }
    let p = Pct::new(&["sleep", "1000000"]);
    p.run();
    let monitor = p.monitor_pid();
    p.c.delete_force().assert_ok();
    // Checked right away: delete waits for the monitor.
    assert!(!has_socket(&p.socket_name()), "{}", unix_sockets());
    assert!(!pid_alive(monitor), "monitor {monitor} survived delete");
    // The <lxcpath>/<vmid>/config the runtime wrote is gone too: to liblxc the container no
    // longer exists (with a config left by someone else it would say STOPPED).
    let config = p.lxcpath.join(p.vmid.to_string()).join("config");
    assert!(!config.exists(), "{} left behind", config.display());
    let out = p.lxc(LXC_INFO, &[]);
    assert!(
        out.stderr.contains("doesn't exist") || field(&out, "State:") == Some("STOPPED"),
        "{out}"
    );
}

#[test]
fn a_crashed_monitor_leaves_no_stale_socket() {
    if skip_unless_ours() {
        return;
    }
    let p = Pct::new(&["sleep", "1000000"]);
    p.run();
    let monitor = p.monitor_pid();
    host_cmd("/bin/kill", &["-KILL", &monitor.to_string()]).assert_ok();
    assert!(
        wait_until(Duration::from_secs(2), || !has_socket(&p.socket_name())),
        "the kernel kept the name of a dead monitor:\n{}",
        unix_sockets()
    );
    // The container itself runs on, and delete copes with the monitor being gone.
    assert_eq!(p.c.status(), "running");
    p.c.delete_force().assert_ok();
}

#[test]
fn the_monitor_is_small_single_threaded_and_holds_only_what_it_needs() {
    if skip_unless_ours() {
        return;
    }
    let p = Pct::new(&["sleep", "1000000"]);
    let pid = p.run();
    let m = p.monitor_pid();
    let status = fs::read_to_string(format!("/proc/{m}/status")).unwrap();
    let get = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("{k} missing:\n{status}"))
    };
    assert_eq!(get("Threads:"), "1");
    assert_eq!(get("CapEff:"), "0000000000000020", "only CAP_KILL");
    assert_eq!(get("CapBnd:"), "0000000000000020", "only CAP_KILL");
    assert_eq!(get("NoNewPrivs:"), "1");
    // Detached: not a child of anything we ran, in a session of its own.
    let session = |pid: i64| -> String {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(3).unwrap().to_string()
    };
    assert_ne!(get("PPid:"), std::process::id().to_string());
    assert_ne!(session(m), session(std::process::id() as i64));
    let anon_kb: u64 = get("RssAnon:")
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    eprintln!("monitor {m}: VmRSS {}, RssAnon {anon_kb} kB", get("VmRSS:"));
    assert!(
        anon_kb < 2048,
        "the monitor holds {anon_kb} kB of anonymous memory"
    );
    // Its fds: /dev/null on 0-2, the socket and the init's pidfd; nothing of its caller.
    let mut fds: Vec<String> = fs::read_dir(format!("/proc/{m}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            fs::read_link(e.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    fds.sort();
    assert_eq!(fds.len(), 5, "{fds:?}");
    assert_eq!(
        fds.iter().filter(|f| *f == "/dev/null").count(),
        3,
        "{fds:?}"
    );
    assert!(fds.iter().any(|f| f.starts_with("socket:")), "{fds:?}");
    assert!(fds.iter().any(|f| f.contains("pidfd")), "{fds:?}");
    // Never in the container's namespaces.
    for ns in ["mnt", "pid", "net", "uts", "ipc"] {
        let theirs = fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let its = fs::read_link(format!("/proc/{m}/ns/{ns}")).unwrap();
        let ours = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_eq!(its, ours, "{ns}: the monitor left the host's namespace");
        assert_ne!(
            its, theirs,
            "{ns}: the monitor is in the container's namespace"
        );
    }
}

#[test]
fn malformed_requests_get_lxcs_answers_and_never_stop_the_monitor() {
    if skip_unless_ours() {
        return;
    }
    let p = Pct::new(&["sleep", "1000000"]);
    let pid = p.run();
    let monitor = p.monitor_pid();

    // A client that connects and says nothing is held (pve's vm_stop waits on such a
    // connection for the monitor to go) without keeping anyone else waiting.
    let silent = p.connect();
    let t = Instant::now();
    let (_, _, value, _) = transact(&mut p.connect(), &request(GET_INIT_PID, b"")).unwrap();
    assert_eq!(value, pid);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );

    // A request cut short: closed unanswered, as LXC does.
    let mut s = p.connect();
    s.write_all(&request(GET_INIT_PID, b"")[..5]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "answer to a short request: {rest:?}");

    // More data announced than LXC_CMD_DATA_MAX: closed before any of it is read.
    let mut huge = request(GET_CGROUP, b"");
    huge[4..8].copy_from_slice(&1_000_000i32.to_ne_bytes());
    assert_eq!(transact(&mut p.connect(), &huge), None);

    // A command number LXC does not know: closed unanswered.
    assert_eq!(transact(&mut p.connect(), &request(9999, b"")), None);
    assert_eq!(transact(&mut p.connect(), &request(u32::MAX, b"")), None);

    // A command LXC knows but the monitor does not serve: -ENOSYS.
    let (ret, ..) = transact(&mut p.connect(), &request(FREEZE, b"")).unwrap();
    assert_eq!(ret, -libc::ENOSYS);

    // A controller that is not one C string: -EINVAL; one that is no hierarchy: no answer.
    let (ret, ..) = transact(&mut p.connect(), &request(GET_CGROUP, b"memory")).unwrap();
    assert_eq!(ret, -libc::EINVAL);
    assert_eq!(
        transact(&mut p.connect(), &request(GET_CGROUP, b"../../etc\0")),
        None
    );

    // A request whose data never arrives does not hold up others either.
    let mut partial = p.connect();
    partial
        .write_all(&request(GET_CGROUP, b"memory\0")[..HEADER_LEN + 2])
        .unwrap();
    let (ret, _, value, _) = transact(&mut p.connect(), &request(GET_STATE, b"")).unwrap();
    assert_eq!((ret, value), (0, 2));

    // Garbage from many clients at once.
    for i in 0..50u32 {
        let mut s = p.connect();
        let _ = s.write_all(
            &i.wrapping_mul(2_654_435_761)
                .to_ne_bytes()
                .repeat(i as usize % 7),
        );
    }

    drop((silent, partial));
    assert!(pid_alive(monitor), "the monitor died");
    let out = p.lxc(LXC_INFO, &[]);
    assert_eq!(field(&out, "State:"), Some("RUNNING"), "{out}");
    assert_eq!(p.monitor_pid(), monitor);
}

#[test]
fn clients_other_than_root_are_refused() {
    if skip_unless_ours() {
        return;
    }
    let p = Pct::new(&["sleep", "1000000"]);
    p.run();
    // LXC's rule: root or the monitor's own uid; others get -EPERM.
    let script = format!(
        r#"use IO::Socket::UNIX; my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => "\0{}") or die "connect: $!";
           print $s pack("LlQ", {GET_INIT_PID}, 0, 0); my $b = ""; read($s, $b, 16); my ($r) = unpack("l", $b); print "ret=$r\n";"#,
        p.socket_name()
    );
    let out = host_cmd(
        "/usr/bin/setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/perl",
            "-e",
            &script,
        ],
    );
    out.assert_ok();
    assert_eq!(out.stdout.trim(), format!("ret={}", -libc::EPERM), "{out}");
}

#[test]
fn a_long_lxcpath_gets_lxcs_hashed_socket_name() {
    if skip_unless_ours() {
        return;
    }
    let long = Path::new(TMP_BASE)
        .join(unique_suffix())
        .join("x".repeat(120));
    let p = Pct::with_lxcpath(&["sleep", "1000000"], Some(long.clone()));
    let pid = p.run();
    assert!(!has_socket(&p.socket_name()));
    let hashed: Vec<String> = unix_sockets()
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|n| n.starts_with("@lxc/") && n.ends_with("/command"))
        .map(String::from)
        .collect();
    assert!(
        !hashed.is_empty(),
        "no @lxc/<hash>/command socket:\n{}",
        unix_sockets()
    );
    // lxc-info computes the same name from the same lxcpath.
    let out = p.lxc(LXC_INFO, &[]);
    assert_eq!(field(&out, "State:"), Some("RUNNING"), "{out}");
    assert_eq!(field(&out, "PID:"), Some(pid.to_string().as_str()), "{out}");
    drop(p);
    remove_tree(long.parent().unwrap());
}

#[test]
fn a_vmid_that_is_already_running_is_refused_without_debris() {
    if skip_unless_ours() {
        return;
    }
    let p = Pct::new(&["sleep", "1000000"]);
    p.run();
    let mut twin = Container::new();
    twin.args(&["sleep", "1000000"]);
    twin.set(
        "/annotations",
        json!({ VMID_ANNOTATION: p.vmid.to_string() }),
    );
    let out = twin.create_opts(&[], &p.opts());
    out.assert_fail();
    check_our_message(&out, "name the taken socket", |e| {
        e.contains(&p.socket_name()) && e.contains("taken")
    });
    twin.assert_no_debris(None);
    // The first one is unharmed.
    let out = p.lxc(LXC_INFO, &[]);
    assert_eq!(field(&out, "State:"), Some("RUNNING"), "{out}");
}

#[test]
fn a_vmid_that_is_no_number_is_refused() {
    if skip_unless_ours() {
        return;
    }
    let mut c = Container::new();
    c.set("/annotations", json!({ VMID_ANNOTATION: "ct-1" }));
    let out = c.create();
    out.assert_fail();
    check_our_message(&out, "name the annotation", |e| e.contains(VMID_ANNOTATION));
    c.assert_no_debris(None);
}
