//! Runtime-spec hooks: every kind, in order, where the spec says it runs,
//! with the container state on stdin; timeouts; what a failing hook does.
//!
//! Each hook is busybox's `sh -c SCRIPT NAME`: the hook's `path` is a busybox
//! binary and `args[0]` is "sh", so busybox runs its shell only if args[0]
//! really reaches the hook as argv[0]. Hooks record what they see in files
//! under the container's host dir (`host/log`, bind-mounted at `/hooklog` for
//! the hooks that run inside the container).

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const STAGES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Where the startContainer hook binary lives in the rootfs (and nowhere on
/// the host): its path must resolve in the container.
const IN_CONTAINER_BUSYBOX: &str = "/bin/busybox-for-hooks";

struct Hooked {
    c: Container,
    /// Host dir the hooks write to.
    log: PathBuf,
}

impl Hooked {
    fn new() -> Self {
        let mut c = Container::new();
        let log = c.host.join("log");
        fs::create_dir_all(&log).unwrap();
        fs::copy("/bin/busybox", c.rootfs.join(&IN_CONTAINER_BUSYBOX[1..])).unwrap();
        assert!(
            !Path::new(IN_CONTAINER_BUSYBOX).exists(),
            "{IN_CONTAINER_BUSYBOX} exists on the host: the test would prove nothing"
        );
        c.add_mount(json!({
            "destination": "/hooklog", "type": "bind",
            "source": log.to_string_lossy(), "options": ["rbind", "rw"]
        }));
        Hooked { c, log }
    }

    /// The log dir as the hook of `stage` sees it.
    fn log_for(&self, stage: &str) -> String {
        if stage == "startContainer" {
            "/hooklog".into()
        } else {
            self.log.to_string_lossy().into_owned()
        }
    }

    /// A hook of `stage` running `script` (with $LOG set to the log dir).
    fn hook(&self, stage: &str, script: &str) -> Value {
        let path = if stage == "startContainer" {
            IN_CONTAINER_BUSYBOX
        } else {
            "/bin/busybox"
        };
        json!({
            "path": path,
            "args": ["sh", "-c", script, format!("{stage}-argv")],
            "env": [
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                format!("LOG={}", self.log_for(stage)),
                format!("HOOK_STAGE={stage}"),
            ],
        })
    }

    /// A hook that records its stdin, argv, env and namespaces as
    /// `$LOG/<name>.*` and appends `<name>` to `$LOG/order`.
    fn recorder(&self, stage: &str, name: &str) -> Value {
        self.hook(
            stage,
            &format!(
                "cat > $LOG/{name}.json; \
                 echo \"$0 $*\" > $LOG/{name}.args; env > $LOG/{name}.env; \
                 readlink /proc/self/ns/mnt > $LOG/{name}.mnt; \
                 readlink /proc/self/ns/net > $LOG/{name}.net; \
                 readlink /proc/self/ns/uts > $LOG/{name}.uts; \
                 hostname > $LOG/{name}.hostname; echo {name} >> $LOG/order"
            ),
        )
    }

    fn set_hooks(&mut self, stage: &str, hooks: Vec<Value>) -> &mut Self {
        self.c.set(&format!("/hooks/{stage}"), json!(hooks));
        self
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.log.join(file))
            .unwrap_or_else(|e| panic!("hook log {file}: {e} (hook did not run?)"))
    }

    fn state(&self, name: &str) -> Value {
        let text = self.read(&format!("{name}.json"));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}: stdin is not state JSON ({e}): {text:?}"))
    }

    fn order(&self) -> Vec<String> {
        fs::read_to_string(self.log.join("order"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

fn own_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn ns_of(pid: i64, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Every hook kind runs, in the spec's order, each with the state the spec
/// gives for that point on stdin.
#[test]
fn every_hook_runs_in_order_with_the_state_on_stdin() {
    if runtime_is_runc_1_1() {
        eprintln!("skipped: runc 1.1 runs the poststart hooks at create time");
        return;
    }
    let mut h = Hooked::new();
    for stage in STAGES {
        let mut hook = h.recorder(stage, stage);
        if *stage == "startContainer" {
            // A slow one: poststart must still wait for it and the exec.
            let script = format!("sleep 0.5; {}", hook["args"][2].as_str().unwrap());
            hook["args"][2] = json!(script);
        }
        h.set_hooks(stage, vec![hook]);
    }
    h.c.set("/annotations", json!({ "org.example.hooks": "yes" }))
        .sh("echo process >> /hooklog/order; exec sleep 1000000");
    h.c.create().assert_ok();
    assert_eq!(
        h.order(),
        ["prestart", "createRuntime", "createContainer"],
        "after create"
    );
    let pid = h.c.pid();
    h.c.start().assert_ok();
    assert!(
        wait_until(WAIT, || h.order().len() >= 6),
        "after start: {:?}",
        h.order()
    );
    h.c.kill(Some("KILL")).assert_ok();
    h.c.wait_status("stopped", WAIT);
    h.c.delete().assert_ok();

    let order = h.order();
    assert_eq!(
        order[..4],
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer"
        ],
        "{order:?}"
    );
    // The user process and the poststart hooks may run in either order; the
    // poststart hooks only after startContainer.
    let mut middle = order[4..6].to_vec();
    middle.sort();
    assert_eq!(middle, ["poststart", "process"], "{order:?}");
    assert_eq!(order[6..], ["poststop"], "{order:?}");

    let want_status = [
        ("prestart", "creating"),
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
        ("startContainer", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ];
    for (stage, status) in want_status {
        let st = h.state(stage);
        assert_eq!(st["status"], status, "{stage}: {st}");
        assert_eq!(st["id"], h.c.id.as_str(), "{stage}: {st}");
        assert_eq!(st["ociVersion"], "1.0.2-dev", "{stage}: {st}");
        assert_eq!(
            st["bundle"],
            h.c.bundle.to_string_lossy().as_ref(),
            "{stage}: {st}"
        );
        assert_eq!(
            st["annotations"]["org.example.hooks"], "yes",
            "{stage}: {st}"
        );
        if stage != "poststop" && is_ours() {
            // The init's pid as the host sees it (runc gives the in-container
            // pid to createContainer and startContainer hooks).
            assert_eq!(st["pid"], pid, "{stage}: {st}");
        }
    }
    for stage in ["prestart", "createRuntime", "poststart"] {
        assert_eq!(h.state(stage)["pid"], pid, "{stage}");
    }
}

/// `args[0]` is the hook's argv[0], the rest its arguments; `env` is its
/// whole environment.
#[test]
fn hooks_get_their_args_and_only_their_env() {
    let mut h = Hooked::new();
    let mut hook = h.recorder("createRuntime", "cr");
    hook["args"]
        .as_array_mut()
        .unwrap()
        .extend([json!("a1"), json!("a 2")]);
    h.set_hooks("createRuntime", vec![hook]);
    h.c.sh("true");
    h.c.create().assert_ok();
    // busybox ran its `sh` applet: argv[0] was "sh"; `sh -c SCRIPT NAME A...`
    // makes NAME $0 and A... the positional arguments.
    assert_eq!(h.read("cr.args"), "createRuntime-argv a1 a 2\n");
    let env = h.read("cr.env");
    let keys: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(env.contains("HOOK_STAGE=createRuntime\n"), "{env}");
    for k in &keys {
        assert!(
            ["PATH", "LOG", "HOOK_STAGE", "PWD", "SHLVL", "OLDPWD", "_"].contains(k),
            "hook env has {k}, which the spec did not give:\n{env}"
        );
    }
}

/// prestart and createRuntime run in the runtime's namespaces;
/// createContainer in the container's (mount, network, uts), before
/// pivot_root so that its path resolves on the host; startContainer inside
/// the container, its path resolved in the container's root.
#[test]
fn hooks_run_in_the_namespaces_the_spec_gives() {
    let mut h = Hooked::new();
    for stage in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
    ] {
        let hook = h.recorder(stage, stage);
        h.set_hooks(stage, vec![hook]);
    }
    h.c.hostname("hooked-box").sh("exec sleep 1000000");
    h.c.create().assert_ok();
    let init = h.c.pid();
    h.c.start().assert_ok();
    assert!(wait_until(WAIT, || h.order().len() == 4), "{:?}", h.order());
    let host_hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    for stage in ["prestart", "createRuntime"] {
        for ns in ["mnt", "net", "uts"] {
            let seen = h.read(&format!("{stage}.{ns}"));
            assert_eq!(seen.trim(), own_ns(ns), "{stage}: {ns} namespace");
        }
        assert_eq!(
            h.read(&format!("{stage}.hostname")),
            host_hostname,
            "{stage}"
        );
    }
    for stage in ["createContainer", "startContainer"] {
        for ns in ["mnt", "net", "uts"] {
            let seen = h.read(&format!("{stage}.{ns}"));
            assert_eq!(seen.trim(), ns_of(init, ns), "{stage}: {ns} namespace");
        }
    }
    // startContainer runs after the hostname is set (runc sets it after the
    // createContainer hooks, we before).
    assert_eq!(h.read("startContainer.hostname"), "hooked-box\n");
    assert_ne!(ns_of(init, "mnt"), own_ns("mnt"));
}

/// A hook's output goes to the runtime's log, not to the container's stdio.
#[test]
fn hook_output_goes_to_the_runtime_log() {
    if skip_unless_ours() {
        return;
    }
    let mut h = Hooked::new();
    let hook = h.hook(
        "createRuntime",
        "echo out-of-the-hook; echo err-of-the-hook >&2",
    );
    h.set_hooks("createRuntime", vec![hook]);
    h.c.sh("true");
    let log = h.c.host.join("runtime.log");
    let l = log.to_string_lossy().into_owned();
    h.c.write_config();
    let b = h.c.bundle.to_string_lossy().into_owned();
    let out = h.c.rt(&["--log", &l, "create", "--bundle", &b, &h.c.id]);
    out.assert_ok();
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("out-of-the-hook"), "{text}");
    assert!(text.contains("err-of-the-hook"), "{text}");
    assert!(!h.c.container_stdout().contains("of-the-hook"));
}

// ---------------------------------------------------------------------------
// Failures before start: create fails, nothing is left
// ---------------------------------------------------------------------------

/// A hook that records its state (for the init pid), says why on stderr and
/// exits 3.
fn failing(h: &Hooked, stage: &str) -> Value {
    h.hook(
        stage,
        &format!("cat > $LOG/failed-{stage}.json; echo hook-says-no >&2; exit 3"),
    )
}

#[track_caller]
fn assert_create_fails_cleanly(h: &Hooked, stage: &str, index: usize) {
    let out = h.c.create();
    out.assert_fail();
    check_our_message(&out, &format!("name hooks.{stage}[{index}]"), |e| {
        e.contains(&format!("hooks.{stage}[{index}]")) && e.contains("hook-says-no")
    });
    let st = h.state(&format!("failed-{stage}"));
    let pid = st["pid"].as_i64().expect("state.pid");
    assert!(pid > 0, "{st}");
    // runc gives createContainer hooks the pid inside the container.
    let host_pid = stage != "createContainer" || is_ours();
    h.c.assert_no_debris(host_pid.then_some(pid));
    // The process never ran.
    assert!(!h.log.join("process-ran").exists());
    // And the poststop hooks ran (runtime-spec lifecycle: a failing hook
    // before start continues the lifecycle at the destroy step).
    assert!(
        h.order().contains(&"poststop".to_string()),
        "poststop hooks did not run: {:?}",
        h.order()
    );
}

fn failing_before_start(stage: &str) {
    let mut h = Hooked::new();
    let f = failing(&h, stage);
    let ps = h.recorder("poststop", "poststop");
    h.set_hooks(stage, vec![f]).set_hooks("poststop", vec![ps]);
    h.c.sh("touch /hooklog/process-ran");
    assert_create_fails_cleanly(&h, stage, 0);
}

#[test]
fn a_failing_prestart_hook_fails_create_without_debris() {
    failing_before_start("prestart");
}

#[test]
fn a_failing_create_runtime_hook_fails_create_without_debris() {
    failing_before_start("createRuntime");
}

#[test]
fn a_failing_create_container_hook_fails_create_without_debris() {
    failing_before_start("createContainer");
}

/// The hooks of a stage run in order and the first failure stops them: the
/// error names the failing index.
#[test]
fn hooks_after_a_failing_one_do_not_run() {
    let mut h = Hooked::new();
    let first = h.recorder("createRuntime", "first");
    let f = failing(&h, "createRuntime");
    let third = h.recorder("createRuntime", "third");
    let ps = h.recorder("poststop", "poststop");
    h.set_hooks("createRuntime", vec![first, f, third])
        .set_hooks("poststop", vec![ps]);
    h.c.sh("touch /hooklog/process-ran");
    assert_create_fails_cleanly(&h, "createRuntime", 1);
    assert_eq!(h.order(), ["first", "poststop"]);
}

/// A hook that runs past its timeout is killed, with everything it started,
/// and fails create.
#[test]
fn a_hook_past_its_timeout_fails_create_without_debris() {
    if runtime_is_runc_1_1() {
        eprintln!("skipped: runc 1.1 kills only the hook, then waits for its children's output");
        return;
    }
    let mut h = Hooked::new();
    let mut hook = h.hook(
        "createRuntime",
        "cat > $LOG/failed-createRuntime.json; sleep 60 & echo $! > $LOG/child.pid; wait",
    );
    hook["timeout"] = json!(1);
    h.set_hooks("createRuntime", vec![hook]);
    h.c.sh("touch /hooklog/process-ran");
    let t = Instant::now();
    let out = h.c.create();
    let took = t.elapsed();
    out.assert_fail();
    assert!(took < Duration::from_secs(10), "create took {took:?}");
    assert!(took >= Duration::from_secs(1), "create took {took:?}");
    check_our_message(&out, "name the hook and the timeout", |e| {
        e.contains("hooks.createRuntime[0]") && e.contains("timed out")
    });
    let st = h.state("failed-createRuntime");
    h.c.assert_no_debris(st["pid"].as_i64());
    let child: i64 = h.read("child.pid").trim().parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(child)),
        "the hook's child {child} outlived the timeout"
    );
}

