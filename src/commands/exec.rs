//! `exec`: the process comes from --process (a runtime-spec process JSON) or from the command line
//! on top of the container's own process settings, as in runc.

use std::fs;
use std::str::FromStr;

use oci_spec::runtime::{Capability, LinuxCapabilities, Process, Spec};

use crate::cli::{Cli, ExecArgs};
use crate::container::create::write_pid_file;
use crate::container::exec::{exec, ExecOptions};
use crate::container::foreground;
use crate::error::{Context, Error, Result};
use crate::state::{status_of, ContainerDir, Status};

pub fn run(cli: &Cli, args: &ExecArgs) -> Result<i32> {
    let dir = ContainerDir::open(&cli.root, &args.id)?;
    let state = dir.load()?;
    match status_of(&dir, &state) {
        Status::Running | Status::Created => {}
        Status::Paused if args.ignore_paused => {}
        status => {
            return Err(Error::invalid(format!(
                "cannot exec in container {:?}: it is {status}",
                args.id
            )))
        }
    }
    let config = state.bundle.join("config.json");
    let data = fs::read(&config).ctx(|| format!("reading {}", config.display()))?;
    let spec: Spec = serde_json::from_slice(&data)
        .map_err(|e| Error::invalid(format!("{}: {e}", config.display())))?;
    let mut process = build_process(&spec, args)?;
    if let Some(profile) = &args.apparmor {
        process.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &args.process_label {
        process.set_selinux_label(Some(label.clone()));
    }
    // Before anything is started: a label that cannot be applied here is an error.
    crate::linux::lsm::Labels::of(&process).check("exec: process")?;
    // The container's seccomp profile applies to every process in it, as in runc.
    let seccomp = crate::linux::seccomp::Filter::for_spec(&spec, &cli.root)?;
    // Hold no lock while the process runs: other commands must get through.
    drop(dir);
    let started = exec(
        &state,
        &process,
        &ExecOptions {
            console_socket: args.console_socket.as_deref(),
            attach_terminal: !args.detach,
            preserve_fds: args.preserve_fds,
        },
        seccomp,
    )?;
    write_pid_file(args.pid_file.as_deref(), started.pid)?;
    if let Some(path) = &args.pidfd_socket {
        crate::container::create::send_pidfd(path, started.pid)?;
    }
    if args.detach {
        return Ok(0);
    }
    foreground::wait_forwarding(started.pid, started.terminal)
}

fn build_process(spec: &Spec, args: &ExecArgs) -> Result<Process> {
    if let Some(file) = &args.process {
        let data = fs::read(file).ctx(|| format!("--process {}", file.display()))?;
        let bad =
            |e: serde_json::Error| Error::invalid(format!("--process {}: {e}", file.display()));
        let mut value: serde_json::Value = serde_json::from_slice(&data).map_err(bad)?;
        // runc reads `user` into a Go struct: left out, it is uid 0, gid 0.
        if let Some(obj) = value.as_object_mut() {
            obj.entry("user")
                .or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
        }
        let p: Process = serde_json::from_value(value).map_err(bad)?;
        validate(&p, &format!("--process {}", file.display()))?;
        return Ok(p);
    }
    if args.command.is_empty() {
        return Err(Error::invalid(
            "exec: a command (or --process FILE) is required",
        ));
    }
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    p.set_console_size(None);
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(user) = &args.user {
        let mut u = p.user().clone();
        let (uid, gid) = match user.split_once(':') {
            Some((uid, gid)) => (uid, Some(gid)),
            None => (user.as_str(), None),
        };
        let num = |s: &str| {
            s.parse::<u32>().map_err(|_| {
                Error::invalid(format!("--user {user:?}: expected uid[:gid] as numbers"))
            })
        };
        u.set_uid(num(uid)?);
        if let Some(gid) = gid {
            u.set_gid(num(gid)?);
        }
        p.set_user(u);
    }
    if !args.additional_gids.is_empty() {
        let mut u = p.user().clone();
        u.set_additional_gids(Some(args.additional_gids.clone()));
        p.set_user(u);
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !args.cap.is_empty() {
        // Not oci-spec's Default: that one fills every set, the inheritable one too.
        let mut caps = p.capabilities().clone().unwrap_or_else(|| {
            let mut none = LinuxCapabilities::default();
            none.set_bounding(None)
                .set_effective(None)
                .set_inheritable(None)
                .set_permitted(None)
                .set_ambient(None);
            none
        });
        for name in &args.cap {
            let bare = name.strip_prefix("CAP_").unwrap_or(name);
            let cap = Capability::from_str(bare)
                .map_err(|_| Error::invalid(format!("--cap: unknown capability {name}")))?;
            let with = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = set.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            // Never the inheritable set (CVE-2022-29162: inheritable bits let file capabilities
            // of programs in the container raise their permitted set). Ambient needs inheritable,
            // so, as in runc, only when the spec gives an inheritable set of its own.
            let (b, e, pm) = (
                with(caps.bounding()),
                with(caps.effective()),
                with(caps.permitted()),
            );
            if caps.inheritable().is_some() {
                let a = with(caps.ambient());
                caps.set_ambient(a);
            }
            caps.set_bounding(b).set_effective(e).set_permitted(pm);
        }
        p.set_capabilities(Some(caps));
    }
    validate(&p, "exec")?;
    Ok(p)
}

fn validate(p: &Process, what: &str) -> Result<()> {
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::invalid(format!("{what}: args must not be empty")));
    }
    if !p.cwd().is_absolute() {
        return Err(Error::invalid(format!(
            "{what}: cwd {:?} must be an absolute path",
            p.cwd()
        )));
    }
    crate::linux::capabilities::CapabilitySets::from_spec(p.capabilities().as_ref())?;
    Ok(())
}
