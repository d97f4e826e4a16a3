//! Shared harness for the proxmox-lxcri integration tests.
//!
//! The tests drive a runtime binary through runc's command line. Which binary
//! is chosen by `LXCRI_TEST_RUNTIME` (e.g. `/usr/sbin/runc`); by default it is
//! the `proxmox-lxcri` binary built by this crate.
//!
//! Every [`Container`] gets a unique number `n` and with it
//! * the container id `lxcri-test-<pid>-<n>`,
//! * its own state root `--root /run/lxcri-test/<pid>-<n>`,
//! * its own scratch dir `/tmp/lxcri-test/<pid>-<n>` holding the bundle
//!   (`bundle/`, with `config.json` and `rootfs/`), host-side files (`host/`)
//!   and the captured output of runtime invocations (`io/`),
//! * the cgroup path `/lxcri-test/<id>`.
//!
//! Dropping the [`Container`] force-deletes the container, removes leftover
//! cgroups of that id, detaches leftover host mounts below its scratch dir and
//! removes the scratch and root dirs, so that a failing test cleans up too.
//! Leftovers of an earlier, interrupted run (a `<pid>` that is no longer alive)
//! are cleaned once per test binary before the first container is made.
#![allow(dead_code)]

pub mod cgroup_checks;
pub mod console;

use serde_json::{json, Value};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

pub mod helpers;

/// The reference runtime the suite is validated against.
pub const RUNC: &str = "/usr/sbin/runc";
/// Prefix of every container id, netns name and cgroup made by the suite.
pub const PREFIX: &str = "lxcri-test";
/// Parent of the per-container `--root` dirs.
pub const STATE_BASE: &str = "/run/lxcri-test";
/// Parent of the per-container scratch dirs (bundle, host files, output).
pub const TMP_BASE: &str = "/tmp/lxcri-test";
/// Parent cgroup (relative to each hierarchy's root) of all test containers.
pub const CGROUP_PARENT: &str = "lxcri-test";
/// Where cgroup hierarchies are mounted on the host.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// Upper bound for a single runtime invocation; a hung runtime fails the test.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// Applets linked to busybox in every rootfs.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "id", "ls", "grep", "sleep", "hostname", "mount", "umount", "touch",
    "readlink", "stat", "mknod", "true", "false", "kill", "ps", "mkdir", "rm", "test", "wc",
    "head", "tail", "cut", "sed", "awk", "env", "pwd", "tr", "sort", "printf", "dd", "ln", "chmod",
    "chown", "sysctl", "seq", "uname", "whoami", "xargs", "find", "nproc",
];

// ---------------------------------------------------------------------------
// Runtime selection
// ---------------------------------------------------------------------------

/// The runtime under test.
pub fn runtime() -> PathBuf {
    match std::env::var_os("LXCRI_TEST_RUNTIME") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_proxmox-lxcri")),
    }
}

/// The binary this crate builds.
pub fn our_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_proxmox-lxcri"))
}

/// Whether the runtime under test is proxmox-lxcri (and not e.g. runc).
pub fn is_ours() -> bool {
    let rt = runtime();
    let ours = our_binary();
    if let (Ok(a), Ok(b)) = (fs::canonicalize(&rt), fs::canonicalize(&ours)) {
        if a == b {
            return true;
        }
    }
    rt.file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|n| n.starts_with("proxmox-lxcri"))
}

/// Whether the runtime under test reports itself as runc 1.1.x (which lacks a
/// few newer spec features, e.g. `domainname`).
pub fn runtime_is_runc_1_1() -> bool {
    if is_ours() {
        return false;
    }
    let rt = runtime();
    let out = host_cmd(&rt.to_string_lossy(), &["--version"]);
    out.stdout.starts_with("runc version 1.1.")
}

/// For tests that check proxmox-lxcri's own error messages: returns `true`
/// (after saying so) when the runtime under test is not ours, in which case
/// the caller returns early. Against our binary it always returns `false`.
pub fn skip_unless_ours() -> bool {
    if is_ours() {
        false
    } else {
        eprintln!(
            "skipped: runc-specific message (this test checks proxmox-lxcri's own \
             wording; runtime under test is {})",
            runtime().display()
        );
        true
    }
}

/// Checks `check` on a failure message (stderr) only when the runtime is ours;
/// for other runtimes it notes that the wording check was skipped.
#[track_caller]
pub fn check_our_message(out: &Out, what: &str, check: impl FnOnce(&str) -> bool) {
    if is_ours() {
        assert!(check(&out.stderr), "stderr does not {what}:\n{out}");
    } else {
        eprintln!("skipped: runc-specific message ({what})");
    }
}

/// Like [`check_our_message`], for any text (e.g. a log file).
#[track_caller]
pub fn check_our_text(text: &str, what: &str, check: impl FnOnce(&str) -> bool) {
    if is_ours() {
        assert!(check(text), "text does not {what}:\n{text}");
    } else {
        eprintln!("skipped: runc-specific message ({what})");
    }
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// Result of one command invocation.
#[derive(Debug, Clone)]
pub struct Out {
    pub cmdline: String,
    pub stdout: String,
    pub stderr: String,
    /// Exit code; `-N` if the command itself was killed by signal N.
    pub code: i32,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "command failed:\n{self}");
        self
    }

    /// The command failed cleanly (non-zero exit, not killed by a signal).
    #[track_caller]
    pub fn assert_fail(&self) -> &Self {
        assert!(
            self.code > 0,
            "command should have failed with an exit code:\n{self}"
        );
        self
    }

    /// stdout split into trimmed lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().map(str::trim_end).collect()
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        writeln!(f, "exit code: {}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

pub fn exit_code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => -s,
        _ => i32::MIN,
    }
}

