//! Rootless: the runtime run by an unprivileged user that each test creates (`lxcrit<pid>x<n>`,
//! with subordinate ids of its own, removed with `userdel -r` when the test ends, failed or not),
//! from a config written by `spec --rootless`; and the checks on `linux.uidMappings` /
//! `gidMappings` that every caller gets (run as root), each error naming the range at fault.
//!
//! Needs root (useradd/userdel, setpriv), Debian's `uidmap` for the multi-range test and runc for
//! the differential ones. In the cgroup v2 guest useradd cannot write the guest's /etc (the
//! host's, read-only): scripts/test-guest binds a writable copy over it first.

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const USER_PREFIX: &str = "lxcrit";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
static USER_SEQ: AtomicUsize = AtomicUsize::new(0);
/// useradd, usermod and userdel lock /etc/passwd: one at a time from this binary.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// A throwaway unprivileged user with 65536 subordinate uids and gids, its own
/// $XDG_RUNTIME_DIR and a bundle it owns (rootfs plus the config from
/// `spec --rootless`, run as that user).
struct User {
    name: String,
    uid: u32,
    gid: u32,
    /// First subordinate uid (and gid) of the user's range.
    sub: u32,
    base: PathBuf,
    xdg: PathBuf,
    bundle: PathBuf,
    io: PathBuf,
    id: String,
    /// A cgroup delegated to the user (see [`User::delegate`]), removed by Drop.
    delegated: Option<Delegated>,
}

/// A cgroup subtree delegated to the user as systemd's `Delegate=yes` does: the directory and its
/// cgroup.procs, cgroup.subtree_control and cgroup.threads chowned to the user (one directory
/// per hierarchy on v1). The user's commands run in `caller`, a cgroup inside it: moving a
/// process takes write access to cgroup.procs of the common ancestor of its old and new cgroup.
struct Delegated {
    /// The delegated directories (one per hierarchy given).
    dirs: Vec<PathBuf>,
    /// cgroup.procs of the cgroup the user's commands run in (v2 only).
    caller_procs: Option<PathBuf>,
}

fn accounts_cmd(program: &str, args: &[&str]) -> Out {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    // Another test binary may hold the lock files for a moment.
    let mut out = host_cmd(program, args);
    for _ in 0..50 {
        if out.ok() || !out.stderr.contains("lock") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        out = host_cmd(program, args);
    }
    out
}

/// Users of earlier runs whose test process is gone.
fn remove_stale_users() {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for name in passwd.lines().filter_map(|l| l.split(':').next()) {
        let Some(rest) = name.strip_prefix(USER_PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            continue;
        };
        match pid.parse::<i64>() {
            Ok(pid) if pid != i64::from(std::process::id()) && !pid_alive(pid) => {
                accounts_cmd("/usr/sbin/userdel", &["-r", name]);
            }
            _ => {}
        }
    }
}

impl User {
    fn new() -> User {
        clean_stale();
        static STALE: std::sync::Once = std::sync::Once::new();
        STALE.call_once(remove_stale_users);
        let pid = std::process::id();
        let n = USER_SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("{USER_PREFIX}{pid}x{n}");
        let sub = 1_000_000_000 + ((pid as usize * 16 + n) % 40_000) as u32 * 65536;
        // No automatic subordinate ids: the test gives exactly one range.
        accounts_cmd(
            "/usr/sbin/useradd",
            &[
                "-M",
                "-s",
                "/usr/sbin/nologin",
                "-K",
                "SUB_UID_COUNT=0",
                "-K",
                "SUB_GID_COUNT=0",
                &name,
            ],
        )
        .assert_ok();
        // From here on Drop removes the user, whatever fails.
        let base = Path::new(TMP_BASE).join(format!("{pid}-r{n}"));
        let mut user = User {
            uid: 0,
            gid: 0,
            sub,
            xdg: base.join("xdg"),
            bundle: base.join("bundle"),
            io: base.join("io"),
            base,
            id: format!("{PREFIX}-{pid}-r{n}"),
            name,
            delegated: None,
        };
        let range = format!("{sub}-{}", sub + 65535);
        accounts_cmd(
            "/usr/sbin/usermod",
            &["--add-subuids", &range, "--add-subgids", &range, &user.name],
        )
        .assert_ok();
        let id = |flag| {
            host_cmd("/usr/bin/id", &[flag, &user.name])
                .assert_ok()
                .stdout
                .trim()
                .parse::<u32>()
                .expect("numeric id")
        };
        user.uid = id("-u");
        user.gid = id("-g");
        for d in [&user.xdg, &user.bundle, &user.io] {
            fs::create_dir_all(d).expect("create scratch dir");
        }
        build_rootfs(&user.bundle.join("rootfs"));
        let owner = format!("{}:{}", user.uid, user.gid);
        host_cmd(
            "/usr/bin/chown",
            &["-R", "-h", &owner, &user.base.to_string_lossy()],
        )
        .assert_ok();
        host_cmd("/usr/bin/chmod", &["700", &user.xdg.to_string_lossy()]).assert_ok();
        let b = user.bundle.to_string_lossy().into_owned();
        user.rt(&["spec", "--rootless", "--bundle", &b]).assert_ok();
        user
    }

