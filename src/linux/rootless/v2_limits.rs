//! Resource limits written with the caller's own rights into a cgroup v2 directory delegated to
//! it (systemd's Delegate=yes: the subtree is the user's, its interface files writable). This is
//! libcgroups' v2 controllers without the device controller: libcgroups always loads and
//! attaches a BPF device program, which takes CAP_BPF/CAP_SYS_ADMIN of the initial user
//! namespace (and a raised RLIMIT_MEMLOCK), so it fails for an unprivileged caller. No device
//! program is needed: the container's user namespace keeps it from making or opening device
//! nodes beyond the ones bind-mounted from the host, whose permissions still apply.
//! The conversions follow runc's and libcgroups' (shares to weight, memory+swap to swap).

use std::fs;
use std::path::Path;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources, LinuxThrottleDevice};

use crate::error::{Context, Error, Result};

/// One write of the plan: `value` into `file` of the container's cgroup, for `field`.
#[derive(Debug, PartialEq)]
struct Write {
    field: String,
    file: String,
    value: String,
    /// Skipped when the file does not exist (memory.swap.max without swap accounting).
    optional: bool,
}

fn write(field: impl Into<String>, file: impl Into<String>, value: impl ToString) -> Write {
    Write {
        field: field.into(),
        file: file.into(),
        value: value.to_string(),
        optional: false,
    }
}

/// Writes `r` (device rules and blockIO.weight aside: the caller handles the weight) into the
/// cgroup directory `dir`. Every value is checked before the first write.
pub fn apply(dir: &Path, r: &LinuxResources) -> Result<()> {
    let cpu_max = fs::read_to_string(dir.join("cpu.max")).ok();
    for w in plan(r, cpu_max.as_deref())? {
        let file = dir.join(&w.file);
        if w.optional && !file.exists() {
            continue;
        }
        fs::write(&file, &w.value).ctx(|| {
            format!(
                "linux.resources.{} ({}) to {}",
                w.field,
                w.value,
                file.display()
            )
        })?;
    }
    Ok(())
}

/// The writes for `r`; `cpu_max` is the cgroup's current cpu.max (a period alone keeps its
/// quota).
fn plan(r: &LinuxResources, cpu_max: Option<&str>) -> Result<Vec<Write>> {
    refuse_unsupported(r)?;
    let mut plan = Vec::new();
    if let Some(p) = r.pids() {
        // runc: 0 or less is no limit.
        let limit = p.limit();
        let value = if limit > 0 {
            limit.to_string()
        } else {
            "max".into()
        };
        plan.push(write("pids.limit", "pids.max", value));
    }
    if let Some(m) = r.memory() {
        memory(m, &mut plan)?;
    }
    if let Some(c) = r.cpu() {
        cpu(c, cpu_max, &mut plan)?;
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let size = h.page_size();
        let valid = size.len() > 2
            && size.ends_with('B')
            && size[..size.len() - 2].bytes().all(|b| b.is_ascii_digit())
            && matches!(size.as_bytes()[size.len() - 2], b'K' | b'M' | b'G');
        if !valid {
            return Err(Error::invalid(format!(
                "linux.resources.hugepageLimits[{i}].pageSize {size:?}: expected a size like 2MB"
            )));
        }
        plan.push(write(
            format!("hugepageLimits[{i}]"),
            format!("hugetlb.{size}.max"),
            h.limit(),
        ));
    }
    if let Some(b) = r.block_io() {
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            if let Some(w) = d.weight() {
                let line = format!("{}:{} {w}", d.major(), d.minor());
                plan.push(write(
                    format!("blockIO.weightDevice[{i}]"),
                    "io.weight",
                    line,
                ));
            }
        }
        let throttles: [(&str, &str, &Option<Vec<LinuxThrottleDevice>>); 4] = [
            (
                "throttleReadBpsDevice",
                "rbps",
                b.throttle_read_bps_device(),
            ),
            (
                "throttleWriteBpsDevice",
                "wbps",
                b.throttle_write_bps_device(),
            ),
            (
                "throttleReadIOPSDevice",
                "riops",
                b.throttle_read_iops_device(),
            ),
            (
                "throttleWriteIOPSDevice",
                "wiops",
                b.throttle_write_iops_device(),
            ),
        ];
        for (field, key, devices) in throttles {
            for (i, d) in devices.iter().flatten().enumerate() {
                let rate = match d.rate() {
                    0 => "max".to_string(),
                    n => n.to_string(),
                };
                let line = format!("{}:{} {key}={rate}", d.major(), d.minor());
                plan.push(write(format!("blockIO.{field}[{i}]"), "io.max", line));
            }
        }
    }
    let mut unified: Vec<_> = r.unified().iter().flatten().collect();
    unified.sort();
    for (key, value) in unified {
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(Error::invalid(format!(
                "linux.resources.unified[{key:?}]: not a cgroup interface file name"
            )));
        }
        plan.push(write(format!("unified[{key:?}]"), key.as_str(), value));
    }
    Ok(plan)
}

