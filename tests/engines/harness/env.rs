//! One engine scenario's private world and its teardown.
//!
//! An [`EngineDir`] owns
//! * a temp dir `/tmp/lxe/<pid>-<n>` holding the engine's storage, config, sockets and logs,
//! * the name `lxe-<pid>-<n>`, used as the cgroup parent (podman) or the namespace (containerd,
//!   whose cgroups then are `/<ns>/<id>`), so that every cgroup made for the scenario lies below
//!   `/sys/fs/cgroup/<hierarchy>/lxe-<pid>-<n>`,
//! * the wrapper `bin/<runtime's file name>` the engine is pointed at: it records each call's argv,
//!   exit code and duration in `calls/` and runs the runtime under test. The file name matters:
//!   podman passes `--log-format=json --log FILE` only to runtimes named in `runtime_supports_json`.
//!
//! [`EngineDir::assert_clean`] is the debris check a scenario ends with; dropping the `EngineDir`
//! removes whatever is left (even after a failure), and leftovers of killed runs are removed once per
//! test binary.

use crate::common::{self, ExecOpts, Out};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

/// Parent of the scenarios' temp dirs; short because conmon and the shim put unix sockets below it.
pub const BASE: &str = "/tmp/lxe";
/// Prefix of the scenarios' names (cgroup parents, containerd namespaces, pods).
pub const PREFIX: &str = "lxe";
/// Upper bound for one engine command: a hanging runtime fails the scenario, it does not stall the
/// whole file.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Which runtime a scenario runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rt {
    /// `LXCRI_TEST_RUNTIME`, or the binary this crate builds.
    Ours,
    /// Debian's runc, the control.
    Runc,
}

impl Rt {
    pub fn path(self) -> PathBuf {
        match self {
            Rt::Ours => common::runtime(),
            Rt::Runc => PathBuf::from(common::RUNC),
        }
    }
}

/// One recorded runtime invocation.
#[derive(Debug, Clone)]
pub struct Call {
    pub argv: Vec<String>,
    /// `None` while it runs (or if the wrapper was killed).
    pub exit: Option<i32>,
    pub millis: Option<u64>,
    /// Files the engine handed over by path (`process.json`, `resources.json`), as the runtime
    /// got them.
    pub files: Vec<(String, String)>,
}

/// Global runc flags that take a value as the next argument.
const VALUE_FLAGS: &[&str] = &["--root", "--log", "--log-format", "--criu", "--rootless"];

impl Call {
    /// Index and name of the subcommand: the first argument that is neither a global flag nor its
    /// value.
    pub fn command(&self) -> Option<(usize, &str)> {
        let mut i = 0;
        while i < self.argv.len() {
            let a = self.argv[i].as_str();
            if VALUE_FLAGS.contains(&a) {
                i += 2;
            } else if a.starts_with('-') {
                i += 1;
            } else {
                return Some((i, a));
            }
        }
        None
    }