    /// Runs `program args...` as the user, with a clean environment holding `env`.
    fn as_user(&self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
        let (uid, gid) = (self.uid.to_string(), self.gid.to_string());
        let mut a: Vec<String> = ["--reuid", &uid, "--regid", &gid, "--init-groups"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["/usr/bin/env", "-i", &format!("PATH={PATH}")].map(String::from));
        a.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        a.push(program.to_string_lossy().into_owned());
        a.extend(args.iter().map(|s| s.to_string()));
        let opts = ExecOpts {
            cwd: Some(self.base.clone()),
            ..Default::default()
        };
        match self
            .delegated
            .as_ref()
            .and_then(|d| d.caller_procs.as_ref())
        {
            // As a user session under systemd: the command starts inside the delegated subtree.
            Some(procs) => {
                let mut wrapped: Vec<String> = vec![
                    "-c".into(),
                    r#"echo $$ >"$0" && exec "$@""#.into(),
                    procs.to_string_lossy().into_owned(),
                    "/usr/bin/setpriv".into(),
                ];
                wrapped.extend(a);
                exec(Path::new("/bin/sh"), &wrapped, &self.io, &opts)
            }
            None => exec(Path::new("/usr/bin/setpriv"), &a, &self.io, &opts),
        }
    }

    /// Delegates a fresh cgroup `lxcri-test/<id>` to the user in each of `hierarchies` (cgroup
    /// roots), as systemd does; on a pure v2 host the user's commands run from then on in its
    /// child `caller`. Returns the delegated directories.
    fn delegate(&mut self, hierarchies: &[PathBuf]) -> Vec<PathBuf> {
        let owner = format!("{}:{}", self.uid, self.gid);
        let mut d = Delegated {
            dirs: Vec::new(),
            caller_procs: None,
        };
        for h in hierarchies {
            let parent = h.join(CGROUP_PARENT);
            let _ = fs::create_dir(&parent);
            let dir = parent.join(&self.id);
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            // Dropped with the user even if what follows fails.
            d.dirs.push(dir.clone());
            let mut chown = vec![dir.clone()];
            chown.extend(
                [
                    "cgroup.procs",
                    "cgroup.subtree_control",
                    "cgroup.threads",
                    "tasks",
                ]
                .iter()
                .map(|f| dir.join(f))
                .filter(|f| f.exists()),
            );
            for p in &chown {
                host_cmd("/usr/bin/chown", &[&owner, &p.to_string_lossy()]).assert_ok();
            }
        }
        if unified_host() {
            // What the delegated subtree may enable comes from its parents: systemd enables
            // them down to the delegated unit, for user@.service Debian's `Delegate=pids memory
            // cpu`.
            for dir in [
                Path::new(CGROUP_MOUNT),
                &Path::new(CGROUP_MOUNT).join(CGROUP_PARENT),
            ] {
                for c in ["pids", "memory", "cpu"] {
                    let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
            let caller = d.dirs[0].join("caller");
            fs::create_dir(&caller).expect("mkdir caller cgroup");
            for p in [caller.clone(), caller.join("cgroup.procs")] {
                host_cmd("/usr/bin/chown", &[&owner, &p.to_string_lossy()]).assert_ok();
            }
            d.caller_procs = Some(caller.join("cgroup.procs"));
        }
        let dirs = d.dirs.clone();
        self.delegated = Some(d);
        dirs
    }

    /// The runtime as the user, with its $XDG_RUNTIME_DIR and no --root.
    fn rt(&self, args: &[&str]) -> Out {
        let xdg = self.xdg.to_string_lossy().into_owned();
        self.as_user(&our_binary(), args, &[("XDG_RUNTIME_DIR", &xdg)])
    }

    fn state_root(&self) -> PathBuf {
        self.xdg.join("proxmox-lxcri")
    }

    fn config(&self) -> Value {
        let text = fs::read_to_string(self.bundle.join("config.json")).expect("config.json");
        serde_json::from_str(&text).expect("config.json is JSON")
    }

    /// Rewrites the config (the file keeps its owner) with `edit` applied and a
    /// non-terminal `sh -c script` as the process.
    fn configure(&self, script: &str, edit: impl FnOnce(&mut Value)) {
        let mut c = self.config();
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(["sh", "-c", script]);
        edit(&mut c);
        fs::write(
            self.bundle.join("config.json"),
            serde_json::to_string_pretty(&c).expect("serialize"),
        )
        .expect("write config.json");
    }

    fn bundle_arg(&self) -> String {
        self.bundle.to_string_lossy().into_owned()
    }

    /// Host pids of the processes running with the user's uid or a subordinate one.
    fn processes(&self) -> Vec<i64> {
        let range = self.sub..self.sub + 65536;
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                // The real uid from status: /proc/<pid> of a non-dumpable process is root's.
                let pid: i64 = e.file_name().to_str()?.parse().ok()?;
                let uid: u32 = proc_status_field(pid, "Uid")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                (uid == self.uid || range.contains(&uid)).then_some(pid)
            })
            .collect()
    }