/// A hook within its timeout is fine.
#[test]
fn a_hook_within_its_timeout_succeeds() {
    let mut h = Hooked::new();
    let mut hook = h.recorder("createRuntime", "cr");
    hook["timeout"] = json!(5);
    h.set_hooks("createRuntime", vec![hook]);
    h.c.sh("true");
    h.c.create().assert_ok();
    assert_eq!(h.order(), ["cr"]);
}

/// A hook that writes more than a pipe holds does not hang the runtime.
#[test]
fn a_chatty_hook_does_not_hang_create() {
    let mut h = Hooked::new();
    let hook = h.hook(
        "createRuntime",
        "i=0; while [ $i -lt 3000 ]; do echo 'a line of hook output, long enough to fill a pipe'; i=$((i+1)); done; echo done > $LOG/chatty",
    );
    h.set_hooks("createRuntime", vec![hook]);
    h.c.sh("true");
    let out = h.c.create_opts(
        &[],
        &ExecOpts {
            timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        },
    );
    out.assert_ok();
    assert_eq!(h.read("chatty"), "done\n");
}

/// A hook that exits without reading its stdin does not take the runtime
/// down with it (SIGPIPE), even when the state is larger than a pipe holds
/// (big annotations) — also not the init of a container without a pid
/// namespace of its own (a pid namespace's init is immune to SIGPIPE).
#[test]
fn a_hook_that_ignores_its_stdin_is_no_error() {
    let mut h = Hooked::new();
    let big = "x".repeat(200_000);
    h.c.set("/annotations", json!({ "org.example.big": big }))
        .remove_namespace("pid");
    for stage in ["createRuntime", "createContainer"] {
        let hook = h.hook(stage, &format!("echo {stage} >> $LOG/order"));
        h.set_hooks(stage, vec![hook]);
    }
    h.c.sh("echo process >> /hooklog/order");
    h.c.create().assert_ok();
    h.c.start().assert_ok();
    h.c.wait_status("stopped", WAIT);
    assert_eq!(h.order(), ["createRuntime", "createContainer", "process"]);
}