    /// The value of global flag `flag` (`--root X` or `--root=X`).
    pub fn global(&self, flag: &str) -> Option<&str> {
        let end = self.command().map_or(self.argv.len(), |(i, _)| i);
        let g = &self.argv[..end];
        g.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                g.get(i + 1).map(String::as_str)
            } else {
                a.strip_prefix(flag)?.strip_prefix('=')
            }
        })
    }

    /// The container id of a `create` or `run` (runc takes it as the last argument).
    pub fn created_id(&self) -> Option<&str> {
        match self.command() {
            Some((_, "create" | "run")) => self.argv.last().map(String::as_str),
            _ => None,
        }
    }

    /// A shell-ready line: the argv, then its exit code and duration.
    pub fn display(&self) -> String {
        let mut s = String::from("RUNTIME");
        for a in &self.argv {
            s.push(' ');
            s.push_str(&common::shell_quote(a.as_ref()));
        }
        match (self.exit, self.millis) {
            (Some(rc), Some(ms)) => s.push_str(&format!("   # exit {rc}, {ms} ms")),
            _ => s.push_str("   # no exit recorded (still running or killed)"),
        }
        s
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(1);
static STALE: Once = Once::new();

/// See the module documentation.
pub struct EngineDir {
    /// `lxe-<pid>-<n>`.
    pub name: String,
    /// `/tmp/lxe/<pid>-<n>`.
    pub dir: PathBuf,
    /// The runtime under test.
    pub runtime: PathBuf,
    /// What the engine is told the runtime is.
    pub wrapper: PathBuf,
    /// The libtest name of the scenario (its thread's name).
    pub test: String,
}

impl EngineDir {
    #[track_caller]
    pub fn new(rt: Rt) -> Self {
        STALE.call_once(clean_stale);
        let runtime = rt.path();
        assert!(
            runtime.is_absolute() && runtime.exists(),
            "runtime under test {} does not exist",
            runtime.display()
        );
        let n = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let dir = Path::new(BASE).join(&n);
        let _ = fs::remove_dir_all(&dir);
        for d in ["bin", "calls", "io", "tmp"] {
            fs::create_dir_all(dir.join(d)).expect("create engine test dir");
        }
        fs::write(dir.join("runtime"), runtime.as_os_str().as_encoded_bytes())
            .expect("write runtime path");
        let file_name = runtime.file_name().expect("runtime has a file name");
        let wrapper = dir.join("bin").join(file_name);
        write_wrapper(&wrapper, &dir.join("calls"), &runtime);
        let test = std::thread::current()
            .name()
            .unwrap_or("engines")
            .to_string();
        EngineDir {
            name: format!("{PREFIX}-{n}"),
            dir,
            runtime,
            wrapper,
            test,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn path_str(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }

    /// Runs `program args...` with a timeout, output captured below the temp dir.
    #[track_caller]
    pub fn exec(&self, program: &str, args: &[String]) -> Out {
        common::exec(
            Path::new(program),
            args,
            &self.path("io"),
            &ExecOpts {
                timeout: Some(CMD_TIMEOUT),
                ..Default::default()
            },
        )
    }

    /// The runtime invocations so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        read_calls(&self.path("calls"))
    }

    /// The invocations as shell lines, one per call; with `files`, followed by the JSON files
    /// the engine passed.
    pub fn call_log(&self, files: bool) -> String {
        let calls = self.calls();
        if calls.is_empty() {
            return "(the engine did not call the runtime)\n".into();
        }
        let mut s = format!("RUNTIME={}\n", self.runtime.display());
        for c in calls {
            s.push_str(&c.display());
            s.push('\n');
            if files {
                for (name, text) in &c.files {
                    s.push_str(&format!("  # {name}: {}\n", text.trim()));
                }
            }
        }
        s
    }

    /// `(--root, id)` of every container the engine created through the runtime.
    pub fn created(&self) -> Vec<(Option<String>, String)> {
        let mut v: Vec<(Option<String>, String)> = Vec::new();
        for c in self.calls() {
            if let Some(id) = c.created_id() {
                let e = (c.global("--root").map(String::from), id.to_string());
                if !v.contains(&e) {
                    v.push(e);
                }
            }
        }
        v
    }

    /// `/lxe-<pid>-<n>`: the cgroup parent given to podman.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.name)
    }

    /// Cgroup dirs below ours (in any hierarchy) whose name contains `needle`.
    pub fn cgroups_named(&self, needle: &str) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for top in self.cgroup_tops() {
            walk_dirs(&top, &mut |d| {
                if d.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(needle))
                {
                    v.push(d.to_path_buf());
                }
            });
        }
        v
    }

    /// Pids in our cgroup trees.
    pub fn cgroup_pids(&self) -> Vec<i64> {
        let mut v = Vec::new();
        for top in self.cgroup_tops() {
            walk_dirs(&top, &mut |d| {
                for l in fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                {
                    if let Ok(p) = l.trim().parse::<i64>() {
                        if !v.contains(&p) {
                            v.push(p);
                        }
                    }
                }
            });
        }
        v
    }

    fn cgroup_tops(&self) -> Vec<PathBuf> {
        cgroup_tops_named(&self.name)
    }

    /// Host mount points at or below the temp dir.
    pub fn mounts(&self) -> Vec<String> {
        common::host_mount_points_under(&self.dir)
    }

    /// Live processes (other than us) whose command line mentions the temp dir: conmon, shims,
    /// containerd.
    pub fn processes(&self) -> Vec<(i64, String)> {
        processes_mentioning(&self.dir)
    }

    /// Asserts that the engine and the runtime left nothing behind: the runtime knows none of the
    /// containers it created any more, no cgroup of theirs is left and no process runs in our
    /// cgroups, no process mentions the temp dir (except `keep_pid`, the daemon), and the only
    /// mounts below the temp dir are `allowed_mounts` (the engine's own, e.g. podman's storage
    /// bind).
    #[track_caller]
    pub fn assert_clean(&self, allowed_mounts: &[PathBuf], keep_pid: Option<i64>) {
        let mut problems = Vec::new();
        let created = self.created();
        for (root, id) in &created {
            let out = self.runtime_cmd(root.as_deref(), &["state", id]);
            if out.ok() {
                problems.push(format!(
                    "the runtime still knows container {id}:\n{}",
                    out.stdout
                ));
            }
            let cgs = self.cgroups_named(id);
            if !cgs.is_empty() {
                problems.push(format!("cgroups of {id} are left: {cgs:?}"));
            }
        }
        if !common::wait_until(Duration::from_secs(5), || self.cgroup_pids().is_empty()) {
            problems.push(format!(
                "processes are left in {}: {:?}",
                self.cgroup_parent(),
                self.cgroup_pids()
            ));
        }
        let stray = || -> Vec<(i64, String)> {
            self.processes()
                .into_iter()
                .filter(|(p, _)| Some(*p) != keep_pid)
                .collect()
        };
        if !common::wait_until(Duration::from_secs(5), || stray().is_empty()) {
            problems.push(format!("processes are left: {:?}", stray()));
        }
        let allowed: Vec<String> = allowed_mounts
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let mounts: Vec<String> = self
            .mounts()
            .into_iter()
            .filter(|m| !allowed.contains(m))
            .collect();
        if !mounts.is_empty() {
            problems.push(format!("mounts are left: {mounts:?}"));
        }
        assert!(
            problems.is_empty(),
            "debris after the scenario:\n{}\nruntime calls:\n{}",
            problems.join("\n"),
            self.call_log(false)
        );
        assert!(
            !created.is_empty(),
            "the engine never created a container through the runtime (wrapper {})",
            self.wrapper.display()
        );
    }

    /// `RUNTIME [--root ROOT] ARGS...` (the runtime itself, not the wrapper: not a recorded call).
    pub fn runtime_cmd(&self, root: Option<&str>, args: &[&str]) -> Out {
        let mut a: Vec<String> = Vec::new();
        if let Some(r) = root {
            a.extend(["--root".to_string(), r.to_string()]);
        }
        a.extend(args.iter().map(|s| s.to_string()));
        self.exec(&self.runtime.to_string_lossy(), &a)
    }
}