    /// A failed create left no state dir and no process behind.
    #[track_caller]
    fn assert_no_debris(&self) {
        let entries: Vec<_> = fs::read_dir(self.state_root())
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            !entries.iter().any(|n| *n == *self.id),
            "state dir of {} left in {}",
            self.id,
            self.state_root().display()
        );
        assert!(
            wait_until(Duration::from_secs(5), || self.processes().is_empty()),
            "processes of {} left: {:?}",
            self.name,
            self.processes()
        );
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = self.rt(&["delete", "--force", &self.id]);
        for pid in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
        }
        wait_until(Duration::from_secs(5), || self.processes().is_empty());
        if let Some(d) = self.delegated.take() {
            for dir in &d.dirs {
                remove_cgroup_tree(dir);
            }
        }
        let _ = accounts_cmd("/usr/sbin/userdel", &["-r", &self.name]);
        remove_tree(&self.base);
    }
}

fn map_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn spec_rootless_runs_as_root_of_a_user_namespace_mapping_the_caller() {
    let u = User::new();
    u.configure(
        "id -u; id -g; echo ---; cat /proc/self/uid_map; echo ---; cat /proc/self/gid_map",
        |_| {},
    );
    let out = u.rt(&["run", "--bundle", &u.bundle_arg(), &u.id]);
    out.assert_ok();
    let parts: Vec<&str> = out.stdout.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    assert_eq!(map_lines(parts[0]), ["0", "0"], "{out}");
    assert_eq!(map_lines(parts[1]), [format!("0 {} 1", u.uid)], "{out}");
    assert_eq!(map_lines(parts[2]), [format!("0 {} 1", u.gid)], "{out}");
    // The state root was made under $XDG_RUNTIME_DIR, by and for the user, and `run` left no
    // container in it.
    let meta = fs::metadata(u.state_root()).expect("state root under $XDG_RUNTIME_DIR");
    assert_eq!((meta.uid(), meta.gid()), (u.uid, u.gid));
    u.assert_no_debris();
}

#[test]
fn create_start_state_exec_kill_delete_as_an_unprivileged_user() {
    let u = User::new();
    u.configure("exec sleep 1000", |_| {});
    let b = u.bundle_arg();
    u.rt(&["create", "--bundle", &b, &u.id]).assert_ok();
    let state_file = u.state_root().join(&u.id).join("state.json");
    assert_eq!(
        fs::metadata(&state_file)
            .expect("state.json under $XDG_RUNTIME_DIR")
            .uid(),
        u.uid
    );
    assert!(!Path::new("/run/proxmox-lxcri").join(&u.id).exists());
    let state: Value =
        serde_json::from_str(&u.rt(&["state", &u.id]).assert_ok().stdout).expect("state JSON");
    assert_eq!(state["status"], "created");
    let pid = state["pid"].as_i64().expect("pid");
    // The init runs with the caller's uid and gid on the host.
    let host_ids = |field| proc_status_field(pid, field).map(|v| map_lines(&v));
    assert_eq!(
        host_ids("Uid"),
        Some(vec![format!("{0} {0} {0} {0}", u.uid)])
    );
    assert_eq!(
        host_ids("Gid"),
        Some(vec![format!("{0} {0} {0} {0}", u.gid)])
    );
    // No cgroup was made for it: it stays where the caller was.
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("init's cgroup"),
        fs::read_to_string("/proc/self/cgroup").expect("our cgroup")
    );

    u.rt(&["start", &u.id]).assert_ok();
    let state: Value =
        serde_json::from_str(&u.rt(&["state", &u.id]).assert_ok().stdout).expect("state JSON");
    assert_eq!(state["status"], "running");
    let out = u.rt(&["exec", &u.id, "sh", "-c", "id -u; cat /proc/self/uid_map"]);
    out.assert_ok();
    assert_eq!(
        map_lines(&out.stdout),
        ["0".into(), format!("0 {} 1", u.uid)]
    );
    let ps = u.rt(&["ps", "--format", "json", &u.id]);
    let pids: Vec<i64> = serde_json::from_str(&ps.assert_ok().stdout).expect("ps JSON");
    assert_eq!(pids, [pid], "{ps}");

    u.rt(&["kill", "--all", &u.id, "KILL"]).assert_ok();
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(pid)));
    let state: Value =
        serde_json::from_str(&u.rt(&["state", &u.id]).assert_ok().stdout).expect("state JSON");
    assert_eq!(state["status"], "stopped");
    u.rt(&["delete", &u.id]).assert_ok();
    assert!(!u.state_root().join(&u.id).exists());
    u.assert_no_debris();
}

