//! podman (with conmon, and catatonit for pods) on private storage, pointed at the runtime under
//! test.
//!
//! Everything podman keeps lives in the scenario's temp dir: `--root`, `--runroot`, and through a
//! private `containers.conf` (`CONTAINERS_CONF`) its tmp, static, volume, network-config and
//! image-copy dirs and the events log. Settings this host needs (see issue 6):
//! * the runtime is set explicitly (`--runtime` and `engine.runtime`): podman's default crun fails on
//!   this hybrid cgroup host;
//! * `--cgroup-manager cgroupfs` (no systemd here) and a cgroup parent of our own;
//! * `default_ulimits` within the hard limits: podman asks for nofile/nproc limits far above them by
//!   default, and root lacks CAP_SYS_RESOURCE here, so raising them fails in every runtime;
//! * `--events-backend file` (no journald).
//!
//! Containers get `--network=none`: a netns of their own without CNI, iptables or /etc/cni debris.
//! The image is made locally with `podman import` of a busybox rootfs tarball: no registry.

use super::env::{EngineDir, Rt, CMD_TIMEOUT};
use crate::common::{self, Out};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The image every podman scenario runs.
pub const IMAGE: &str = "localhost/busybox:lxcri";

/// podman's global flags and environment for storage below one dir.
pub struct PodmanConf {
    pub root: PathBuf,
    pub runroot: PathBuf,
    conf: PathBuf,
    tmp: PathBuf,
    runtime: PathBuf,
}

impl PodmanConf {
    /// Writes `containers.conf` below `dir`; podman will run `runtime`.
    pub fn new(dir: &Path, runtime: &Path) -> Self {
        let root = dir.join("root");
        let runroot = dir.join("runroot");
        let tmp = dir.join("tmp");
        let conf = dir.join("containers.conf");
        fs::create_dir_all(&tmp).expect("create podman tmp dir");
        let name = runtime
            .file_name()
            .expect("runtime file name")
            .to_string_lossy()
            .into_owned();
        let (nofile, nproc) = ulimits();
        let q = |p: &Path| format!("{:?}", p.to_string_lossy());
        let text = format!(
            r#"# Written by the engine tests (tests/engines/harness/podman.rs).
[containers]
# podman's defaults are far above this host's hard limits, which root cannot raise here.
default_ulimits = ["nofile={nofile}", "nproc={nproc}"]

[engine]
runtime = {name:?}
# The default list plus ours: podman then passes --log-format=json --log FILE, as for runc.
runtime_supports_json = ["crun", "runc", "kata", "runsc", "krun", "proxmox-lxcri"]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = {events}
tmp_dir = {libpod_tmp}
static_dir = {static_dir}
volume_path = {volumes}
image_copy_tmp_dir = {tmp}
# Empty unless a scenario puts OCI hook definitions there.
hooks_dir = [{hooks}]

[engine.runtimes]
{name:?} = [{runtime}]

[network]
network_config_dir = {net}
"#,
            events = q(&dir.join("events.log")),
            libpod_tmp = q(&dir.join("libpod-tmp")),
            static_dir = q(&root.join("libpod")),
            volumes = q(&root.join("volumes")),
            tmp = q(&tmp),
            runtime = q(runtime),
            net = q(&dir.join("net")),
            hooks = q(&dir.join("hooks.d")),
        );
        fs::create_dir_all(dir.join("hooks.d")).expect("create hooks dir");
        fs::write(&conf, text).expect("write containers.conf");
        PodmanConf {
            root,
            runroot,
            conf,
            tmp,
            runtime: runtime.to_path_buf(),
        }
    }

    /// `env K=V... podman GLOBALS... args...` as an argv.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let mut v = vec![
            format!("CONTAINERS_CONF={}", s(&self.conf)),
            format!("TMPDIR={}", s(&self.tmp)),
            "podman".into(),
            "--root".into(),
            s(&self.root),
            "--runroot".into(),
            s(&self.runroot),
            "--storage-driver".into(),
            "overlay".into(),
            "--runtime".into(),
            s(&self.runtime),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
        ];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }

    /// The mount containers/storage keeps while podman has the store open: its overlay dir bound
    /// onto itself (made private). It is podman's, not a container's.
    pub fn storage_mount(&self) -> PathBuf {
        self.root.join("overlay")
    }

    /// Where podman looks for OCI hook definitions (`*.json`).
    pub fn hooks_dir(&self) -> PathBuf {
        self.root
            .parent()
            .expect("root has a parent")
            .join("hooks.d")
    }
}

