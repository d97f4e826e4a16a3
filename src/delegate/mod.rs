//! The runtime ADR: containers the native engine cannot serve go to a delegate engine (crun, then
//! runc, as configured). A delegated container keeps a directory under our --root holding only
//! `engine.json` (which engine owns it, its binary and --root), and every later command for it is
//! passed to that engine with its output normalised to ours. The native path pays for none of
//! this: the configuration is one failed open when absent, and engines are detected only when a
//! container is actually delegated.

pub mod args;
pub mod config;
pub mod detect;
pub mod process;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, LogFormat};
use crate::error::{Context, Error, Result};
use crate::spec::Bundle;
use crate::state::{ContainerDir, State, Status};
use config::{Engine, RuntimeConfig};
use process::{Finished, Io};

/// The file in `<root>/<id>/` that says a delegate engine owns the container.
pub const MARKER: &str = "engine.json";

/// What `<root>/<id>/engine.json` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Owner {
    pub engine: String,
    pub binary: PathBuf,
    /// The engine's --root (`<our root>/engines/<engine>`).
    pub root: PathBuf,
    /// Why the container was delegated.
    pub reason: String,
}

/// The spec features the native engine does not implement (decided before touching the system).
pub fn native_unsupported(spec: &Spec) -> Option<String> {
    let process = spec.process().as_ref();
    let linux = spec.linux().as_ref();
    let why = |s: &str| Some(format!("{s} is not implemented by the native engine"));
    if let Some(p) = process {
        if p.scheduler().is_some() {
            return why("process.scheduler");
        }
        if p.io_priority().is_some() {
            return why("process.ioPriority");
        }
        if p.exec_cpu_affinity().is_some() {
            return why("process.execCPUAffinity");
        }
    }
    if let Some(l) = linux {
        if l.intel_rdt().is_some() {
            return why("linux.intelRdt");
        }
        if l.personality().is_some() {
            return why("linux.personality");
        }
        if l.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
            return why("linux.netDevices");
        }
    }
    None
}

/// What a container asks of the engine that serves it.
#[derive(Default)]
struct Needs {
    seccomp: bool,
    user_namespaces: bool,
    criu: bool,
}

impl Needs {
    fn of(spec: &Spec) -> Needs {
        let linux = spec.linux().as_ref();
        Needs {
            seccomp: linux.is_some_and(|l| l.seccomp().is_some()),
            user_namespaces: linux
                .and_then(|l| l.namespaces().as_ref())
                .is_some_and(|n| n.iter().any(|n| n.typ() == LinuxNamespaceType::User)),
            criu: false,
        }
    }

    /// Why an engine with `f` cannot serve this container here, if it cannot.
    fn missing(&self, cfg: &RuntimeConfig, f: &detect::Features) -> Option<String> {
        let check = &cfg.feature_detection;
        let pure_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        if pure_v2 && check.cgroup_v2 && !f.cgroup_v2 {
            return Some("no cgroup v2 support (this host is cgroup v2)".into());
        }
        if !pure_v2 && !f.cgroup_v1 {
            return Some("no cgroup v1 support (this host uses cgroup v1 controllers)".into());
        }
        if self.seccomp && check.seccomp && !f.seccomp {
            return Some("built without seccomp, which the spec asks for".into());
        }
        if self.user_namespaces && check.user_namespaces && !f.user_namespaces {
            return Some("no user namespace support, which the spec asks for".into());
        }
        if self.criu && !f.criu {
            return Some("built without CRIU (checkpoint/restore)".into());
        }
        None
    }
}

/// How a new container is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Create,
    Run { detach: bool, keep: bool },
    Restore { detach: bool },
}

impl Mode {
    fn subcommand(self) -> &'static str {
        match self {
            Mode::Create => "create",
            Mode::Run { .. } => "run",
            Mode::Restore { .. } => "restore",
        }
    }

    /// The engine stays in the foreground with the container: no timeout applies.
    fn attached(self) -> bool {
        matches!(
            self,
            Mode::Run { detach: false, .. } | Mode::Restore { detach: false }
        )
    }
}

pub enum Decision {
    /// The native engine serves it, from this already loaded bundle.
    Native(Box<Bundle>),
    /// A delegate served the command; its exit code.
    Delegated(i32),
}