pub fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Options for [`exec`].
#[derive(Default, Clone)]
pub struct ExecOpts {
    /// Working directory of the command.
    pub cwd: Option<PathBuf>,
    /// If set, the command gets this file open (append) as fd 3.
    pub fd3: Option<PathBuf>,
    /// Defaults to [`CMD_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Extra environment variables for the command.
    pub env: Vec<(String, String)>,
}

static IO_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A command started in the background, stdout/stderr going to files.
pub struct Running {
    child: Option<Child>,
    pub cmdline: String,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Running {
    /// The host pid of the command.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Output written so far to stdout.
    pub fn stdout_so_far(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Waits until stdout contains `needle`; panics after `timeout`.
    #[track_caller]
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout_so_far().contains(needle) {
                return;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let out = self.collect(exit_code(st));
                panic!("command exited before printing {needle:?}:\n{out}");
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {needle:?} on stdout of `{}`; stdout so far:\n{}",
                    self.cmdline,
                    self.stdout_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn collect(&self, code: i32) -> Out {
        Out {
            cmdline: self.cmdline.clone(),
            stdout: fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr_path).unwrap_or_default(),
            code,
        }
    }

    /// Waits for the command to exit; kills it and panics after `timeout`.
    #[track_caller]
    pub fn wait(mut self, timeout: Duration) -> Out {
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return self.collect(exit_code(st)),
                Ok(None) => {}
                Err(e) => panic!("waiting for `{}`: {e}", self.cmdline),
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let out = self.collect(i32::MIN);
                panic!("command timed out after {timeout:?}:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `program args...` with stdin = /dev/null and stdout/stderr going to
/// fresh files in `io_dir`.
pub fn spawn<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    io_dir: &Path,
    opts: &ExecOpts,
) -> Running {
    fs::create_dir_all(io_dir).expect("create io dir");
    let seq = IO_SEQ.fetch_add(1, Ordering::SeqCst);
    let stdout_path = io_dir.join(format!("{seq}.out"));
    let stderr_path = io_dir.join(format!("{seq}.err"));
    let stdout = fs::File::create(&stdout_path).expect("create stdout file");
    let stderr = fs::File::create(&stderr_path).expect("create stderr file");

    let mut cmdline = shell_quote(program.as_os_str());
    for a in args {
        cmdline.push(' ');
        cmdline.push_str(&shell_quote(a.as_ref()));
    }

    let mut cmd = match &opts.fd3 {
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        Some(fd3) => {
            // std::process cannot hand out extra fds; let a shell do it.
            cmdline.push_str(&format!(" 3>>{}", shell_quote(fd3.as_os_str())));
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg(r#"f=$LXCRI_TEST_FD3; unset LXCRI_TEST_FD3; exec "$@" 3>>"$f""#)
                .arg("sh")
                .arg(program)
                .args(args)
                .env("LXCRI_TEST_FD3", fd3);
            c
        }
    };
    if let Some(cwd) = &opts.cwd {
        cmd.current_dir(cwd);
    }
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn `{cmdline}`: {e}"));
    Running {
        child: Some(child),
        cmdline,
        stdout_path,
        stderr_path,
    }
}

/// Runs `program args...` to completion (see [`spawn`]).
#[track_caller]
pub fn exec<S: AsRef<OsStr>>(program: &Path, args: &[S], io_dir: &Path, opts: &ExecOpts) -> Out {
    spawn(program, args, io_dir, opts).wait(opts.timeout.unwrap_or(CMD_TIMEOUT))
}

/// Runs a host tool (ip, umount, chown, ...) with a private io dir.
#[track_caller]
pub fn host_cmd(program: &str, args: &[&str]) -> Out {
    let io = Path::new(TMP_BASE).join(format!(
        "{}-h{}",
        std::process::id(),
        IO_SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let out = exec(Path::new(program), args, &io, &ExecOpts::default());
    let _ = fs::remove_dir_all(&io);
    out
}

/// Polls `cond` every 10ms until it holds; returns whether it did in time.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Host inspection
// ---------------------------------------------------------------------------

/// Whether `pid` is a live (non-zombie) process on the host.
pub fn pid_alive(pid: i64) -> bool {
    if pid <= 0 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
    }
}

/// A field of the host's `/proc/<pid>/status` (e.g. "Uid"), if readable.
pub fn proc_status_field(pid: i64, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// Decodes the octal escapes (`\040` etc.) used in mountinfo paths.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One parsed line of a mountinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u64,
    pub parent: u64,
    pub root: String,
    pub mount_point: String,
    pub options: Vec<String>,
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: Vec<String>,
    pub line: String,
}

impl MountInfo {
    pub fn has_option(&self, o: &str) -> bool {
        self.options.iter().any(|x| x == o)
    }
    /// The `shared:N` peer group tag, if any.
    pub fn shared(&self) -> Option<&str> {
        self.optional
            .iter()
            .find(|t| t.starts_with("shared:"))
            .map(String::as_str)
    }
}

/// Parses the text of a `/proc/<pid>/mountinfo` file.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (pre, post) = line
                .split_once(" - ")
                .unwrap_or_else(|| panic!("bad mountinfo line: {line}"));
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            assert!(f.len() >= 6 && p.len() >= 3, "bad mountinfo line: {line}");
            MountInfo {
                id: f[0].parse().unwrap_or(0),
                parent: f[1].parse().unwrap_or(0),
                root: unescape_mountinfo(f[3]),
                mount_point: unescape_mountinfo(f[4]),
                options: f[5].split(',').map(String::from).collect(),
                optional: f[6..].iter().map(|s| s.to_string()).collect(),
                fstype: p[0].to_string(),
                source: unescape_mountinfo(p[1]),
                super_options: p[2].split(',').map(String::from).collect(),
                line: line.to_string(),
            }
        })
        .collect()
}

/// Lines of the host's mountinfo that mention `path` (as source root or mount
/// point).
pub fn host_mounts_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read host mountinfo");
    parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.mount_point.contains(&needle) || m.root.contains(&needle))
        .map(|m| m.line)
        .collect()
}

/// Host mount points at or below `dir`, deepest first.
pub fn host_mount_points_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<String> = parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|mp| mp == &prefix || mp.starts_with(&format!("{prefix}/")))
        .collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v.dedup();
    v
}