// ---------------------------------------------------------------------------
// Failures from start on
// ---------------------------------------------------------------------------

/// A failing startContainer hook stops the container: the user process
/// never runs.
#[test]
fn a_failing_start_container_hook_stops_the_container() {
    let mut h = Hooked::new();
    let f = failing(&h, "startContainer");
    h.set_hooks("startContainer", vec![f]);
    h.c.sh("touch /hooklog/process-ran; sleep 1000000");
    h.c.create().assert_ok();
    // runc's `start` returns before the init runs the hook, so it cannot
    // report the failure; neither can we.
    let _ = h.c.start();
    h.c.wait_status("stopped", WAIT);
    assert!(!h.log.join("process-ran").exists(), "the process ran");
    check_our_text(
        &h.c.container_stderr(),
        "report the hook failure on the container's stderr",
        |t| t.contains("hooks.startContainer[0]"),
    );
}

/// A failing poststart hook is a warning: start succeeds and the container
/// keeps running.
#[test]
fn a_failing_poststart_hook_is_only_a_warning() {
    if runtime_is_runc_1_1() {
        eprintln!("skipped: runc 1.1 runs the poststart hooks at create time, and fails it");
        return;
    }
    let mut h = Hooked::new();
    let f = failing(&h, "poststart");
    let second = h.recorder("poststart", "second");
    h.set_hooks("poststart", vec![f, second]);
    h.c.sh("exec sleep 1000000");
    h.c.create().assert_ok();
    let out = h.c.start();
    out.assert_ok();
    check_our_message(&out, "warn naming hooks.poststart[0]", |e| {
        e.contains("warning") && e.contains("hooks.poststart[0]")
    });
    assert_eq!(h.c.status(), "running");
    assert!(pid_alive(h.c.pid()));
    // Per the spec the remaining hooks continue "as if the hook had succeeded".
    assert_eq!(
        h.order(),
        ["second"],
        "the later poststart hook did not run"
    );
}