/// At `create` / `run`: the native engine, unless the configuration or the spec says otherwise.
pub fn decide(cli: &Cli, bundle_dir: &Path, id: &str, mode: Mode) -> Result<Decision> {
    let cfg = config::get()?;
    if cfg.primary != Engine::Native {
        let spec = read_spec(bundle_dir)?;
        let reason = format!("runtime.primary is {}", cfg.primary);
        return delegate_new(cli, id, mode, &Needs::of(&spec), Vec::new(), reason)
            .map(Decision::Delegated);
    }
    let bundle = Bundle::load(bundle_dir)?;
    if let Some(why) = native_unsupported(&bundle.spec) {
        let needs = Needs::of(&bundle.spec);
        drop(bundle);
        let declined = vec![("native".to_string(), why.clone())];
        return delegate_new(cli, id, mode, &needs, declined, why).map(Decision::Delegated);
    }
    Ok(Decision::Native(Box::new(bundle)))
}

/// After a native create failed (and undid itself): an "unsupported on this host" failure goes to
/// the delegates when `auto_fallback` is on; anything else is the caller's error.
pub fn after_native_failure(
    cli: &Cli,
    bundle_dir: &Path,
    id: &str,
    mode: Mode,
    err: Error,
) -> Result<i32> {
    if !err.is_unsupported() {
        return Err(err);
    }
    let cfg = config::get()?;
    if !cfg.auto_fallback {
        return Err(Error::invalid(format!(
            "{err} (not supported on this host; runtime.auto_fallback is off, so no other engine \
             was tried)"
        )));
    }
    let spec = read_spec(bundle_dir)?;
    let reason = format!("native engine: {err}");
    let declined = vec![("native".to_string(), err.to_string())];
    delegate_new(cli, id, mode, &Needs::of(&spec), declined, reason)
}

/// `restore`: only an engine with CRIU can.
pub fn restore(cli: &Cli, id: &str, detach: bool) -> Result<i32> {
    let needs = Needs {
        criu: true,
        ..Needs::default()
    };
    let declined = vec![(
        "native".to_string(),
        "checkpoint/restore is not implemented by the native engine".to_string(),
    )];
    delegate_new(
        cli,
        id,
        Mode::Restore { detach },
        &needs,
        declined,
        "restore needs CRIU".into(),
    )
}

fn read_spec(bundle_dir: &Path) -> Result<Spec> {
    let config = bundle_dir.join("config.json");
    let data = fs::read(&config).ctx(|| format!("reading {}", config.display()))?;
    serde_json::from_slice(&data).map_err(|e| Error::invalid(format!("{}: {e}", config.display())))
}

pub fn engine_root(root: &Path, engine: Engine) -> PathBuf {
    root.join("engines").join(engine.name())
}

/// Makes a new container with the first delegate that can serve it, trying each in order; the
/// error lists every engine and why it declined.
fn delegate_new(
    cli: &Cli,
    id: &str,
    mode: Mode,
    needs: &Needs,
    mut declined: Vec<(String, String)>,
    reason: String,
) -> Result<i32> {
    let cfg = config::get()?;
    // Reserves the id (shared with native containers) and serializes with other commands.
    let dir = ContainerDir::create(&cli.root, id)?;
    let raw: Vec<OsString> = std::env::args_os().skip(1).collect();
    let sub_args = args::subcommand_args(&raw, mode.subcommand());
    crate::eventlog::note(None, Some(&reason));
    for engine in cfg.delegates() {
        let found = match detect::detect(cfg, &cli.root, engine) {
            Ok(d) => d,
            Err(e) => {
                declined.push((engine.to_string(), e.to_string()));
                continue;
            }
        };
        if let Some(why) = found
            .declines()
            .or_else(|| needs.missing(cfg, &found.features))
        {
            declined.push((engine.to_string(), why));
            continue;
        }
        let owner = Owner {
            engine: engine.to_string(),
            binary: found.path.clone(),
            root: engine_root(&cli.root, engine),
            reason: reason.clone(),
        };
        write_owner(&dir.path, &owner)?;
        crate::eventlog::note(Some(engine.name()), Some(&reason));
        match make(cli, cfg, &owner, id, mode, &sub_args) {
            Ok(code) => {
                let kept = owner.root.join(id).exists();
                if mode.attached() && !kept {
                    // The engine ran the container to its end and deleted it.
                    dir.remove()?;
                }
                return Ok(code);
            }
            Err(e) => {
                cleanup(cfg, &owner, id);
                let _ = fs::remove_file(dir.path.join(MARKER));
                declined.push((engine.to_string(), e.to_string()));
            }
        }
    }
    dir.remove()?;
    let list: Vec<String> = declined
        .iter()
        .map(|(e, why)| format!("{e}: {why}"))
        .collect();
    Err(Error::invalid(format!(
        "no engine can serve container {id:?} ({})",
        list.join("; ")
    )))
}