/// Lazily unmounts every host mount at or below `dir`. Returns whether none
/// is left.
pub fn detach_mounts_under(dir: &Path) -> bool {
    for _ in 0..5 {
        let mps = host_mount_points_under(dir);
        if mps.is_empty() {
            return true;
        }
        for mp in mps {
            let _ = host_cmd("/usr/bin/umount", &["-l", &mp]);
        }
    }
    host_mount_points_under(dir).is_empty()
}

/// Removes `dir` recursively, but only after making sure no host mount below it
/// is left (so that we never delete through a bind mount into host files).
pub fn remove_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if detach_mounts_under(dir) {
        let _ = fs::remove_dir_all(dir);
    } else {
        eprintln!(
            "warning: not removing {}: mounts are left below it",
            dir.display()
        );
    }
}

/// Whether `/sys/fs/cgroup` is the root of the unified hierarchy (a pure cgroup
/// v2 host, e.g. the guest of `scripts/guest`) rather than a tmpfs of v1 (or
/// hybrid) hierarchies.
pub fn unified_host() -> bool {
    Path::new(CGROUP_MOUNT).join("cgroup.controllers").exists()
}

/// The roots of the host's cgroup hierarchies: `/sys/fs/cgroup` itself on a
/// pure v2 host, else each hierarchy mounted below it.
fn hierarchy_roots() -> Vec<PathBuf> {
    if unified_host() {
        return vec![PathBuf::from(CGROUP_MOUNT)];
    }
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(CGROUP_MOUNT) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                v.push(e.path());
            }
        }
    }
    v
}

/// Existing cgroup dirs of container `id` (one per hierarchy).
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = hierarchy_roots()
        .into_iter()
        .map(|h| h.join(CGROUP_PARENT).join(id))
        .filter(|d| d.is_dir())
        .collect();
    v.sort();
    v
}

/// Pids listed in `cgroup.procs` of container `id`'s cgroup in `hierarchy`
/// (e.g. "pids", "unified"; ignored on a pure v2 host, which has one).
pub fn cgroup_procs(id: &str, hierarchy: &str) -> Vec<i64> {
    let root = if unified_host() {
        PathBuf::from(CGROUP_MOUNT)
    } else {
        Path::new(CGROUP_MOUNT).join(hierarchy)
    };
    let p = root.join(CGROUP_PARENT).join(id).join("cgroup.procs");
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills the processes in the cgroup dirs of `id` (which only the suite
/// creates) and removes the dirs, innermost first.
fn remove_cgroups_of(id: &str) {
    for dir in cgroup_dirs(id) {
        remove_cgroup_tree(&dir);
    }
}

pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // A frozen cgroup would keep its killed processes around.
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    let _ = fs::write(dir.join("cgroup.freeze"), "0");
    let _ = wait_until(Duration::from_secs(5), || {
        let procs: Vec<i64> = fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for p in &procs {
            let _ = host_cmd("/bin/kill", &["-KILL", &p.to_string()]);
        }
        procs.is_empty()
    });
    let _ = wait_until(Duration::from_secs(5), || {
        fs::remove_dir(dir).is_ok() || !dir.exists()
    });
}

// ---------------------------------------------------------------------------
// Unique names and stale leftovers
// ---------------------------------------------------------------------------

static SEQ: AtomicUsize = AtomicUsize::new(1);
static INIT: Once = Once::new();

/// A fresh `<pid>-<n>` suffix.
pub fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh `lxcri-test-<pid>-<n>` name.
pub fn unique_name() -> String {
    format!("{PREFIX}-{}", unique_suffix())
}

/// Returns the `<pid>` of a `<pid>-<n>` or `lxcri-test-<pid>-<n>` name if it
/// belongs to a test process that is gone.
fn dead_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(&format!("{PREFIX}-")).unwrap_or(name);
    let (pid, tail) = rest.split_once('-')?;
    let pid: u32 = pid.parse().ok()?;
    if tail.is_empty() || pid == std::process::id() {
        return None;
    }
    // A killed test binary may linger as a zombie until it is reaped.
    if pid_alive(pid.into()) {
        return None;
    }
    Some(pid)
}