#[test]
fn several_ranges_are_mapped_through_newuidmap_and_newgidmap() {
    if !Path::new("/usr/bin/newuidmap").exists() || !Path::new("/usr/bin/newgidmap").exists() {
        eprintln!(
            "SKIPPED: newuidmap/newgidmap missing (Debian package uidmap, scripts/install-deps)"
        );
        return;
    }
    let u = User::new();
    let (uid, gid, sub) = (u.uid, u.gid, u.sub);
    u.configure(
        "cat /proc/self/uid_map; echo ---; cat /proc/self/gid_map; echo ---; id -u; id -g; \
         touch /tmp/made-by-1000",
        |c| {
            c["linux"]["uidMappings"] = json!([
                {"containerID": 0, "hostID": uid, "size": 1},
                {"containerID": 1, "hostID": sub, "size": 65536}
            ]);
            c["linux"]["gidMappings"] = json!([
                {"containerID": 0, "hostID": gid, "size": 1},
                {"containerID": 1, "hostID": sub, "size": 65536}
            ]);
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            c["root"]["readonly"] = json!(false);
        },
    );
    let out = u.rt(&["run", "--bundle", &u.bundle_arg(), &u.id]);
    out.assert_ok();
    let parts: Vec<&str> = out.stdout.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    let want = |own| vec![format!("0 {own} 1"), format!("1 {sub} 65536")];
    assert_eq!(map_lines(parts[0]), want(uid), "{out}");
    assert_eq!(map_lines(parts[1]), want(gid), "{out}");
    assert_eq!(map_lines(parts[2]), ["1000", "1000"], "{out}");
    // Container id 1000 is subordinate id sub + 999 on the host.
    let made = fs::metadata(u.bundle.join("rootfs/tmp/made-by-1000")).expect("file made inside");
    assert_eq!((made.uid(), made.gid()), (sub + 999, sub + 999));
    u.assert_no_debris();
}

#[test]
fn host_ids_outside_the_callers_subordinate_ranges_are_refused() {
    let u = User::new();
    let (uid, gid, sub) = (u.uid, u.gid, u.sub);
    u.configure("true", |c| {
        c["linux"]["uidMappings"] = json!([
            {"containerID": 0, "hostID": uid, "size": 1},
            {"containerID": 1, "hostID": sub + 65000, "size": 1000}
        ]);
    });
    let out = u.rt(&["create", "--bundle", &u.bundle_arg(), &u.id]);
    out.assert_fail();
    let range = format!("{}-{}", sub + 65000, sub + 65999);
    assert!(
        out.stderr.contains("linux.uidMappings[1]")
            && out.stderr.contains(&range)
            && out.stderr.contains("/etc/subuid"),
        "{out}"
    );
    u.assert_no_debris();

    // Someone else's id: the host's root group.
    u.configure("true", |c| {
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        c["linux"]["gidMappings"] = json!([
            {"containerID": 0, "hostID": gid, "size": 1},
            {"containerID": 1, "hostID": 0, "size": 1}
        ]);
    });
    let out = u.rt(&["create", "--bundle", &u.bundle_arg(), &u.id]);
    out.assert_fail();
    assert!(
        out.stderr.contains("linux.gidMappings[1]") && out.stderr.contains("/etc/subgid"),
        "{out}"
    );
    u.assert_no_debris();
}

#[test]
fn without_root_flag_or_xdg_runtime_dir_the_error_says_what_to_set() {
    let u = User::new();
    u.configure("true", |_| {});
    let b = u.bundle_arg();
    let out = u.as_user(&our_binary(), &["create", "--bundle", &b, &u.id], &[]);
    out.assert_fail();
    assert!(
        out.stderr.contains("XDG_RUNTIME_DIR") && out.stderr.contains("--root"),
        "{out}"
    );
    assert!(!Path::new("/run/proxmox-lxcri").join(&u.id).exists());
    // `spec` keeps no state: it needs neither.
    let other = u.base.join("other");
    fs::create_dir(&other).expect("mkdir");
    host_cmd(
        "/usr/bin/chown",
        &[&u.uid.to_string(), &other.to_string_lossy()],
    )
    .assert_ok();
    let o = other.to_string_lossy().into_owned();
    u.as_user(&our_binary(), &["spec", "--rootless", "--bundle", &o], &[])
        .assert_ok();
    u.assert_no_debris();
}

#[test]
fn resource_limits_without_a_writable_cgroup_are_an_error_naming_them() {
    let u = User::new();
    u.configure("true", |c| {
        c["linux"]["resources"] = json!({"pids": {"limit": 10}});
    });
    let out = u.rt(&["create", "--bundle", &u.bundle_arg(), &u.id]);
    out.assert_fail();
    assert!(
        out.stderr.contains("linux.resources") && out.stderr.contains("cgroup"),
        "{out}"
    );
    u.assert_no_debris();
}

