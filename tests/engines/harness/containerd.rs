//! A private containerd, driven with `ctr`, whose runc v2 shim runs the runtime under test.
//!
//! containerd is started in the background with a config of its own: root, state, gRPC and ttrpc
//! sockets and the `opt` dir below the scenario's temp dir, the CRI plugin (and snapshotters that do
//! not apply here) disabled. It is stopped by its pid. The namespace is the scenario's name, so
//! that the cgroups containerd asks for (`/<ns>/<id>`) lie below ours. `ctr run` gets
//! `--runc-binary WRAPPER` (containerd 1.6 passes it to the shim as the runc options' `BinaryName`),
//! `--runc-root` (the shim's `Root`) and `--fifo-dir` below the temp dir.
//!
//! The one thing left outside the temp dir is containerd 1.6's fixed socket dir for shims,
//! `/run/containerd/s` (each shim removes its own socket when it exits; the check asserts that every
//! shim exited).
//!
//! The image is the podman scenarios' busybox tarball, imported into a throwaway podman store,
//! saved with `podman save --format oci-archive` and imported with `ctr image import`: no registry.

use super::env::{EngineDir, Rt, CMD_TIMEOUT};
use super::podman::{busybox_tarball, PodmanConf, IMAGE};
use crate::common::{self, Out};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A containerd scenario's engine: see the module documentation.
pub struct Containerd {
    pub env: EngineDir,
    daemon: Option<Child>,
    pub sock: PathBuf,
}