/// What a v2 cgroup has no file for, or what needs privilege: named rather than dropped.
fn refuse_unsupported(r: &LinuxResources) -> Result<()> {
    let refuse = |field: &str, why: &str| {
        Err(Error::invalid(format!(
            "linux.resources.{field}: {why} (a rootless container in a delegated cgroup v2)"
        )))
    };
    if let Some(m) = r.memory() {
        if m.swappiness().is_some() {
            return refuse(
                "memory.swappiness",
                "cgroup v2 has no per-cgroup swappiness",
            );
        }
        if m.disable_oom_killer() == Some(true) {
            return refuse(
                "memory.disableOOMKiller",
                "cgroup v2 cannot disable the OOM killer",
            );
        }
    }
    if let Some(c) = r.cpu() {
        if c.realtime_runtime().is_some_and(|v| v > 0) || c.realtime_period().is_some_and(|v| v > 0)
        {
            return refuse(
                "cpu.realtimeRuntime",
                "cgroup v2 has no realtime CPU controller",
            );
        }
    }
    if r.network().is_some() {
        return refuse("network", "net_cls and net_prio are cgroup v1 controllers");
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return refuse("rdma", "not supported yet");
    }
    Ok(())
}

fn memory(m: &LinuxMemory, plan: &mut Vec<Write>) -> Result<()> {
    let check = |field: &str, v: Option<i64>| match v {
        Some(v) if v < -1 => Err(Error::invalid(format!(
            "linux.resources.memory.{field} {v}: expected -1 (no limit) or a byte count"
        ))),
        _ => Ok(()),
    };
    check("limit", m.limit())?;
    check("swap", m.swap())?;
    check("reservation", m.reservation())?;
    // -1 is "max"; 0 leaves the file alone (libcgroups' and runc's reading of an unset value).
    let value = |v: i64| {
        if v == -1 {
            "max".to_string()
        } else {
            v.to_string()
        }
    };
    match (m.limit(), m.swap()) {
        (None, Some(_)) => {
            return Err(Error::invalid(
                "linux.resources.memory.swap: given without memory.limit (on cgroup v2 swap is \
                 set as memory + swap, and needs the limit)",
            ))
        }
        (Some(limit), swap) => {
            match swap {
                // v1's swap is memory + swap; v2 counts swap alone.
                Some(swap) if swap != 0 && (swap == -1 || limit == -1) => {
                    plan.push(write("memory.swap", "memory.swap.max", value(swap)));
                }
                Some(swap) if swap != 0 && swap < limit => {
                    return Err(Error::invalid(format!(
                        "linux.resources.memory.swap {swap}: less than memory.limit {limit} \
                         (swap is memory + swap)"
                    )))
                }
                Some(swap) if swap != 0 && limit > 0 => {
                    let mut w = write("memory.swap", "memory.swap.max", swap - limit);
                    w.optional = swap == limit;
                    plan.push(w);
                }
                None if limit == -1 => {
                    let mut w = write("memory.limit", "memory.swap.max", "max");
                    w.optional = true;
                    plan.push(w);
                }
                _ => {}
            }
            if limit != 0 {
                plan.push(write("memory.limit", "memory.max", value(limit)));
            }
        }
        (None, None) => {}
    }
    if let Some(r) = m.reservation().filter(|r| *r != 0) {
        plan.push(write("memory.reservation", "memory.low", value(r)));
    }
    Ok(())
}

