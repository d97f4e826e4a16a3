//! Helpers for the confinement tests: small C programs built with gcc (tests/helpers/*.c) that run
//! inside a container (`probe`, one raw syscall and what it returned) or beside it (`listener`, a
//! seccomp agent), and podman's seccomp profile converted to the OCI shape.

use super::*;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// Builds `tests/helpers/<name>.c` once per test binary (statically when it runs inside
/// containers) and returns the binary. gcc comes with build-essential (scripts/install-deps); a
/// missing gcc fails the test loudly.
pub fn helper_binary(name: &str, static_link: bool) -> PathBuf {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(name) {
        return p.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(format!("{name}.c"));
    let dir = Path::new(TMP_BASE).join(format!("{}-helpers", std::process::id()));
    fs::create_dir_all(&dir).expect("create helper dir");
    let out = dir.join(name);
    let mut cmd = Command::new("gcc");
    cmd.args(["-O2", "-Wall", "-pthread", "-o"])
        .arg(&out)
        .arg(&src);
    if static_link {
        cmd.arg("-static");
    }
    let res = cmd
        .output()
        .unwrap_or_else(|e| panic!("gcc is needed to build {}: {e}", src.display()));
    assert!(
        res.status.success(),
        "building {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    map.insert(name.to_string(), out.clone());
    out
}

/// The probe, installed as /bin/probe in `c`'s rootfs.
pub fn install_probe(c: &Container) {
    let probe = helper_binary("probe", true);
    let dest = c.rootfs.join("bin/probe");
    fs::copy(&probe, &dest).expect("copy probe into the rootfs");
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Lines `NAME=VALUE` printed by the probe, as a map.
pub fn probe_results(stdout: &str) -> HashMap<String, i64> {
    stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The Go name of the native architecture, as podman's profile uses it in `includes.arches`.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("podman profile conversion: no arch mapping for {other}"),
    }
}

fn scmp_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        other => panic!("podman profile conversion: no arch mapping for {other}"),
    }
}

pub const PODMAN_PROFILE: &str = "/usr/share/containers/seccomp.json";

/// podman's profile (containers/common format: `archMap`, `includes`/`excludes` by arch and
/// capability) turned into the OCI `linux.seccomp` a container with `caps` gets, the way podman
/// does it: rules whose includes are not met or whose excludes are met are dropped.
pub fn podman_profile(caps: &[&str]) -> Value {
    let text = fs::read_to_string(PODMAN_PROFILE).unwrap_or_else(|e| {
        panic!(
            "{PODMAN_PROFILE}: {e} (install golang-github-containers-common: scripts/install-deps)"
        )
    });
    let p: Value = serde_json::from_str(&text).expect("podman profile is JSON");
    let native = scmp_arch();
    let mut arches = vec![json!(native)];
    for m in p["archMap"].as_array().into_iter().flatten() {
        if m["architecture"] == native {
            arches.extend(
                m["subArchitectures"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
    let has = |list: &Value, want: &str| {
        list.as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(want)))
    };
    let mut syscalls = Vec::new();
    for s in p["syscalls"].as_array().expect("syscalls") {
        let inc = &s["includes"];
        let exc = &s["excludes"];
        if inc["arches"].is_array() && !has(&inc["arches"], go_arch()) {
            continue;
        }
        if let Some(need) = inc["caps"].as_array() {
            if !need
                .iter()
                .all(|c| caps.contains(&c.as_str().unwrap_or("")))
            {
                continue;
            }
        }
        if has(&exc["arches"], go_arch()) {
            continue;
        }
        if caps.iter().any(|c| has(&exc["caps"], c)) {
            continue;
        }
        let mut rule = json!({ "names": s["names"], "action": s["action"] });
        if !s["args"].is_null() {
            rule["args"] = s["args"].clone();
        }
        if !s["errnoRet"].is_null() {
            rule["errnoRet"] = s["errnoRet"].clone();
        }
        syscalls.push(rule);
    }
    json!({
        "defaultAction": p["defaultAction"],
        "defaultErrnoRet": p["defaultErrnoRet"],
        "architectures": arches,
        "syscalls": syscalls,
    })
}

/// The test seccomp agent (tests/helpers/listener.c) on a socket in `dir`; killed on drop.
pub struct Listener {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl Listener {
    /// Starts the agent answering every notification with `reply` (`val:N` or `errno:N`) and
    /// waits until it listens.
    pub fn start(dir: &Path, reply: &str) -> Listener {
        let bin = helper_binary("listener", false);
        fs::create_dir_all(dir).unwrap();
        let socket = dir.join("agent.sock");
        let child = Command::new(&bin)
            .arg(&socket)
            .arg(dir)
            .arg(reply)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("start the listener");
        let l = Listener {
            child,
            dir: dir.to_path_buf(),
            socket,
        };
        assert!(
            wait_until(WAIT, || dir.join("ready").exists()),
            "the listener never got ready: {}",
            l.stderr()
        );
        l
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The containerProcessState the runtime sent, once it has.
    pub fn state(&self) -> Value {
        let path = self.dir.join("state.json");
        assert!(
            wait_until(WAIT, || path.exists()),
            "the listener got no message; its stderr: {}",
            self.stderr()
        );
        let text = fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("state is not JSON ({e}): {text}"))
    }

    /// The notifications it answered, one "nr=N arg0=A" line each.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
