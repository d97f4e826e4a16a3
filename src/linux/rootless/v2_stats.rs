//! Statistics of a cgroup v2 directory from the files it has. libcgroups 0.7 reads the files of
//! every controller it knows (cpu, memory, pids, io, hugetlb) and fails as a whole when one is
//! not enabled for the cgroup, and a delegated subtree has only the controllers its delegation
//! grants (systemd's user@.service: `pids memory cpu`). A controller without files reports zeros,
//! as runc does for a controller it cannot read.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use libcgroups::stats::{MemoryData, Stats};

/// A flat-keyed file (`key value` lines) as a map; empty when missing.
fn flat(file: &Path) -> HashMap<String, u64> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A single-value file ("max" is u64::MAX, as libcgroups reads it); 0 when missing.
fn single(file: &Path) -> u64 {
    match fs::read_to_string(file) {
        Ok(s) if s.trim() == "max" => u64::MAX,
        Ok(s) => s.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

fn memory_data(dir: &Path, prefix: &str, fail_event: &str) -> MemoryData {
    MemoryData {
        usage: single(&dir.join(format!("{prefix}.current"))),
        max_usage: single(&dir.join(format!("{prefix}.peak"))),
        fail_count: flat(&dir.join(format!("{prefix}.events")))
            .get(fail_event)
            .copied()
            .unwrap_or(0),
        limit: single(&dir.join(format!("{prefix}.max"))),
    }
}

/// What the cgroup directory `dir` shows, in libcgroups' shape and units (cpu in microseconds).
pub fn read(dir: &Path) -> Stats {
    let mut s = Stats::default();
    let cpu = flat(&dir.join("cpu.stat"));
    let get = |k: &str| cpu.get(k).copied().unwrap_or(0);
    s.cpu.usage.usage_total = get("usage_usec");
    s.cpu.usage.usage_user = get("user_usec");
    s.cpu.usage.usage_kernel = get("system_usec");
    s.cpu.throttling.periods = get("nr_periods");
    s.cpu.throttling.throttled_periods = get("nr_throttled");
    s.cpu.throttling.throttled_time = get("throttled_usec");
    s.pids.current = single(&dir.join("pids.current"));
    // libcgroups reports "max" as 0 for pids.
    s.pids.limit = match single(&dir.join("pids.max")) {
        u64::MAX => 0,
        n => n,
    };
    if dir.join("memory.current").exists() {
        s.memory.memory = memory_data(dir, "memory", "oom");
        s.memory.memswap = memory_data(dir, "memory.swap", "fail");
        s.memory.stats = flat(&dir.join("memory.stat"));
        s.memory.hierarchy = true;
    }
    s
}