/// runc, given the same rootless config by the same user, shows the same maps and ids.
#[test]
fn rootless_view_matches_runc() {
    if !Path::new(RUNC).exists() {
        eprintln!("SKIPPED: {RUNC} missing");
        return;
    }
    let u = User::new();
    u.configure(
        "id; cat /proc/self/uid_map /proc/self/gid_map; grep -E '^Cap(Eff|Bnd)' /proc/self/status",
        |_| {},
    );
    let b = u.bundle_arg();
    let ours = u.rt(&["run", "--bundle", &b, &u.id]);
    let runc_root = u.xdg.join("runc").to_string_lossy().into_owned();
    let xdg = u.xdg.to_string_lossy().into_owned();
    let theirs = u.as_user(
        Path::new(RUNC),
        &["--root", &runc_root, "run", "--bundle", &b, &u.id],
        &[("XDG_RUNTIME_DIR", &xdg)],
    );
    assert_eq!(
        (ours.code, map_lines(&ours.stdout)),
        (theirs.code, map_lines(&theirs.stdout)),
        "== ours ==\n{ours}\n== runc ==\n{theirs}"
    );
    u.assert_no_debris();
}

// ---------------------------------------------------------------------------
// Mapping validation (as root): each error names the range at fault, and a
// failed create leaves nothing.
// ---------------------------------------------------------------------------

#[track_caller]
fn refused(edit: impl FnOnce(&mut Container), field: &str, also: &str) {
    let mut c = Container::new();
    c.namespace("user", None);
    edit(&mut c);
    c.write_config();
    let out = c.create();
    out.assert_fail();
    c.assert_no_debris(None);
    assert!(c.root_leftovers().is_empty(), "{:?}", c.root_leftovers());
    check_our_message(&out, &format!("name {field} ({also})"), |e| {
        e.contains(field) && e.contains(also)
    });
}

#[test]
fn a_range_of_size_zero_is_refused() {
    refused(
        |c| {
            c.uid_mappings(&[(0, 100000, 1000), (1000, 200000, 0)])
                .gid_mappings(&[(0, 100000, 1000)]);
        },
        "linux.uidMappings[1]",
        "size is 0",
    );
}

#[test]
fn a_range_past_the_largest_id_is_refused() {
    refused(
        |c| {
            c.uid_mappings(&[(0, 100000, 1000)])
                .gid_mappings(&[(0, 100000, 1000), (4294966296, 300000, 1000)]);
        },
        "linux.gidMappings[1]",
        "containerID",
    );
    refused(
        |c| {
            c.uid_mappings(&[(0, 4294967000, 1000)])
                .gid_mappings(&[(0, 100000, 1000)]);
        },
        "linux.uidMappings[0]",
        "hostID",
    );
}

#[test]
fn overlapping_ranges_are_refused() {
    refused(
        |c| {
            c.uid_mappings(&[(0, 100000, 1000), (500, 200000, 1000)])
                .gid_mappings(&[(0, 100000, 1000)]);
        },
        "linux.uidMappings[1]",
        "container ids 500-1499 overlap",
    );
    refused(
        |c| {
            c.uid_mappings(&[(0, 100000, 1000)])
                .gid_mappings(&[(0, 100000, 1000), (1000, 100999, 10)]);
        },
        "linux.gidMappings[1]",
        "host ids 100999-101008 overlap",
    );
}

#[test]
fn more_ranges_than_the_kernel_takes_are_refused() {
    let many: Vec<(u32, u32, u32)> = (0..341).map(|i| (i * 10, 100000 + i * 10, 10)).collect();
    refused(
        |c| {
            c.uid_mappings(&many).gid_mappings(&[(0, 100000, 1000)]);
        },
        "linux.uidMappings",
        "341 ranges",
    );
}

#[test]
fn a_new_user_namespace_needs_both_maps() {
    refused(|_| {}, "linux.uidMappings", "new user namespace");
    refused(
        |c| {
            c.uid_mappings(&[(0, 100000, 1000)]);
        },
        "linux.gidMappings",
        "new user namespace",
    );
}

#[test]
fn maps_without_a_user_namespace_are_refused() {
    refused(
        |c| {
            c.remove_namespace("user")
                .gid_mappings(&[(0, 100000, 1000)]);
        },
        "linux.gidMappings",
        "without a user namespace",
    );
}

/// The kernel takes a map in one write of less than a page: 340 short ranges
/// fit and arrive whole, 300 long ones do not and are refused up front.
#[test]
fn the_largest_maps_the_kernel_takes_are_written_and_longer_ones_refused() {
    let many: Vec<(u32, u32, u32)> = (0..340).map(|i| (i, 5000 + i, 1)).collect();
    let mut c = Container::new();
    c.namespace("user", None)
        .uid_mappings(&many)
        .gid_mappings(&[(0, 5000, 340)])
        .sh("wc -l < /proc/self/uid_map; tail -n 1 /proc/self/uid_map");
    c.chown_rootfs(5000, 5000);
    let out = c.run();
    out.assert_ok();
    assert_eq!(map_lines(&out.stdout), ["340", "339 5339 1"], "{out}");

    let long: Vec<(u32, u32, u32)> = (0..300).map(|i| (i, 10_000_000 + i, 1)).collect();
    refused(
        |c| {
            c.uid_mappings(&long).gid_mappings(&[(0, 10_000_000, 300)]);
        },
        "linux.uidMappings",
        "bytes of id map",
    );
}