/// Removes leftovers of earlier runs of the suite whose process is gone.
pub fn clean_stale() {
    INIT.call_once(|| {
        let _ = fs::create_dir_all(STATE_BASE);
        let _ = fs::create_dir_all(TMP_BASE);
        let io = Path::new(TMP_BASE).join(format!("{}-cleanup", std::process::id()));

        // State roots: let the runtimes delete what they know about.
        if let Ok(rd) = fs::read_dir(STATE_BASE) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if dead_owner(&name).is_none() {
                    continue;
                }
                let root = e.path();
                if let Ok(ids) = fs::read_dir(&root) {
                    for id in ids.flatten() {
                        let id = id.file_name();
                        for rt in [runtime(), PathBuf::from(RUNC)] {
                            let args: Vec<OsString> = vec![
                                "--root".into(),
                                root.clone().into(),
                                "delete".into(),
                                "--force".into(),
                                id.clone(),
                            ];
                            let _ = exec(
                                &rt,
                                &args,
                                &io,
                                &ExecOpts {
                                    timeout: Some(Duration::from_secs(20)),
                                    ..Default::default()
                                },
                            );
                        }
                    }
                }
                remove_tree(&root);
            }
        }

        // Cgroups of dead runs.
        for h in hierarchy_roots() {
            let parent = h.join(CGROUP_PARENT);
            if let Ok(cgs) = fs::read_dir(&parent) {
                for cg in cgs.flatten() {
                    let name = cg.file_name().to_string_lossy().into_owned();
                    if cg.path().is_dir() && dead_owner(&name).is_some() {
                        remove_cgroup_tree(&cg.path());
                    }
                }
            }
        }

        // Network namespaces of dead runs.
        if let Ok(rd) = fs::read_dir("/var/run/netns") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(PREFIX) && dead_owner(&name).is_some() {
                    let _ = host_cmd("/usr/sbin/ip", &["netns", "del", &name]);
                }
            }
        }

        // Scratch dirs (bundles, host dirs) of dead runs.
        if let Ok(rd) = fs::read_dir(TMP_BASE) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if dead_owner(&name).is_some() {
                    remove_tree(&e.path());
                }
            }
        }
        remove_tree(&io);
    });
}

// ---------------------------------------------------------------------------
// Config helpers
// ---------------------------------------------------------------------------