impl Drop for EngineDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- runtime calls of {} ---\n{}",
                self.test,
                self.call_log(false)
            );
        }
        if let Some(d) = std::env::var_os("LXCRI_ENGINES_CALLS") {
            let d = PathBuf::from(d);
            let _ = fs::create_dir_all(&d);
            let file = d.join(format!("{}.log", self.test.replace("::", ".")));
            let _ = fs::write(file, self.call_log(true));
        }
        teardown(&self.dir, &self.name);
    }
}

/// Removes everything a scenario (or a killed run of one) may have left: containers the runtime
/// still knows, processes, cgroups, mounts, the temp dir.
fn teardown(dir: &Path, name: &str) {
    if let Ok(runtime) = fs::read_to_string(dir.join("runtime")) {
        let io = dir.join("io");
        for c in read_calls(&dir.join("calls")) {
            let Some(id) = c.created_id() else { continue };
            let mut args: Vec<String> = Vec::new();
            if let Some(r) = c.global("--root") {
                args.extend(["--root".to_string(), r.to_string()]);
            }
            args.extend(["delete".to_string(), "--force".to_string(), id.to_string()]);
            let _ = std::panic::catch_unwind(|| {
                common::exec(
                    Path::new(&runtime),
                    &args,
                    &io,
                    &ExecOpts {
                        timeout: Some(Duration::from_secs(20)),
                        ..Default::default()
                    },
                )
            });
        }
    }
    for (pid, _) in processes_mentioning(dir) {
        let _ = common::host_cmd("/bin/kill", &["-KILL", &pid.to_string()]);
    }
    for top in cgroup_tops_named(name) {
        common::remove_cgroup_tree(&top);
    }
    common::remove_tree(dir);
}