/// `--rootless false` (runc's switch) makes the cgroup the user cannot write an
/// error again; a value other than auto/true/false is refused.
#[test]
fn rootless_false_makes_an_unwritable_cgroup_an_error() {
    let u = User::new();
    u.configure("true", |_| {});
    let b = u.bundle_arg();
    let out = u.rt(&["--rootless", "false", "create", "--bundle", &b, &u.id]);
    out.assert_fail();
    assert!(out.stderr.contains("cgroup"), "{out}");
    u.assert_no_debris();
    let out = u.rt(&["--rootless", "maybe", "create", "--bundle", &b, &u.id]);
    out.assert_fail();
    assert!(
        out.stderr.contains("--rootless") && out.stderr.contains("maybe"),
        "{out}"
    );
    u.assert_no_debris();
    u.rt(&["--rootless", "true", "run", "--bundle", &b, &u.id])
        .assert_ok();
}

/// oomScoreAdj reaches a process in a user namespace (the init inherits it from
/// the runtime): raised by an unprivileged user; lowered below the caller's it
/// is an error naming the field, as for any process without CAP_SYS_RESOURCE.
#[test]
fn oom_score_adj_in_a_user_namespace() {
    let u = User::new();
    u.configure("cat /proc/self/oom_score_adj", |c| {
        c["process"]["oomScoreAdj"] = json!(500);
    });
    let b = u.bundle_arg();
    let out = u.rt(&["run", "--bundle", &b, &u.id]);
    assert_eq!(out.assert_ok().stdout.trim(), "500", "{out}");
    u.configure("cat /proc/self/oom_score_adj", |c| {
        c["process"]["oomScoreAdj"] = json!(-500);
    });
    let out = u.rt(&["run", "--bundle", &b, &u.id]);
    out.assert_fail();
    assert!(out.stderr.contains("process.oomScoreAdj -500"), "{out}");
    u.assert_no_debris();

    // As root, with a user namespace mapping container root to an unprivileged host id.
    let mut c = Container::new();
    c.namespace("user", None)
        .uid_mappings(&[(0, 100000, 65536)])
        .gid_mappings(&[(0, 100000, 65536)])
        .oom_score_adj(100)
        .sh("cat /proc/self/oom_score_adj");
    c.chown_rootfs(100000, 100000);
    let out = c.run();
    assert_eq!(out.assert_ok().stdout.trim(), "100", "{out}");
}

/// The config `spec --rootless` writes asks for a terminal: with a console
/// socket, the container's shell gets a pty of its own (devpts inside the user
/// namespace) owned by its root.
#[test]
fn spec_rootless_terminal_through_a_console_socket() {
    let u = User::new();
    let mut c = u.config();
    assert_eq!(c["process"]["terminal"], json!(true));
    c["process"]["args"] = json!(["sh", "-c", "tty; stat -c %u $(tty); echo done"]);
    fs::write(
        u.bundle.join("config.json"),
        serde_json::to_string_pretty(&c).expect("serialize"),
    )
    .expect("write config.json");
    let dir = u.base.join("console");
    fs::create_dir(&dir).expect("mkdir");
    let sock = console::ConsoleSocket::new(&dir);
    // The user must be able to connect to it.
    host_cmd(
        "/usr/bin/chown",
        &["-R", &u.uid.to_string(), &dir.to_string_lossy()],
    )
    .assert_ok();
    let b = u.bundle_arg();
    let s = sock.path_str();
    u.rt(&["create", "--bundle", &b, "--console-socket", &s, &u.id])
        .assert_ok();
    let mut pty = sock.receive(Duration::from_secs(10));
    u.rt(&["start", &u.id]).assert_ok();
    let text = pty.read_until("done", Duration::from_secs(10));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines.len() >= 2 && lines[0].starts_with("/dev/pts/") && lines[1] == "0",
        "{text:?}"
    );
}

/// Without a user namespace an unprivileged user can make no container: the
/// error says which field, before anything exists.
#[test]
fn an_unprivileged_user_needs_a_user_namespace() {
    let u = User::new();
    u.configure("true", |c| {
        let ns = c["linux"]["namespaces"].as_array_mut().expect("namespaces");
        ns.retain(|n| n["type"] != "user");
        c["linux"]["uidMappings"] = Value::Null;
        c["linux"]["gidMappings"] = Value::Null;
    });
    let out = u.rt(&["create", "--bundle", &u.bundle_arg(), &u.id]);
    out.assert_fail();
    assert!(
        out.stderr.contains("linux.namespaces") && out.stderr.contains("user namespace"),
        "{out}"
    );
    u.assert_no_debris();
}