/// The config `runc spec` writes (spec 1.0.2-dev), with `terminal: false`.
pub fn default_config(cgroups_path: &str) -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }
            ],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "lxcri-test",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {
                "devices": [ { "allow": false, "access": "rwm" } ]
            },
            "namespaces": [
                { "type": "pid" },
                { "type": "network" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Sets the value at JSON pointer `ptr`, creating intermediate objects.
pub fn set_pointer(root: &mut Value, ptr: &str, value: Value) {
    assert!(
        ptr.starts_with('/'),
        "JSON pointer must start with '/': {ptr}"
    );
    let mut cur = root;
    let parts: Vec<&str> = ptr[1..].split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Value::Array(a) = cur {
            let idx: usize = part.parse().expect("array index");
            if last {
                a[idx] = value;
                return;
            }
            cur = &mut a[idx];
            continue;
        }
        if !cur.is_object() {
            *cur = json!({});
        }
        let obj = cur.as_object_mut().unwrap();
        if last {
            obj.insert(part.to_string(), value);
            return;
        }
        cur = obj.entry(part.to_string()).or_insert_with(|| json!({}));
    }
}

/// Builds the busybox rootfs at `rootfs`.
pub fn build_rootfs(rootfs: &Path) {
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "etc",
        "root",
        "mnt",
        "home/test",
    ] {
        fs::create_dir_all(rootfs.join(d)).expect("create rootfs dir");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox");
    for a in APPLETS {
        symlink("busybox", rootfs.join("bin").join(a)).expect("link applet");
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         test:x:1000:1000:test:/home/test:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ntest:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
}

// ---------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------

/// One test container: unique id, own state root, own bundle, and a builder for
/// its config. Cleans everything up when dropped.
pub struct Container {
    pub n: String,
    pub id: String,
    /// `--root` of the runtime.
    pub root: PathBuf,
    /// Scratch dir holding `bundle/`, `host/`, `io/`.
    pub base: PathBuf,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// A host dir for the test's own files (bind mount sources etc.).
    pub host: PathBuf,
    pub io: PathBuf,
    pub config: Value,
    pub runtime: PathBuf,
    /// stdout/stderr files given to the last successful `create`/`run --detach`.
    last_detached: std::cell::RefCell<Option<(PathBuf, PathBuf)>>,
}

impl Container {
    /// A container for the runtime under test.
    pub fn new() -> Self {
        Self::with_runtime(runtime())
    }

    /// A container for runc, whatever the runtime under test is.
    pub fn runc() -> Self {
        Self::with_runtime(PathBuf::from(RUNC))
    }

    pub fn with_runtime(rt: PathBuf) -> Self {
        clean_stale();
        let n = unique_suffix();
        let id = format!("{PREFIX}-{n}");
        let root = Path::new(STATE_BASE).join(&n);
        let base = Path::new(TMP_BASE).join(&n);
        let bundle = base.join("bundle");
        let rootfs = bundle.join("rootfs");
        let host = base.join("host");
        let io = base.join("io");
        for d in [&bundle, &host, &io] {
            fs::create_dir_all(d).expect("create scratch dir");
        }
        build_rootfs(&rootfs);
        let config = default_config(&format!("/{CGROUP_PARENT}/{id}"));
        Container {
            n,
            id,
            root,
            base,
            bundle,
            rootfs,
            host,
            io,
            config,
            runtime: rt,
            last_detached: Default::default(),
        }
    }

    // ----- config builder -------------------------------------------------

    pub fn set(&mut self, ptr: &str, v: Value) -> &mut Self {
        set_pointer(&mut self.config, ptr, v);
        self
    }

    pub fn remove(&mut self, ptr: &str) -> &mut Self {
        let (parent, key) = ptr.rsplit_once('/').expect("pointer");
        if let Some(obj) = self
            .config
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
        {
            obj.remove(key);
        }
        self
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    /// `sh -c SCRIPT`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    pub fn env(&mut self, env: &[&str]) -> &mut Self {
        self.set("/process/env", json!(env))
    }

    pub fn add_env(&mut self, kv: &str) -> &mut Self {
        self.config["process"]["env"]
            .as_array_mut()
            .expect("process.env")
            .push(json!(kv));
        self
    }

    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.set("/process/cwd", json!(cwd))
    }

    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.set("/process/user/uid", json!(uid))
            .set("/process/user/gid", json!(gid))
    }

    pub fn additional_gids(&mut self, gids: &[u32]) -> &mut Self {
        self.set("/process/user/additionalGids", json!(gids))
    }

    pub fn umask(&mut self, umask: u32) -> &mut Self {
        self.set("/process/user/umask", json!(umask))
    }

    /// Sets (replacing an entry of the same type) an rlimit.
    pub fn rlimit(&mut self, typ: &str, soft: u64, hard: u64) -> &mut Self {
        let rl = self.config["process"]["rlimits"]
            .as_array_mut()
            .expect("process.rlimits");
        rl.retain(|r| r["type"] != typ);
        rl.push(json!({ "type": typ, "soft": soft, "hard": hard }));
        self
    }

    /// Sets the bounding, effective and permitted sets to `caps` and drops the
    /// ambient set.
    pub fn capabilities(&mut self, caps: &[&str]) -> &mut Self {
        self.set(
            "/process/capabilities",
            json!({ "bounding": caps, "effective": caps, "permitted": caps }),
        )
    }

    pub fn no_new_privileges(&mut self, on: bool) -> &mut Self {
        self.set("/process/noNewPrivileges", json!(on))
    }

    pub fn oom_score_adj(&mut self, v: i32) -> &mut Self {
        self.set("/process/oomScoreAdj", json!(v))
    }

    pub fn readonly(&mut self, ro: bool) -> &mut Self {
        self.set("/root/readonly", json!(ro))
    }

    pub fn hostname(&mut self, h: &str) -> &mut Self {
        self.set("/hostname", json!(h))
    }

    pub fn domainname(&mut self, d: &str) -> &mut Self {
        self.set("/domainname", json!(d))
    }

    pub fn sysctl(&mut self, key: &str, val: &str) -> &mut Self {
        if !self.config["linux"]["sysctl"].is_object() {
            self.config["linux"]["sysctl"] = json!({});
        }
        self.config["linux"]["sysctl"][key] = json!(val);
        self
    }

    pub fn add_device(&mut self, dev: Value) -> &mut Self {
        if !self.config["linux"]["devices"].is_array() {
            self.config["linux"]["devices"] = json!([]);
        }
        self.config["linux"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(dev);
        self
    }

    pub fn add_mount(&mut self, m: Value) -> &mut Self {
        self.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(m);
        self
    }

    /// Adds a namespace, or replaces the entry of the same type.
    pub fn namespace(&mut self, typ: &str, path: Option<&str>) -> &mut Self {
        let ns = self.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("linux.namespaces");
        let entry = match path {
            Some(p) => json!({ "type": typ, "path": p }),
            None => json!({ "type": typ }),
        };
        match ns.iter_mut().find(|n| n["type"] == typ) {
            Some(e) => *e = entry,
            None => ns.push(entry),
        }
        self
    }

    pub fn remove_namespace(&mut self, typ: &str) -> &mut Self {
        self.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("linux.namespaces")
            .retain(|n| n["type"] != typ);
        self
    }

    /// `(containerID, hostID, size)` triples.
    pub fn uid_mappings(&mut self, maps: &[(u32, u32, u32)]) -> &mut Self {
        let v: Vec<Value> = maps
            .iter()
            .map(|(c, h, s)| json!({ "containerID": c, "hostID": h, "size": s }))
            .collect();
        self.set("/linux/uidMappings", json!(v))
    }

    pub fn gid_mappings(&mut self, maps: &[(u32, u32, u32)]) -> &mut Self {
        let v: Vec<Value> = maps
            .iter()
            .map(|(c, h, s)| json!({ "containerID": c, "hostID": h, "size": s }))
            .collect();
        self.set("/linux/gidMappings", json!(v))
    }

    pub fn rootfs_propagation(&mut self, p: &str) -> &mut Self {
        self.set("/linux/rootfsPropagation", json!(p))
    }

    /// Writes `config` as `bundle/config.json`.
    pub fn write_config(&self) {
        let text = serde_json::to_string_pretty(&self.config).unwrap();
        fs::write(self.bundle.join("config.json"), text).expect("write config.json");
    }

    // ----- runtime invocations ------------------------------------------

    fn global_args(&self) -> Vec<OsString> {
        vec!["--root".into(), self.root.clone().into()]
    }

    /// `RUNTIME --root R ARGS...`
    #[track_caller]
    pub fn rt(&self, args: &[&str]) -> Out {
        self.rt_opts(args, &ExecOpts::default())
    }

    #[track_caller]
    pub fn rt_opts(&self, args: &[&str], opts: &ExecOpts) -> Out {
        let mut a = self.global_args();
        a.extend(args.iter().map(OsString::from));
        exec(&self.runtime, &a, &self.io, opts)
    }

    fn bundle_str(&self) -> String {
        self.bundle.to_string_lossy().into_owned()
    }

    /// `RUNTIME --root R run --bundle B ID` as words (the runtime first), with the config
    /// written: for tests that start the runtime through a wrapper (strace, a shell).
    pub fn run_command_line(&self) -> Vec<String> {
        self.write_config();
        [
            self.runtime.to_string_lossy().as_ref(),
            "--root",
            self.root.to_string_lossy().as_ref(),
            "run",
            "--bundle",
            &self.bundle_str(),
            &self.id,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Starts `RUNTIME --root R ARGS...` in the background (e.g. `events --interval`).
    pub fn spawn_rt(&self, args: &[&str]) -> Running {
        let mut a = self.global_args();
        a.extend(args.iter().map(OsString::from));
        spawn(&self.runtime, &a, &self.io, &ExecOpts::default())
    }

    /// `run --bundle B [EXTRA...] ID` in the foreground; returns its output.
    #[track_caller]
    /// What `--root` holds besides the runtime-wide entries (the events log in `runtime/`, the
    /// seccomp filter cache): after a failed create or a delete, nothing.
    pub fn root_leftovers(&self) -> Vec<std::ffi::OsString> {
        fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name())
                    .filter(|n| n != "runtime" && n != "seccomp-cache")
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `run` with no delegate engine configured (`runtime.fallback` empty): what the native engine
    /// declines is then an error instead of a container under runc.
    pub fn run_native_only(&self) -> Out {
        self.write_config();
        fs::create_dir_all(&self.host).expect("create host dir");
        let cfg = self.host.join("native-only.json");
        fs::write(&cfg, r#"{"runtime": {"fallback": []}}"#).expect("write config");
        let (cfg, bundle) = (
            cfg.to_string_lossy().into_owned(),
            self.bundle.to_string_lossy().into_owned(),
        );
        self.rt(&["--config", &cfg, "run", "--bundle", &bundle, &self.id])
    }

    pub fn run(&self) -> Out {
        self.run_with(&[])
    }

    #[track_caller]
    pub fn run_with(&self, extra: &[&str]) -> Out {
        self.write_config();
        let b = self.bundle_str();
        let mut args = vec!["run", "--bundle", &b];
        args.extend_from_slice(extra);
        args.push(&self.id);
        self.rt(&args)
    }

    /// Starts `run --bundle B [EXTRA...] ID` in the background.
    pub fn spawn_run(&self, extra: &[&str]) -> Running {
        self.write_config();
        let b = self.bundle_str();
        let mut args: Vec<OsString> = self.global_args();
        for a in ["run", "--bundle", &b] {
            args.push(a.into());
        }
        args.extend(extra.iter().map(OsString::from));
        args.push(self.id.clone().into());
        spawn(&self.runtime, &args, &self.io, &ExecOpts::default())
    }

    /// Runs a detaching command (`create`, `run --detach`): the container keeps
    /// the stdout/stderr files it inherited, so output is captured in files.
    #[track_caller]
    fn detached(&self, args: &[&str], opts: &ExecOpts) -> Out {
        let mut a = self.global_args();
        a.extend(args.iter().map(OsString::from));
        let r = spawn(&self.runtime, &a, &self.io, opts);
        let paths = (r.stdout_path.clone(), r.stderr_path.clone());
        let out = r.wait(opts.timeout.unwrap_or(CMD_TIMEOUT));
        if out.ok() {
            *self.last_detached.borrow_mut() = Some(paths);
        }
        out
    }

    /// `create --bundle B ID`.
    #[track_caller]
    pub fn create(&self) -> Out {
        self.create_with(&[])
    }

    #[track_caller]
    pub fn create_with(&self, extra: &[&str]) -> Out {
        self.create_opts(extra, &ExecOpts::default())
    }

    #[track_caller]
    pub fn create_opts(&self, extra: &[&str], opts: &ExecOpts) -> Out {
        self.write_config();
        let b = self.bundle_str();
        let mut args = vec!["create", "--bundle", &b];
        args.extend_from_slice(extra);
        args.push(&self.id);
        self.detached(&args, opts)
    }

    /// `run --detach --bundle B ID`.
    #[track_caller]
    pub fn run_detached(&self) -> Out {
        self.write_config();
        let b = self.bundle_str();
        self.detached(
            &["run", "--detach", "--bundle", &b, &self.id],
            &ExecOpts::default(),
        )
    }

    /// What the container (of the last `create`/`run --detach`) wrote to its
    /// stdout so far.
    pub fn container_stdout(&self) -> String {
        self.last_detached
            .borrow()
            .as_ref()
            .and_then(|(o, _)| fs::read_to_string(o).ok())
            .unwrap_or_default()
    }

    /// What the container (of the last `create`/`run --detach`) wrote to its
    /// stderr so far.
    pub fn container_stderr(&self) -> String {
        self.last_detached
            .borrow()
            .as_ref()
            .and_then(|(_, e)| fs::read_to_string(e).ok())
            .unwrap_or_default()
    }

    /// Waits until the container's stdout contains `needle`.
    #[track_caller]
    pub fn wait_container_stdout(&self, needle: &str, timeout: Duration) {
        if !wait_until(timeout, || self.container_stdout().contains(needle)) {
            panic!(
                "container never printed {needle:?}; its stdout:\n{}",
                self.container_stdout()
            );
        }
    }

    #[track_caller]
    pub fn start(&self) -> Out {
        self.rt(&["start", &self.id])
    }

    #[track_caller]
    pub fn state(&self) -> Out {
        self.rt(&["state", &self.id])
    }

    /// `state ID` parsed; panics if it fails.
    #[track_caller]
    pub fn state_json(&self) -> Value {
        let out = self.state();
        out.assert_ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state output is not JSON ({e}):\n{out}"))
    }

    #[track_caller]
    pub fn status(&self) -> String {
        self.state_json()["status"]
            .as_str()
            .expect("state.status is a string")
            .to_string()
    }

    /// The init pid from `state`.
    #[track_caller]
    pub fn pid(&self) -> i64 {
        self.state_json()["pid"]
            .as_i64()
            .expect("state.pid is a number")
    }

    /// Polls `state` until the status is `want`.
    #[track_caller]
    pub fn wait_status(&self, want: &str, timeout: Duration) {
        let mut last = String::new();
        let ok = wait_until(timeout, || {
            let out = self.state();
            last = out.to_string();
            serde_json::from_str::<Value>(&out.stdout)
                .map(|v| v["status"] == want)
                .unwrap_or(false)
        });
        assert!(
            ok,
            "container never reached status {want:?}; last state:\n{last}"
        );
    }

    /// `kill ID [SIG]`.
    #[track_caller]
    pub fn kill(&self, sig: Option<&str>) -> Out {
        match sig {
            Some(s) => self.rt(&["kill", &self.id, s]),
            None => self.rt(&["kill", &self.id]),
        }
    }

    /// `kill --all ID SIG`.
    #[track_caller]
    pub fn kill_all(&self, sig: &str) -> Out {
        self.rt(&["kill", "--all", &self.id, sig])
    }

    #[track_caller]
    pub fn delete(&self) -> Out {
        self.rt(&["delete", &self.id])
    }

    #[track_caller]
    pub fn delete_force(&self) -> Out {
        self.rt(&["delete", "--force", &self.id])
    }

    /// `exec [FLAGS...] ID CMD...` in the foreground.
    #[track_caller]
    pub fn exec_in(&self, flags: &[&str], cmd: &[&str]) -> Out {
        self.exec_in_opts(flags, cmd, &ExecOpts::default())
    }

    #[track_caller]
    pub fn exec_in_opts(&self, flags: &[&str], cmd: &[&str], opts: &ExecOpts) -> Out {
        let mut args = vec!["exec"];
        args.extend_from_slice(flags);
        args.push(&self.id);
        args.extend_from_slice(cmd);
        self.rt_opts(&args, opts)
    }

    /// Starts `exec [FLAGS...] ID CMD...` in the background.
    pub fn spawn_exec(&self, flags: &[&str], cmd: &[&str]) -> Running {
        let mut args = self.global_args();
        args.push("exec".into());
        args.extend(flags.iter().map(OsString::from));
        args.push(self.id.clone().into());
        args.extend(cmd.iter().map(OsString::from));
        spawn(&self.runtime, &args, &self.io, &ExecOpts::default())
    }

    /// A container whose process idles, started with `run --detach` and
    /// checked to be running; returns the init's host pid.
    #[track_caller]
    pub fn start_idle(&mut self) -> i64 {
        self.args(&["sleep", "1000000"]);
        self.run_detached().assert_ok();
        self.wait_status("running", WAIT);
        self.pid()
    }

    /// `<root>/<id>`, the runtime's state dir of this container.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(&self.id)
    }

    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.id)
    }

    pub fn cgroup_procs(&self, hierarchy: &str) -> Vec<i64> {
        cgroup_procs(&self.id, hierarchy)
    }

    /// Host mountinfo lines that mention the bundle path.
    pub fn host_mounts(&self) -> Vec<String> {
        host_mounts_mentioning(&self.bundle)
    }

    /// Asserts that nothing of the container is left on the host: no state
    /// dir, no cgroup dir, no mount mentioning the bundle, and (if given) the
    /// init pid is gone.
    #[track_caller]
    pub fn assert_no_debris(&self, init_pid: Option<i64>) {
        assert!(
            !self.state_dir().exists(),
            "state dir {} is left",
            self.state_dir().display()
        );
        let cgs = self.cgroup_dirs();
        assert!(cgs.is_empty(), "cgroup dirs are left: {cgs:?}");
        let mounts = self.host_mounts();
        assert!(
            mounts.is_empty(),
            "host mounts are left:\n{}",
            mounts.join("\n")
        );
        if let Some(pid) = init_pid {
            assert!(
                wait_until(Duration::from_secs(5), || !pid_alive(pid)),
                "init process {pid} is still alive"
            );
        }
    }

    /// Makes the rootfs (and the bundle dirs leading to it) owned by `uid:gid`
    /// — needed when the container runs in a user namespace.
    pub fn chown_rootfs(&self, uid: u32, gid: u32) {
        let owner = format!("{uid}:{gid}");
        host_cmd(
            "/usr/bin/chown",
            &["-R", "-h", &owner, &self.rootfs.to_string_lossy()],
        )
        .assert_ok();
    }
}

impl Default for Container {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let mut a = self.global_args();
        a.extend(["delete", "--force"].map(OsString::from));
        a.push(self.id.clone().into());
        // The runtime may be broken or hang; never let that block cleanup.
        let r = spawn(&self.runtime, &a, &self.io, &ExecOpts::default());
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.wait(Duration::from_secs(20))
        }));
        remove_cgroups_of(&self.id);
        remove_tree(&self.base);
        remove_tree(&self.root);
    }
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct NetNs {
    pub name: String,
    pub path: PathBuf,
}