/// Runs the engine's create/run/restore with the caller's arguments; the engine's own error (from
/// its log) makes it Err.
fn make(
    cli: &Cli,
    cfg: &RuntimeConfig,
    owner: &Owner,
    id: &str,
    mode: Mode,
    sub_args: &[OsString],
) -> Result<i32> {
    fs::create_dir_all(&owner.root).ctx(|| format!("creating {}", owner.root.display()))?;
    let log = EngineLog::new(cli, &owner.root, id)?;
    let mut cmd = engine_command(cli, owner, sub_args, Some(&log));
    let timeout = (!mode.attached()).then_some(cfg.timeout);
    let what = format!("{} {}", owner.engine, mode.subcommand());
    let finished = process::run(&mut cmd, Io::Inherit, timeout, &what);
    let logged = log.finish();
    let finished = finished?;
    if !logged.is_empty() {
        return Err(Error::invalid(format!(
            "{what}: {}",
            criu_detail(&logged, sub_args)
        )));
    }
    if !finished.ok() && !mode.attached() {
        return Err(Error::invalid(format!(
            "{what} exited with status {}",
            finished.code
        )));
    }
    Ok(finished.code)
}

/// Removes whatever a failed create left in the engine (best effort, bounded by the timeout).
fn cleanup(cfg: &RuntimeConfig, owner: &Owner, id: &str) {
    if !owner.root.join(id).exists() {
        return;
    }
    let _ = process::run(
        Command::new(&owner.binary)
            .arg("--root")
            .arg(&owner.root)
            .args(["delete", "--force", id]),
        Io::Capture,
        Some(cfg.timeout),
        "clean-up",
    );
}

/// The engine's --log: the caller's own (then its new lines are read back), or a file of ours.
struct EngineLog {
    path: PathBuf,
    format: LogFormat,
    ours: bool,
    offset: u64,
}

impl EngineLog {
    fn new(cli: &Cli, engine_root: &Path, id: &str) -> Result<EngineLog> {
        if let Some(path) = &cli.log {
            let offset = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            return Ok(EngineLog {
                path: path.clone(),
                format: cli.log_format,
                ours: false,
                offset,
            });
        }
        let path = engine_root.join(format!(".{id}.{}.log", std::process::id()));
        Ok(EngineLog {
            path,
            format: LogFormat::Json,
            ours: true,
            offset: 0,
        })
    }

    /// The engine's error, if it logged one; our file is removed.
    fn finish(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.path) {
            let _ = f.seek(SeekFrom::Start(self.offset));
            let _ = f.read_to_end(&mut text);
        }
        if self.ours {
            let _ = fs::remove_file(&self.path);
        }
        // Only error records count: a plain line in a log is not an error.
        let errors: Vec<u8> = String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.contains("\"level\":\"error\"") || l.contains("level=error"))
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect();
        process::engine_message(&errors)
    }
}

fn engine_command(
    cli: &Cli,
    owner: &Owner,
    sub_args: &[OsString],
    log: Option<&EngineLog>,
) -> Command {
    let mut c = Command::new(&owner.binary);
    c.arg("--root").arg(&owner.root);
    if let Some(log) = log {
        c.arg("--log").arg(&log.path);
        c.arg("--log-format").arg(match log.format {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        });
    } else if let Some(path) = &cli.log {
        c.arg("--log").arg(path);
        if cli.log_format == LogFormat::Json {
            c.arg("--log-format").arg("json");
        }
    }
    if cli.debug {
        c.arg("--debug");
    }
    if cli.systemd_cgroup {
        c.arg("--systemd-cgroup");
    }
    c.args(sub_args);
    c
}

fn write_owner(dir: &Path, owner: &Owner) -> Result<()> {
    let data = serde_json::to_vec(owner).map_err(|e| Error::invalid(e.to_string()))?;
    crate::fsutil::write_atomic(&dir.join(MARKER), &data, 0o600)
}

/// The owner of an existing container, when it is delegated (one failed open when it is not).
pub fn owner_of(root: &Path, id: &str) -> Option<Result<Owner>> {
    crate::state::validate_id(id).ok()?;
    let path = root.join(id).join(MARKER);
    let data = fs::read(&path).ok()?;
    Some(
        serde_json::from_slice(&data)
            .map_err(|e| Error::invalid(format!("corrupt {}: {e}", path.display()))),
    )
}

/// Commands that make a container, or concern no single one, are never routed.
const NOT_ROUTED: &[&str] = &[
    "create", "run", "restore", "list", "spec", "features", "metrics",
];