/// `spec --rootless` writes what `runc spec --rootless` writes (the hostname aside).
#[test]
fn spec_rootless_matches_runc() {
    if !Path::new(RUNC).exists() {
        eprintln!("SKIPPED: {RUNC} missing");
        return;
    }
    let u = User::new();
    let dir = u.base.join("runc-spec");
    fs::create_dir(&dir).expect("mkdir");
    host_cmd(
        "/usr/bin/chown",
        &[&u.uid.to_string(), &dir.to_string_lossy()],
    )
    .assert_ok();
    let d = dir.to_string_lossy().into_owned();
    u.as_user(
        Path::new(RUNC),
        &["spec", "--rootless", "--bundle", &d],
        &[],
    )
    .assert_ok();
    let read = |p: &Path| -> Value {
        let mut v: Value =
            serde_json::from_str(&fs::read_to_string(p.join("config.json")).expect("config"))
                .expect("JSON");
        v["hostname"] = Value::Null;
        v
    };
    assert_eq!(read(&u.bundle), read(&dir));
}

/// A user namespace joined by path keeps its maps: none need be given, the same
/// ones may be, different ones are an error naming the field.
#[test]
fn maps_given_for_a_joined_user_namespace_must_be_its_own() {
    let mut holder = Container::new();
    holder
        .namespace("user", None)
        .uid_mappings(&[(0, 100000, 65536)])
        .gid_mappings(&[(0, 100000, 65536)]);
    holder.chown_rootfs(100000, 100000);
    let pid = holder.start_idle();
    let path = format!("/proc/{pid}/ns/user");
    // Its pid namespace too: /proc can be mounted only for a pid namespace the joined user
    // namespace owns.
    let pid_ns = format!("/proc/{pid}/ns/pid");

    for maps in [None, Some((0, 100000, 65536))] {
        let mut c = Container::new();
        c.namespace("user", Some(&path))
            .namespace("pid", Some(&pid_ns))
            .sh("cat /proc/self/uid_map");
        if let Some(m) = maps {
            c.uid_mappings(&[m]).gid_mappings(&[m]);
        }
        c.chown_rootfs(100000, 100000);
        let out = c.run();
        assert_eq!(
            map_lines(&out.assert_ok().stdout),
            ["0 100000 65536"],
            "{out}"
        );
    }
    refused(
        |c| {
            c.namespace("user", Some(&path))
                .uid_mappings(&[(0, 100000, 65536)])
                .gid_mappings(&[(0, 200000, 65536)]);
        },
        "linux.gidMappings",
        "joined by path maps 0 100000 65536",
    );
}

// ---------------------------------------------------------------------------
// Delegated cgroups: the limits of an unprivileged user's container.
// ---------------------------------------------------------------------------