/// A failing poststop hook is a warning: delete succeeds and removes
/// everything.
#[test]
fn a_failing_poststop_hook_is_only_a_warning() {
    let mut h = Hooked::new();
    let f = failing(&h, "poststop");
    let second = h.recorder("poststop", "second");
    h.set_hooks("poststop", vec![f, second]);
    h.c.sh("true");
    h.c.run_detached().assert_ok();
    h.c.wait_status("stopped", WAIT);
    let out = h.c.delete();
    out.assert_ok();
    check_our_message(&out, "warn naming hooks.poststop[0]", |e| {
        e.contains("warning") && e.contains("hooks.poststop[0]")
    });
    h.c.assert_no_debris(None);
    assert_eq!(h.state("failed-poststop")["status"], "stopped");
    if runtime_is_runc_1_1() {
        eprintln!("skipped: runc 1.1 stops at the first failing poststop hook");
        return;
    }
    assert_eq!(h.order(), ["second"], "the later poststop hook did not run");
}

/// `delete --force` of a running container runs the poststop hooks too.
#[test]
fn poststop_hooks_run_on_forced_delete() {
    let mut h = Hooked::new();
    let ps = h.recorder("poststop", "poststop");
    h.set_hooks("poststop", vec![ps]);
    h.c.sh("exec sleep 1000000");
    h.c.run_detached().assert_ok();
    h.c.delete_force().assert_ok();
    assert_eq!(h.order(), ["poststop"]);
    assert_eq!(h.state("poststop")["status"], "stopped");
    h.c.assert_no_debris(None);
}

/// A hook whose path does not exist fails create, naming the hook.
#[test]
fn a_missing_hook_binary_fails_create_cleanly() {
    let mut h = Hooked::new();
    let mut hook = h.hook("createRuntime", "true");
    hook["path"] = json!("/no/such/hook");
    h.set_hooks("createRuntime", vec![hook]);
    h.c.sh("true");
    let out = h.c.create();
    out.assert_fail();
    check_our_message(&out, "name the hook and its path", |e| {
        e.contains("hooks.createRuntime[0]") && e.contains("/no/such/hook")
    });
    h.c.assert_no_debris(None);
}