/// Removes the leftovers of earlier runs whose test process is gone.
fn clean_stale() {
    let _ = fs::create_dir_all(BASE);
    let Ok(rd) = fs::read_dir(BASE) else { return };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some((pid, _)) = n.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        teardown(&e.path(), &format!("{PREFIX}-{n}"));
    }
}

/// `/sys/fs/cgroup/*/<name>` that exist.
fn cgroup_tops_named(name: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(common::CGROUP_MOUNT) {
        for h in rd.flatten() {
            let d = h.path().join(name);
            if d.is_dir() {
                v.push(d);
            }
        }
    }
    v
}

fn walk_dirs(dir: &Path, f: &mut dyn FnMut(&Path)) {
    f(dir);
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk_dirs(&e.path(), f);
            }
        }
    }
}

fn processes_mentioning(dir: &Path) -> Vec<(i64, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let me = i64::from(std::process::id());
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        if pid == me || !common::pid_alive(pid) {
            continue;
        }
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Match whole path components: /tmp/lxe/1-1 must not match /tmp/lxe/1-10.
        let hit = cmd.match_indices(&needle).any(|(i, _)| {
            cmd[i + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| c == '/' || c == ' ' || c == '"' || c == '=')
        });
        if hit {
            v.push((pid, cmd.trim_end().to_string()));
        }
    }
    v
}

fn read_calls(dir: &Path) -> Vec<Call> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".argv")
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| {
            let raw = fs::read(dir.join(format!("{n}.argv"))).ok()?;
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            // printf '%s\0' ends every argument with a NUL: drop the empty tail.
            let argv = argv[..argv.len().saturating_sub(1)].to_vec();
            let rc = fs::read_to_string(dir.join(format!("{n}.rc"))).unwrap_or_default();
            let f: Vec<&str> = rc.split_whitespace().collect();
            let exit = f.first().and_then(|s| s.parse().ok());
            let millis = match (f.get(1), f.get(2)) {
                (Some(a), Some(b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                    (Ok(a), Ok(b)) => Some(b.saturating_sub(a) / 1000),
                    _ => None,
                },
                _ => None,
            };
            let files = ["process", "resources"]
                .iter()
                .filter_map(|k| {
                    let text = fs::read_to_string(dir.join(format!("{n}.{k}.json"))).ok()?;
                    Some((format!("{k}.json"), text))
                })
                .collect();
            Some(Call {
                argv,
                exit,
                millis,
                files,
            })
        })
        .collect()
}

/// The runtime stand-in: records, runs, records the exit code. It runs the runtime as a child
/// (rather than exec'ing it) to see the exit code; that changes nothing the engines rely on: conmon
/// and the shim are child subreapers, so a container's init still ends up as their child.
fn write_wrapper(path: &Path, calls: &Path, runtime: &Path) {
    let q = |p: &Path| common::shell_quote(p.as_os_str());
    let script = format!(
        r#"#!/bin/bash
# Written by the engine tests (tests/engines): records this call, then runs the runtime under test.
t0=${{EPOCHREALTIME/./}}
rec={calls}/$t0-$$
printf '%s\0' "$@" >"$rec.argv"
# Keep the process.json (exec) and resources (update) the engine handed over; it may delete them.
prev=
for a in "$@"; do
  case $prev in --process|--resources) [ "$a" = - ] || cp -- "$a" "$rec.${{prev#--}}.json" 2>/dev/null ;; esac
  case $a in --process=*|--resources=*) f=${{a#*=}}; n=${{a%%=*}}; cp -- "$f" "$rec.${{n#--}}.json" 2>/dev/null ;; esac
  prev=$a
done
{runtime} "$@"
rc=$?
echo "$rc $t0 ${{EPOCHREALTIME/./}}" >"$rec.rc"
exit $rc
"#,
        calls = q(calls),
        runtime = q(runtime),
    );
    fs::write(path, script).expect("write runtime wrapper");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod runtime wrapper");
}