fn read_trimmed(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn procs_of(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    v.sort_unstable();
    v
}

fn state_of(u: &User) -> Value {
    serde_json::from_str(&u.rt(&["state", &u.id]).assert_ok().stdout).expect("state JSON")
}

/// A cgroup v2 subtree delegated to the user (systemd's Delegate=yes): the container's cgroup is
/// made inside it with the limits asked for, which bite; ps, kill --all, pause/resume, update
/// and events --stats work on it for the user, and delete leaves no cgroup.
#[test]
fn limits_apply_in_a_delegated_cgroup_v2_subtree() {
    if !unified_host() {
        eprintln!(
            "SKIPPED: limits_apply_in_a_delegated_cgroup_v2_subtree needs a pure cgroup v2 host \
             (it runs in the guest: scripts/test-guest rootless)"
        );
        return;
    }
    let mut u = User::new();
    let delegated = u.delegate(&[PathBuf::from(CGROUP_MOUNT)]).remove(0);
    let ctr = delegated.join("ctr");
    let cgroups_path = format!("/{CGROUP_PARENT}/{}/ctr", u.id);
    // ash gives up on a failed fork, so the loop runs in a child shell whose end is reported.
    u.configure(
        "sh -c 'i=0; while [ $i -lt 30 ]; do sleep 1000 & i=$((i+1)); done' >/tmp/out 2>&1; \
         echo loop-exit=$? >>/tmp/out; exec sleep 1000",
        |c| {
            c["root"]["readonly"] = json!(false);
            c["linux"]["cgroupsPath"] = json!(cgroups_path);
            c["linux"]["resources"] = json!({"pids": {"limit": 8}, "memory": {"limit": 64 << 20}});
        },
    );
    u.rt(&["create", "--bundle", &u.bundle_arg(), &u.id])
        .assert_ok();
    let pid = state_of(&u)["pid"].as_i64().expect("pid");
    assert_eq!(read_trimmed(&ctr.join("pids.max")), "8");
    assert_eq!(
        read_trimmed(&ctr.join("memory.max")),
        (64u64 << 20).to_string()
    );
    assert_eq!(procs_of(&ctr), [pid]);
    assert_eq!(
        read_trimmed(Path::new(&format!("/proc/{pid}/cgroup"))),
        format!("0::{cgroups_path}")
    );

    u.rt(&["start", &u.id]).assert_ok();
    let out_file = u.bundle.join("rootfs/tmp/out");
    assert!(
        wait_until(Duration::from_secs(60), || fs::read_to_string(&out_file)
            .is_ok_and(|s| s.contains("loop-exit="))),
        "the fork loop did not end: {:?}",
        fs::read_to_string(&out_file)
    );
    let out = fs::read_to_string(&out_file).expect("fork loop output");
    assert!(out.contains("can't fork"), "no fork failed inside: {out}");
    assert!(!out.contains("loop-exit=0"), "the loop finished: {out}");
    let events = read_trimmed(&ctr.join("pids.events"));
    let refused: u64 = events
        .strip_prefix("max ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("pids.events: {events}"));
    assert!(refused > 0, "pids.events: {events}");
    let procs = procs_of(&ctr);
    assert!(
        (2..=8).contains(&procs.len()) && procs.contains(&pid),
        "{procs:?}"
    );

    let ps = u.rt(&["ps", "--format", "json", &u.id]);
    let mut listed: Vec<i64> = serde_json::from_str(&ps.assert_ok().stdout).expect("ps JSON");
    listed.sort_unstable();
    assert_eq!(listed, procs, "{ps}");

    u.rt(&["pause", &u.id]).assert_ok();
    assert_eq!(read_trimmed(&ctr.join("cgroup.freeze")), "1");
    assert_eq!(state_of(&u)["status"], "paused");
    u.rt(&["resume", &u.id]).assert_ok();
    assert_eq!(read_trimmed(&ctr.join("cgroup.freeze")), "0");
    assert_eq!(state_of(&u)["status"], "running");

    u.rt(&["update", "--pids-limit", "20", "--memory", "96M", &u.id])
        .assert_ok();
    assert_eq!(read_trimmed(&ctr.join("pids.max")), "20");
    assert_eq!(
        read_trimmed(&ctr.join("memory.max")),
        (96u64 << 20).to_string()
    );

    let ev = u.rt(&["events", "--stats", &u.id]);
    let stats: Value = serde_json::from_str(ev.assert_ok().stdout.trim()).expect("events JSON");
    assert_eq!(stats["data"]["pids"]["limit"], 20, "{ev}");
    assert_eq!(stats["data"]["pids"]["current"], procs.len(), "{ev}");
    assert_eq!(
        stats["data"]["memory"]["usage"]["limit"],
        96u64 << 20,
        "{ev}"
    );
    assert!(
        stats["data"]["memory"]["usage"]["usage"].as_u64() > Some(0),
        "{ev}"
    );

    u.rt(&["kill", "--all", &u.id, "KILL"]).assert_ok();
    assert!(
        wait_until(Duration::from_secs(10), || procs_of(&ctr).is_empty()),
        "left in the cgroup: {:?}",
        procs_of(&ctr)
    );
    assert!(wait_until(Duration::from_secs(5), || state_of(&u)
        ["status"]
        == "stopped"));
    u.rt(&["delete", &u.id]).assert_ok();
    assert!(!ctr.exists(), "delete left {}", ctr.display());
    assert!(!u.state_root().join(&u.id).exists());
    // The delegated directory itself is the user's, not the container's: it stays.
    assert!(delegated.is_dir());
}

/// On a cgroup v1 (or hybrid) host, cgroups chowned to the user (v1's delegation) do not give
/// its container limits (no device rules may be written without privilege): the error says so,
/// and nothing is left in them.
#[test]
fn limits_in_a_delegated_cgroup_v1_are_refused_with_the_reason() {
    if unified_host() {
        eprintln!(
            "SKIPPED: limits_in_a_delegated_cgroup_v1_are_refused_with_the_reason needs a cgroup \
             v1 host (it runs on the v1 hybrid development host)"
        );
        return;
    }
    let mut u = User::new();
    let hierarchies: Vec<PathBuf> = ["pids", "memory", "devices", "freezer", "cpu,cpuacct"]
        .iter()
        .map(|h| Path::new(CGROUP_MOUNT).join(h))
        .filter(|h| h.is_dir())
        .collect();
    let delegated = u.delegate(&hierarchies);
    let cgroups_path = format!("/{CGROUP_PARENT}/{}/ctr", u.id);
    u.configure("true", |c| {
        c["linux"]["cgroupsPath"] = json!(cgroups_path);
        c["linux"]["resources"] = json!({"pids": {"limit": 8}});
    });
    let out = u.rt(&["create", "--bundle", &u.bundle_arg(), &u.id]);
    out.assert_fail();
    assert!(
        out.stderr.contains("linux.resources") && out.stderr.contains("cgroup v2"),
        "{out}"
    );
    u.assert_no_debris();
    for d in &delegated {
        assert!(!d.join("ctr").exists(), "left {}", d.join("ctr").display());
    }
}