impl NetNs {
    #[track_caller]
    pub fn new() -> Self {
        clean_stale();
        let name = unique_name();
        host_cmd("/usr/sbin/ip", &["netns", "add", &name]).assert_ok();
        let path = Path::new("/var/run/netns").join(&name);
        NetNs { name, path }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = host_cmd("/usr/sbin/ip", &["netns", "del", &self.name]);
    }
}

/// A tmpfs mounted on the host at `path` (a dir the test owns), unmounted on
/// drop.
pub struct HostTmpfs {
    pub path: PathBuf,
}

impl HostTmpfs {
    #[track_caller]
    pub fn new(path: &Path) -> Self {
        fs::create_dir_all(path).unwrap();
        host_cmd(
            "/usr/bin/mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=1m",
                "tmpfs",
                &path.to_string_lossy(),
            ],
        )
        .assert_ok();
        HostTmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl HostTmpfs {
    /// Like [`HostTmpfs::new`], and made a shared mount (its own peer group).
    #[track_caller]
    pub fn shared(path: &Path) -> Self {
        let m = Self::new(path);
        host_cmd(
            "/usr/bin/mount",
            &["--make-shared", &path.to_string_lossy()],
        )
        .assert_ok();
        m
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = host_cmd("/usr/bin/umount", &["-l", &self.path.to_string_lossy()]);
    }
}

/// The inode number of `path` (following symlinks).
pub fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// Parses a hex capability mask from /proc/<pid>/status.
pub fn cap_mask(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| {
            let bit = cap_number(n).unwrap_or_else(|| panic!("unknown capability {n}"));
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

/// The number of a capability name as in linux/capability.h.
pub fn cap_number(name: &str) -> Option<u32> {
    const CAPS: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    CAPS.iter().position(|c| *c == name).map(|p| p as u32)
}

/// The test process's own hard limit `label` (e.g. "Max open files") from
/// /proc/self/limits; `u64::MAX` for unlimited.
pub fn own_hard_limit(label: &str) -> u64 {
    let text = fs::read_to_string("/proc/self/limits").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in /proc/self/limits"));
    let hard = line[label.len()..].split_whitespace().nth(1).unwrap();
    if hard == "unlimited" {
        u64::MAX
    } else {
        hard.parse().unwrap()
    }
}

/// Value of `Field:` in a /proc/<pid>/status text.
pub fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A generous default wait for a container to reach a state.
pub const WAIT: Duration = Duration::from_secs(10);

/// How much slower than this machine the tests run: `LXCRI_TEST_TIME_SCALE`, set by
/// scripts/test-guest for the emulated guest. Only for time limits a test itself sets in a
/// configuration (e.g. `runtime.timeout`), where a limit that is fine here is too tight there.
pub fn time_scale() -> u64 {
    std::env::var("LXCRI_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// From now on every runtime call of this test process runs with no delegate engine configured
/// (`runtime.fallback` empty): a native failure fails the test instead of handing the container
/// to crun/runc, which would make a test of our code pass on theirs. The config file is in the
/// scratch dir, named for this process (a dead owner's goes with its other scratch files).
pub fn native_only() {
    static DONE: Once = Once::new();
    DONE.call_once(|| {
        let dir = Path::new(TMP_BASE);
        fs::create_dir_all(dir).expect("create the scratch dir");
        let cfg = dir.join(format!("{}-native-only.json", std::process::id()));
        fs::write(&cfg, r#"{"runtime": {"fallback": []}}"#).expect("write the config");
        std::env::set_var("PROXMOX_LXCRI_CONFIG", &cfg);
    });
}

/// Whether pct's lock of `vmid` in `lock_dir` can be taken now (nobody holds it).
pub fn pct_lock_is_free(lock_dir: &Path, vmid: u32) -> bool {
    let path = lock_dir.join(format!("pve-config-{vmid}.lock"));
    let Ok(f) = fs::OpenOptions::new().append(true).open(&path) else {
        return true;
    };
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
}

/// The entry names of `dir`, sorted; none when it does not exist.
pub fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
