//! `update`: new resource limits for a live container, from runc's flags or from a runtime-spec
//! LinuxResources JSON (`--resources FILE|-`), applied through libcgroups. Unlike runc, a key the
//! spec does not know is an error rather than silently ignored: a typo must not look applied.

use std::io::Read;

use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

use crate::cli::{Cli, UpdateArgs};
use crate::error::{Context, Error, Result};
use crate::linux::cgroups::Cgroup;
use crate::linux::resources::{self, parse_size};
use crate::state::{status_of, ContainerDir, Status};

pub fn run(cli: &Cli, args: &UpdateArgs) -> Result<i32> {
    let mut resources = match &args.resources {
        Some(source) => from_json(&read_source(source)?)?,
        None => from_flags(args)?,
    };
    // runc: a pids limit of 0 means "leave it", while libcgroups would write "max".
    if resources.pids().as_ref().is_some_and(|p| p.limit() == 0) {
        resources.set_pids(None);
    }
    resources::validate(&resources, "resources")?;
    let dir = ContainerDir::open(&cli.root, &args.id)?;
    let state = dir.load()?;
    let status = status_of(&dir, &state);
    if status == Status::Stopped {
        return Err(Error::invalid(format!(
            "cannot update container {:?}: it is stopped",
            args.id
        )));
    }
    Cgroup::for_state(&state)?
        .update(&resources)
        .ctx(|| format!("updating container {:?}", args.id))?;
    Ok(0)
}

fn read_source(source: &str) -> Result<String> {
    let mut text = String::new();
    if source == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .ctx(|| "--resources: reading stdin")?;
    } else {
        text = std::fs::read_to_string(source).ctx(|| format!("--resources: reading {source}"))?;
    }
    Ok(text)
}

fn from_json(text: &str) -> Result<LinuxResources> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("--resources: not JSON: {e}")))?;
    let resources: LinuxResources = serde_json::from_value(value.clone())
        .map_err(|e| Error::invalid(format!("--resources: {e}")))?;
    // A key that does not survive the round trip is one the spec does not define.
    let back = serde_json::to_value(&resources).map_err(|e| Error::invalid(e.to_string()))?;
    if let Some(key) = unknown_key(&value, &back, "resources") {
        return Err(Error::invalid(format!(
            "--resources: unknown key {key} (not in the runtime-spec's LinuxResources)"
        )));
    }
    Ok(resources)
}

fn unknown_key(given: &Value, known: &Value, at: &str) -> Option<String> {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => g.iter().find_map(|(key, v)| {
            let here = format!("{at}.{key}");
            match k.get(key) {
                _ if v.is_null() => None,
                None => Some(here),
                Some(kv) => unknown_key(v, kv, &here),
            }
        }),
        (Value::Array(g), Value::Array(k)) => g
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (gv, kv))| unknown_key(gv, kv, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// runc's flags, each parsed with an error naming it, into a LinuxResources.
fn from_flags(args: &UpdateArgs) -> Result<LinuxResources> {
    let mut memory = Map::new();
    let mut cpu = Map::new();
    let mut r = Map::new();
    let int = |flag: &str, v: &str| -> Result<Value> {
        v.parse::<i64>()
            .map(Value::from)
            .map_err(|e| Error::invalid(format!("invalid value for --{flag}: {v:?}: {e}")))
    };
    let uint = |flag: &str, v: &str| -> Result<Value> {
        v.parse::<u64>()
            .map(Value::from)
            .map_err(|e| Error::invalid(format!("invalid value for --{flag}: {v:?}: {e}")))
    };
    let size = |flag: &str, v: &str| -> Result<Value> {
        parse_size(v).map(Value::from).ok_or_else(|| {
            Error::invalid(format!(
                "invalid value for --{flag}: {v:?} is not a size (bytes, k, m, g; -1: no limit)"
            ))
        })
    };
    for (flag, key, v) in [
        ("memory", "limit", &args.memory),
        (
            "memory-reservation",
            "reservation",
            &args.memory_reservation,
        ),
        ("memory-swap", "swap", &args.memory_swap),
    ] {
        if let Some(v) = v {
            memory.insert(key.into(), size(flag, v)?);
        }
    }
    for (flag, key, v) in [
        ("cpu-period", "period", &args.cpu_period),
        ("cpu-burst", "burst", &args.cpu_burst),
        ("cpu-share", "shares", &args.cpu_share),
        ("cpu-rt-period", "realtimePeriod", &args.cpu_rt_period),
    ] {
        if let Some(v) = v {
            cpu.insert(key.into(), uint(flag, v)?);
        }
    }
    for (flag, key, v) in [
        ("cpu-quota", "quota", &args.cpu_quota),
        ("cpu-rt-runtime", "realtimeRuntime", &args.cpu_rt_runtime),
        ("cpu-idle", "idle", &args.cpu_idle),
    ] {
        if let Some(v) = v {
            cpu.insert(key.into(), int(flag, v)?);
        }
    }
    if let Some(v) = &args.cpuset_cpus {
        cpu.insert("cpus".into(), json!(v));
    }
    if let Some(v) = &args.cpuset_mems {
        cpu.insert("mems".into(), json!(v));
    }
    for (flag, v) in [
        ("kernel-memory", &args.kernel_memory),
        ("kernel-memory-tcp", &args.kernel_memory_tcp),
    ] {
        if v.is_some() {
            crate::log::warn(&format!("setting --{flag} is ignored and will be removed"));
        }
    }
    if let Some(v) = &args.pids_limit {
        r.insert("pids".into(), json!({ "limit": int("pids-limit", v)? }));
    }
    if let Some(v) = &args.blkio_weight {
        let w: u16 = v
            .parse()
            .map_err(|e| Error::invalid(format!("invalid value for --blkio-weight: {v:?}: {e}")))?;
        r.insert("blockIO".into(), json!({ "weight": w }));
    }
    if !memory.is_empty() {
        r.insert("memory".into(), Value::Object(memory));
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), Value::Object(cpu));
    }
    serde_json::from_value(Value::Object(r)).map_err(|e| Error::invalid(format!("update: {e}")))
}