/// `default_ulimits` values: modest, soft below hard, never above the current hard limits.
pub fn ulimits() -> (String, String) {
    use nix::sys::resource::{getrlimit, Resource};
    let pair = |r: Resource, want: u64| {
        let hard = getrlimit(r).map(|(_, h)| h).unwrap_or(want);
        let hard = hard.min(want);
        format!("{}:{}", hard / 2, hard)
    };
    (
        pair(Resource::RLIMIT_NOFILE, 8192),
        pair(Resource::RLIMIT_NPROC, 4096),
    )
}

/// A podman scenario's engine: see the module documentation.
pub struct Podman {
    pub conf: PodmanConf,
    pub env: EngineDir,
}

impl Podman {
    /// Private podman storage with the busybox image imported, running `rt` through the wrapper.
    #[track_caller]
    pub fn new(rt: Rt) -> Self {
        let env = EngineDir::new(rt);
        let conf = PodmanConf::new(&env.dir, &env.wrapper);
        let p = Podman { conf, env };
        let tar = busybox_tarball(&p.env.dir);
        p.ok(&[
            "import",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            &tar.to_string_lossy(),
            IMAGE,
        ]);
        p
    }

    /// `podman ARGS...`.
    #[track_caller]
    pub fn podman(&self, args: &[&str]) -> Out {
        self.env.exec("/usr/bin/env", &self.conf.argv(args))
    }

    /// `podman ARGS...`, which must succeed; its stdout, trimmed.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(out.ok(), "podman failed:\n{out}");
        out.stdout.trim().to_string()
    }

    /// `podman run --network=none --cgroup-parent=OURS ARGS...`.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Out {
        let parent = format!("--cgroup-parent={}", self.env.cgroup_parent());
        let mut a = vec!["run", "--network=none", parent.as_str()];
        a.extend_from_slice(args);
        self.podman(&a)
    }

    /// `podman inspect --format FORMAT ID`.
    #[track_caller]
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, id])
    }

    /// The host pid of a running container's init.
    #[track_caller]
    pub fn pid(&self, id: &str) -> i64 {
        let s = self.inspect(id, "{{.State.Pid}}");
        s.parse()
            .unwrap_or_else(|_| panic!("podman inspect: bad pid {s:?}"))
    }

    /// Waits until `podman logs ID` contains `needle`.
    #[track_caller]
    pub fn wait_logs(&self, id: &str, needle: &str) {
        let mut last = String::new();
        let ok = common::wait_until(CMD_TIMEOUT, || {
            let out = self.podman(&["logs", id]);
            last = out.to_string();
            out.stdout.contains(needle)
        });
        assert!(ok, "container {id} never logged {needle:?}:\n{last}");
    }

    /// Removes all containers and pods the normal way, then asserts that nothing is left.
    #[track_caller]
    pub fn remove_all_and_check(&self) {
        self.ok(&["pod", "rm", "--all", "--force"]);
        self.ok(&["rm", "--all", "--force"]);
        let left = self.ok(&["ps", "--all", "--quiet"]);
        assert!(left.is_empty(), "podman still lists containers: {left}");
        self.env.assert_clean(&[self.conf.storage_mount()], None);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Best effort: podman's own removal first (it unmounts what it mounted), then the
        // EngineDir's teardown catches the rest.
        for args in [
            &["pod", "rm", "--all", "--force", "--time", "0"][..],
            &["rm", "--all", "--force", "--time", "0"][..],
        ] {
            let argv = self.conf.argv(args);
            let io = self.env.path("io");
            let _ = std::panic::catch_unwind(|| {
                common::exec(
                    Path::new("/usr/bin/env"),
                    &argv,
                    &io,
                    &common::ExecOpts {
                        timeout: Some(Duration::from_secs(20)),
                        ..Default::default()
                    },
                )
            });
        }
    }
}

/// Makes `DIR/busybox.tar`: the test suite's busybox rootfs with every applet linked.
pub fn busybox_tarball(dir: &Path) -> PathBuf {
    let rootfs = dir.join("image-rootfs");
    common::build_rootfs(&rootfs);
    let list = common::host_cmd("/bin/busybox", &["--list"]);
    list.assert_ok();
    for applet in list.stdout.lines().map(str::trim) {
        let link = rootfs.join("bin").join(applet);
        if !applet.is_empty() && applet != "busybox" && link.symlink_metadata().is_err() {
            symlink("busybox", &link).expect("link applet");
        }
    }
    let tar = dir.join("busybox.tar");
    common::host_cmd(
        "/usr/bin/tar",
        &[
            "-C",
            &rootfs.to_string_lossy(),
            "--numeric-owner",
            "-cf",
            &tar.to_string_lossy(),
            ".",
        ],
    )
    .assert_ok();
    fs::remove_dir_all(&rootfs).expect("remove image rootfs");
    tar
}