fn cpu(c: &LinuxCpu, cpu_max: Option<&str>, plan: &mut Vec<Write>) -> Result<()> {
    if let Some(shares) = c.shares().filter(|s| *s > 0) {
        plan.push(write("cpu.shares", "cpu.weight", shares_to_weight(shares)));
    }
    let max = match (c.quota(), c.period()) {
        (None, Some(period)) => cpu_max
            .and_then(|m| m.split_whitespace().next())
            .map(|quota| format!("{quota} {period}")),
        (Some(q), None) if q > 0 => Some(q.to_string()),
        (Some(_), None) => Some("max".into()),
        (Some(q), Some(period)) if q > 0 => Some(format!("{q} {period}")),
        (Some(_), Some(period)) => Some(format!("max {period}")),
        (None, None) => None,
    };
    if let Some(max) = max {
        plan.push(write("cpu.quota", "cpu.max", max));
    }
    if let Some(burst) = c.burst() {
        plan.push(write("cpu.burst", "cpu.max.burst", burst));
    }
    if let Some(idle) = c.idle() {
        plan.push(write("cpu.idle", "cpu.idle", idle));
    }
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        plan.push(write("cpu.cpus", "cpuset.cpus", cpus));
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        plan.push(write("cpu.mems", "cpuset.mems", mems));
    }
    Ok(())
}

/// cgroup v1 shares (2..262144, default 1024) to v2 weight (1..10000, default 100): runc's
/// quadratic fit in log space, which keeps the ends and the default.
fn shares_to_weight(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("resources JSON")
    }

    fn files(r: &str, cpu_max: Option<&str>) -> Vec<(String, String)> {
        plan(&resources(r), cpu_max)
            .expect("plan")
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn pids_and_memory_become_their_v2_files() {
        assert_eq!(
            files(
                r#"{"pids": {"limit": 8}, "memory": {"limit": 1000, "swap": 3000, "reservation": 500}}"#,
                None
            ),
            pairs(&[
                ("pids.max", "8"),
                ("memory.swap.max", "2000"),
                ("memory.max", "1000"),
                ("memory.low", "500")
            ])
        );
        assert_eq!(
            files(r#"{"pids": {"limit": 0}, "memory": {"limit": -1}}"#, None),
            pairs(&[
                ("pids.max", "max"),
                ("memory.swap.max", "max"),
                ("memory.max", "max")
            ])
        );
        // swap equal to the limit: no swap at all.
        assert_eq!(
            files(r#"{"memory": {"limit": 1000, "swap": 1000}}"#, None),
            pairs(&[("memory.swap.max", "0"), ("memory.max", "1000")])
        );
    }

    #[test]
    fn cpu_becomes_weight_max_and_cpuset() {
        assert_eq!(
            files(
                r#"{"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}}"#,
                None
            ),
            pairs(&[
                ("cpu.weight", "100"),
                ("cpu.max", "50000 100000"),
                ("cpuset.cpus", "0"),
                ("cpuset.mems", "0")
            ])
        );
        assert_eq!(
            files(r#"{"cpu": {"period": 50000}}"#, Some("20000 100000\n")),
            pairs(&[("cpu.max", "20000 50000")])
        );
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn bad_or_unsupported_values_name_the_field() {
        for (r, field) in [
            (r#"{"memory": {"swap": 100}}"#, "memory.swap"),
            (r#"{"memory": {"limit": 1000, "swap": 10}}"#, "memory.swap"),
            (r#"{"memory": {"limit": -5}}"#, "memory.limit"),
            (r#"{"memory": {"swappiness": 10}}"#, "memory.swappiness"),
            (
                r#"{"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}"#,
                "hugepageLimits[0]",
            ),
            (r#"{"unified": {"../x": "1"}}"#, "unified"),
            (r#"{"network": {"classID": 1}}"#, "network"),
        ] {
            let e = plan(&resources(r), None).expect_err(r).to_string();
            assert!(e.contains(&format!("linux.resources.{field}")), "{r}: {e}");
        }
    }

    #[test]
    fn hugepages_io_and_unified_keys() {
        assert_eq!(
            files(
                r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
                    "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]},
                    "unified": {"pids.max": "42", "memory.high": "max"}}"#,
                None
            ),
            pairs(&[
                ("hugetlb.2MB.max", "4194304"),
                ("io.max", "8:0 rbps=1000"),
                ("memory.high", "max"),
                ("pids.max", "42"),
            ])
        );
    }
}