/// Every command on an existing container (start, state, kill, delete, exec, pause, ps, update,
/// events, checkpoint, ... whatever takes an `id`) goes to the engine that owns it. None: the
/// container is not delegated (or the command names none), so the native command runs.
pub fn route(cli: &Cli, name: &str, sub: &clap::ArgMatches) -> Option<Result<i32>> {
    if NOT_ROUTED.contains(&name) {
        return None;
    }
    let id = sub.try_get_one::<String>("id").ok().flatten()?;
    let owner = match owner_of(&cli.root, id)? {
        Ok(o) => o,
        Err(e) => return Some(Err(e)),
    };
    crate::eventlog::note(Some(&owner.engine), None);
    Some(routed(cli, name, sub, id, &owner))
}

fn flag(sub: &clap::ArgMatches, name: &str) -> bool {
    sub.try_get_one::<bool>(name)
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false)
}

fn routed(cli: &Cli, name: &str, sub: &clap::ArgMatches, id: &str, owner: &Owner) -> Result<i32> {
    let cfg = config::get()?;
    let raw: Vec<OsString> = std::env::args_os().skip(1).collect();
    let sub_args = args::subcommand_args(&raw, name);
    // Commands that stay with a process or a stream for as long as it lasts get no deadline.
    let attached = match name {
        "exec" => !flag(sub, "detach"),
        "events" => !flag(sub, "stats"),
        _ => false,
    };
    let timeout = (!attached).then_some(cfg.timeout);
    let what = format!("{} {name} {id}", owner.engine);
    let mut cmd = engine_command(cli, owner, &sub_args, None);
    let io = match name {
        "state" => Io::Capture,
        // The process inherits stdio; its exit code is the answer.
        "exec" => Io::Inherit,
        _ => Io::CaptureStderr,
    };
    let f = process::run(&mut cmd, io, timeout, &what)?;
    match name {
        "state" => {
            failed(&f, &what)?;
            let (state, status) = normalise(&f.stdout)
                .map_err(|e| e.context(format!("{what}: unexpected output")))?;
            let text = serde_json::to_string_pretty(&state.public(status))
                .map_err(|e| Error::invalid(e.to_string()))?;
            println!("{text}");
            Ok(0)
        }
        "delete" => {
            // Ours goes once the engine no longer knows the container (also when it had
            // already forgotten it).
            if !owner.root.join(id).exists() {
                match ContainerDir::open(&cli.root, id) {
                    Ok(dir) => dir.remove()?,
                    Err(_) if !cli.root.join(id).exists() => {}
                    Err(e) => return Err(e),
                }
                return Ok(0);
            }
            failed(&f, &what)?;
            Ok(0)
        }
        "exec" => Ok(f.code),
        _ => {
            failed(&f, &what)
                .map_err(|e| Error::invalid(criu_detail(&e.to_string(), &sub_args)))?;
            Ok(0)
        }
    }
}

/// runc reports a CRIU failure as "criu failed: type DUMP errno 0\nlog file: dump.log"; the
/// reason is in that log (in --work-path, else --image-path): its first error line is added.
fn criu_detail(msg: &str, sub_args: &[OsString]) -> String {
    let msg = msg.replace("\\n", "\n");
    let Some((_, file)) = msg.split_once("log file: ") else {
        return msg.replace('\n', "; ");
    };
    let file = file.lines().next().unwrap_or_default().trim();
    let value_of = |flag: &str| {
        let mut it = sub_args.iter().map(|a| a.to_string_lossy().into_owned());
        while let Some(a) = it.next() {
            if a == flag {
                return it.next();
            }
            if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                return Some(v.to_string());
            }
        }
        None
    };
    let dir = value_of("--work-path").or_else(|| value_of("--image-path"));
    let first_error = dir.and_then(|d| {
        let path = Path::new(&d).join(file);
        let text = fs::read_to_string(&path).ok()?;
        let line = text.lines().find(|l| l.contains("Error ("))?;
        // "(00.128178) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds"
        let reason = line
            .split_once("): ")
            .map_or(line, |(_, r)| r)
            .trim()
            .to_string();
        Some(format!("{}: {reason}", path.display()))
    });
    let msg = msg.replace('\n', "; ");
    match first_error {
        Some(e) => format!("{msg} ({e})"),
        None => msg,
    }
}

fn failed(f: &Finished, what: &str) -> Result<()> {
    if f.ok() {
        return Ok(());
    }
    let msg = process::engine_message(&f.stderr);
    Err(Error::invalid(if msg.is_empty() {
        format!("{what}: exited with status {}", f.code)
    } else {
        format!("{what}: {msg}")
    }))
}