impl Containerd {
    /// Starts containerd and imports the busybox image; the shim will run `rt` through the wrapper.
    #[track_caller]
    pub fn new(rt: Rt) -> Self {
        let env = EngineDir::new(rt);
        let sock = env.path("containerd.sock");
        let config = env.path("containerd.toml");
        let q = |p: PathBuf| format!("{:?}", p.to_string_lossy());
        fs::write(
            &config,
            format!(
                r#"# Written by the engine tests (tests/engines/harness/containerd.rs).
version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}
"#,
                root = q(env.path("root")),
                state = q(env.path("state")),
                sock = q(sock.clone()),
                ttrpc = q(env.path("containerd.sock.ttrpc")),
                opt = q(env.path("opt")),
            ),
        )
        .expect("write containerd config");
        let log = fs::File::create(env.path("containerd.log")).expect("create containerd log");
        let daemon = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&config)
            // The shims inherit it: their process.json and console-socket dirs go below ours.
            .env("TMPDIR", env.path("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start /usr/bin/containerd: {e}"));
        let c = Containerd {
            env,
            daemon: Some(daemon),
            sock,
        };
        let mut last = String::new();
        let up = common::wait_until(Duration::from_secs(10), || {
            let out = c.ctr(&["version"]);
            last = out.to_string();
            out.ok()
        });
        assert!(
            up,
            "containerd did not come up:\n{last}\n{}",
            c.daemon_log()
        );
        let archive = c.build_image();
        c.ok(&["image", "import", &archive.to_string_lossy()]);
        c
    }

    /// The namespace (the scenario's name).
    pub fn ns(&self) -> &str {
        &self.env.name
    }

    /// The busybox image as an OCI archive, made with a throwaway podman store that is removed
    /// again at once.
    fn build_image(&self) -> PathBuf {
        let dir = self.env.path("imgbuild");
        let conf = PodmanConf::new(&dir, Path::new(common::RUNC));
        let tar = busybox_tarball(&dir);
        let archive = self.env.path("busybox.oci.tar");
        for args in [
            vec![
                "import",
                "--change",
                r#"CMD ["/bin/sh"]"#,
                &*tar.to_string_lossy(),
                IMAGE,
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
            vec![
                "save".into(),
                "--format".into(),
                "oci-archive".into(),
                "--output".into(),
                archive.to_string_lossy().into_owned(),
                IMAGE.into(),
            ],
        ] {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = self.env.exec("/usr/bin/env", &conf.argv(&a));
            assert!(out.ok(), "building the image failed:\n{out}");
        }
        common::remove_tree(&dir);
        assert!(
            !dir.exists(),
            "could not remove the image build dir {}",
            dir.display()
        );
        archive
    }

    /// `ctr --address SOCK --namespace NS ARGS...`.
    #[track_caller]
    pub fn ctr(&self, args: &[&str]) -> Out {
        self.env.exec("/usr/bin/ctr", &self.ctr_argv(args))
    }

    /// The argv of [`Containerd::ctr`] (without the program).
    pub fn ctr_argv(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            "--address".to_string(),
            self.sock.to_string_lossy().into_owned(),
            "--namespace".to_string(),
            self.ns().to_string(),
        ];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }

    /// `ctr ARGS...`, which must succeed; its stdout, trimmed.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(out.ok(), "ctr failed:\n{out}\n{}", self.daemon_log());
        out.stdout.trim().to_string()
    }

    /// The flags that make `ctr run` use the runtime under test with private state.
    pub fn run_flags(&self) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            self.env.wrapper.to_string_lossy().into_owned(),
            "--runc-root".into(),
            self.env.path_str("runc-root"),
            "--fifo-dir".into(),
            self.env.path_str("fifo"),
        ]
    }

    /// `ctr run RUN_FLAGS EXTRA... IMAGE ID ARGS...`.
    #[track_caller]
    pub fn run(&self, extra: &[&str], id: &str, args: &[&str]) -> Out {
        let flags = self.run_flags();
        let mut a: Vec<&str> = vec!["run"];
        a.extend(flags.iter().map(String::as_str));
        a.extend_from_slice(extra);
        a.push(IMAGE);
        a.push(id);
        a.extend_from_slice(args);
        self.ctr(&a)
    }

    /// `(id, pid, status)` of each task.
    #[track_caller]
    pub fn tasks(&self) -> Vec<(String, i64, String)> {
        self.ok(&["task", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.to_string(),
                ))
            })
            .collect()
    }

    /// The status `ctr task ls` shows for `id`.
    #[track_caller]
    pub fn task_status(&self, id: &str) -> Option<String> {
        self.tasks()
            .into_iter()
            .find(|(t, _, _)| t == id)
            .map(|(_, _, s)| s)
    }

    /// Waits until task `id` has status `want`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, want: &str) {
        let ok = common::wait_until(CMD_TIMEOUT, || {
            self.task_status(id).as_deref() == Some(want)
        });
        assert!(
            ok,
            "task {id} never reached {want}; tasks: {:?}",
            self.tasks()
        );
    }

    /// The last lines of containerd's log (the shim's errors end up there).
    pub fn daemon_log(&self) -> String {
        let text = fs::read_to_string(self.env.path("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("loading plugin"))
            .collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        format!("--- containerd log (tail) ---\n{}", tail.join("\n"))
    }

    /// Deletes every task, container and image, stops containerd, then asserts that nothing is
    /// left.
    #[track_caller]
    pub fn remove_all_and_check(&mut self) {
        let tasks = self.tasks();
        assert!(tasks.is_empty(), "tasks are left: {tasks:?}");
        for c in self.ok(&["container", "ls", "--quiet"]).lines() {
            self.ok(&["container", "rm", c.trim()]);
        }
        self.ok(&["image", "rm", IMAGE]);
        // Stopped first, so that a shim left behind shows as a stray process.
        self.stop();
        self.env.assert_clean(&[], None);
    }

    /// Stops containerd: SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        let Some(mut d) = self.daemon.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(d.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = common::wait_until(Duration::from_secs(10), || {
            matches!(d.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.daemon_log());
        }
        if self.daemon.is_some() {
            // Best effort: let the shims delete what they made before containerd goes away.
            let argv = self.ctr_argv(&["task", "ls", "--quiet"]);
            let io = self.env.path("io");
            let quick = common::ExecOpts {
                timeout: Some(Duration::from_secs(10)),
                ..Default::default()
            };
            let run = |args: &[String]| {
                std::panic::catch_unwind(|| {
                    common::exec(Path::new("/usr/bin/ctr"), args, &io, &quick)
                })
                .ok()
            };
            if let Some(out) = run(&argv) {
                for t in out.stdout.lines().map(str::trim).filter(|t| !t.is_empty()) {
                    let _ = run(&self.ctr_argv(&["task", "kill", "--signal", "SIGKILL", t]));
                    let _ = run(&self.ctr_argv(&["task", "delete", "--force", t]));
                }
            }
            if let Some(out) = run(&self.ctr_argv(&["container", "ls", "--quiet"])) {
                for c in out.stdout.lines().map(str::trim).filter(|c| !c.is_empty()) {
                    let _ = run(&self.ctr_argv(&["container", "rm", c]));
                }
            }
        }
        self.stop();
    }
}