/// An engine's state record (runc's and crun's `state`, and each entry of `list --format json`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EngineState {
    #[serde(default)]
    oci_version: String,
    id: String,
    #[serde(default)]
    pid: i32,
    status: String,
    #[serde(default)]
    bundle: PathBuf,
    #[serde(default)]
    rootfs: PathBuf,
    #[serde(default)]
    created: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

impl EngineState {
    fn into_ours(self) -> Result<(State, Status)> {
        let status = match self.status.as_str() {
            "creating" => Status::Creating,
            "created" => Status::Created,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "stopped" => Status::Stopped,
            other => return Err(Error::invalid(format!("unknown status {other:?}"))),
        };
        let state = State {
            oci_version: self.oci_version,
            id: self.id,
            pid: self.pid,
            pid_start_time: 0,
            bundle: self.bundle,
            rootfs: self.rootfs,
            created: self.created,
            owner: self.owner,
            annotations: self.annotations.unwrap_or_default(),
            cgroup_path: PathBuf::new(),
            systemd_unit: None,
            own_pid_namespace: true,
            hooks: None,
            proxmox: None,
            monitor: None,
        };
        Ok((state, status))
    }
}

fn normalise(stdout: &[u8]) -> Result<(State, Status)> {
    let s: EngineState =
        serde_json::from_slice(stdout).map_err(|e| Error::invalid(e.to_string()))?;
    s.into_ours()
}

/// `list`: the delegated containers, from one `list --format json` per engine that owns any.
/// Costs the native-only case one failed open of `<root>/engines`.
pub fn list_rows(cli: &Cli) -> Vec<(State, Status)> {
    let Ok(entries) = fs::read_dir(cli.root.join("engines")) else {
        return Vec::new();
    };
    let Ok(cfg) = config::get() else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for e in entries.flatten() {
        let Some(engine) = e.file_name().to_str().and_then(Engine::parse) else {
            continue;
        };
        // Our markers that name this engine, with the binary each was made with.
        let owned: Vec<(String, Owner)> = fs::read_dir(e.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|c| c.file_name().into_string().ok())
            .filter_map(|id| match owner_of(&cli.root, &id) {
                Some(Ok(o)) if o.engine == engine.name() => Some((id, o)),
                _ => None,
            })
            .collect();
        let Some((_, owner)) = owned.first() else {
            continue;
        };
        let mut cmd = engine_command(
            cli,
            owner,
            &["list".into(), "--format".into(), "json".into()],
            None,
        );
        let listed = process::run(&mut cmd, Io::Capture, Some(cfg.timeout), "list")
            .and_then(|f| failed(&f, &format!("{engine} list")).map(|_| f.stdout));
        let records: Vec<EngineState> = match listed.and_then(|out| {
            serde_json::from_slice::<Option<Vec<EngineState>>>(&out)
                .map_err(|e| Error::invalid(e.to_string()))
        }) {
            Ok(r) => r.unwrap_or_default(),
            Err(err) => {
                crate::log::warn(&format!("list: {engine}: {err}"));
                continue;
            }
        };
        for r in records {
            if owned.iter().any(|(id, _)| *id == r.id) {
                if let Ok(row) = r.into_ours() {
                    rows.push(row);
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> Spec {
        let mut base = json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}}, "linux": {}});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
            for (k, val) in extra {
                b.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn what_the_native_engine_declines_is_named() {
        assert_eq!(native_unsupported(&spec(json!({}))), None);
        let cases = [
            (
                json!({"linux": {"intelRdt": {"closID": "x"}}}),
                "linux.intelRdt",
            ),
            (
                json!({"linux": {"personality": {"domain": "LINUX32"}}}),
                "linux.personality",
            ),
        ];
        for (v, field) in cases {
            let why = native_unsupported(&spec(v.clone())).unwrap_or_default();
            assert!(why.starts_with(field), "{v}: {why}");
        }
        // Served natively (refused there, naming the field, where the host cannot).
        for v in [
            json!({"linux": {"mountLabel": "system_u:object_r:x"}}),
            json!({"process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                            "apparmorProfile": "p", "selinuxLabel": "l"}}),
            json!({"mounts": [{"destination": "/a", "type": "bind", "source": "/a",
                               "options": ["bind", "idmap"]}]}),
        ] {
            assert_eq!(native_unsupported(&spec(v.clone())), None, "{v}");
        }
    }

    #[test]
    fn engine_states_become_ours() {
        let (s, st) = normalise(
            br#"{"ociVersion":"1.0.2-dev","id":"c","pid":42,"status":"running",
                "bundle":"/b","rootfs":"/b/rootfs","created":"t","owner":""}"#,
        )
        .unwrap();
        assert_eq!((s.id.as_str(), s.pid, st), ("c", 42, Status::Running));
    }
}
