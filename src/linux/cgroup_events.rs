//! What `events` prints: runc's event records (`{"type":"stats","id":...,"data":{...}}` and
//! `{"type":"oom","id":...}`) with runc's field names (runc's types/events.go), filled from
//! libcgroups' statistics, and the watch for OOM kills.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use libcgroups::stats::{BlkioDeviceStat, MemoryData, Stats as CgStats};
use nix::sys::eventfd::{EfdFlags, EventFd};
use serde::Serialize;

use crate::error::{Context, Result};
use crate::linux::cgroups::{controller_dir, is_unified};

#[derive(Serialize)]
pub struct Event<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub typ: &'static str,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

fn zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize, Default)]
pub struct Stats {
    pub cpu: Cpu,
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: HashMap<String, Hugetlb>,
    pub intel_rdt: HashMap<String, u64>,
    pub network_interfaces: Option<Vec<()>>,
}

#[derive(Serialize, Default)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Serialize, Default)]
pub struct CpuUsage {
    /// Nanoseconds, as all the cpu times here.
    #[serde(skip_serializing_if = "zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(skip_serializing_if = "zero")]
    pub periods: u64,
    #[serde(skip_serializing_if = "zero")]
    pub throttled_periods: u64,
    #[serde(skip_serializing_if = "zero")]
    pub throttled_time: u64,
}

#[derive(Serialize, Default)]
pub struct CpuSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

#[derive(Serialize, Default)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Serialize, Default)]
pub struct Memory {
    #[serde(skip_serializing_if = "zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub raw: HashMap<String, u64>,
}

#[derive(Serialize, Default)]
pub struct Pids {
    #[serde(skip_serializing_if = "zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "zero")]
    pub limit: u64,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    // runc's name, without "d".
    #[serde(rename = "ioQueueRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sectors_recursive: Vec<BlkioEntry>,
}

#[derive(Serialize)]
pub struct BlkioEntry {
    #[serde(skip_serializing_if = "zero")]
    pub major: u64,
    #[serde(skip_serializing_if = "zero")]
    pub minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(skip_serializing_if = "zero")]
    pub value: u64,
}

#[derive(Serialize)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "zero")]
    pub max: u64,
    pub failcnt: u64,
}

impl Stats {
    /// runc's record from libcgroups' statistics plus the cpuset files of `cgroup_path`.
    pub fn new(cg: CgStats, cgroup_path: &Path) -> Self {
        // cpuacct.stat counts USER_HZ ticks on v1; runc reports nanoseconds.
        let tick_ns = if is_unified() { 1 } else { tick_nanos() };
        let u = &cg.cpu.usage;
        let t = &cg.cpu.throttling;
        let m = &cg.memory;
        let b = &cg.blkio;
        Stats {
            cpu: Cpu {
                usage: CpuUsage {
                    total: u.usage_total,
                    percpu: u.per_core_usage_total.clone(),
                    percpu_kernel: u.per_core_usage_kernel.clone(),
                    percpu_user: u.per_core_usage_user.clone(),
                    kernel: u.usage_kernel * tick_ns,
                    user: u.usage_user * tick_ns,
                },
                throttling: Throttling {
                    periods: t.periods,
                    throttled_periods: t.throttled_periods,
                    throttled_time: t.throttled_time,
                },
            },
            cpuset: cpuset(cgroup_path),
            memory: Memory {
                // libcgroups fills `cache` on v1 only; runc reports v2's page cache, "file".
                cache: if is_unified() {
                    m.stats.get("file").copied().unwrap_or(0)
                } else {
                    m.cache
                },
                usage: entry(&m.memory),
                swap: entry(&m.memswap),
                kernel: entry(&m.kernel),
                kernel_tcp: entry(&m.kernel_tcp),
                raw: m.stats.clone(),
            },
            pids: Pids {
                current: cg.pids.current,
                limit: cg.pids.limit,
            },
            blkio: Blkio {
                io_service_bytes_recursive: blkio(&b.service_bytes),
                io_serviced_recursive: blkio(&b.serviced),
                io_queued_recursive: blkio(&b.queued),
                io_service_time_recursive: blkio(&b.service_time),
                io_wait_time_recursive: blkio(&b.wait_time),
                io_merged_recursive: blkio(&b.merged),
                io_time_recursive: blkio(&b.time),
                sectors_recursive: blkio(&b.sectors),
            },
            hugetlb: cg
                .hugetlb
                .iter()
                .map(|(size, h)| {
                    let h = Hugetlb {
                        usage: h.usage,
                        max: h.max_usage,
                        failcnt: h.fail_count,
                    };
                    (size.clone(), h)
                })
                .collect(),
            intel_rdt: HashMap::new(),
            network_interfaces: None,
        }
    }
}

fn entry(d: &MemoryData) -> MemoryEntry {
    MemoryEntry {
        limit: d.limit,
        usage: d.usage,
        // runc reports no peak on v2 (memory.peak is newer than its stats): same shape here.
        max: if is_unified() { 0 } else { d.max_usage },
        failcnt: d.fail_count,
    }
}

fn blkio(v: &[BlkioDeviceStat]) -> Vec<BlkioEntry> {
    v.iter()
        .map(|s| BlkioEntry {
            major: s.major,
            minor: s.minor,
            op: s.op_type.clone().unwrap_or_default(),
            value: s.value,
        })
        .collect()
}

fn tick_nanos() -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|hz| *hz > 0)
        .unwrap_or(100) as u64;
    1_000_000_000 / hz
}

/// The cpuset files (libcgroups has no cpuset statistics); what a host lacks stays zero.
fn cpuset(cgroup_path: &Path) -> CpuSet {
    let dir = controller_dir(cgroup_path, "cpuset");
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    let num = |name: &str| read(&format!("cpuset.{name}")).trim().parse().unwrap_or(0);
    // On v2 these are what the container asked for (empty when unset, so runc omits them),
    // not the `.effective` sets inherited from the parent.
    let (cpus, mems) = (read("cpuset.cpus"), read("cpuset.mems"));
    CpuSet {
        cpus: id_list(&cpus),
        mems: id_list(&mems),
        cpu_exclusive: num("cpu_exclusive"),
        mem_hardwall: num("mem_hardwall"),
        mem_exclusive: num("mem_exclusive"),
        memory_migrate: num("memory_migrate"),
        memory_spread_page: num("memory_spread_page"),
        memory_spread_slab: num("memory_spread_slab"),
        memory_pressure: num("memory_pressure"),
        sched_load_balance: num("sched_load_balance"),
        sched_relax_domain_level: read("cpuset.sched_relax_domain_level")
            .trim()
            .parse()
            .unwrap_or(0),
    }
}

/// `0-2,5` → [0, 1, 2, 5].
fn id_list(s: &str) -> Vec<u16> {
    let mut ids = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
            ids.extend(a..=b);
        }
    }
    ids
}

/// OOM kills in the container's memory cgroup: on v1 an eventfd registered on memory.oom_control
/// (the kernel signals it on each OOM, and once more when the cgroup goes away); on v2 the
/// `oom_kill` counter of memory.events, compared between calls.
pub enum OomWatch {
    V1 { efd: EventFd, dir: PathBuf },
    V2 { events: PathBuf, seen: u64 },
}

impl OomWatch {
    pub fn new(cgroup_path: &Path) -> Result<Self> {
        let dir = controller_dir(cgroup_path, "memory");
        if is_unified() {
            let events = dir.join("memory.events");
            let seen = oom_kills(&events);
            return Ok(OomWatch::V2 { events, seen });
        }
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .ctx(|| "eventfd for OOM events")?;
        let control = dir.join("memory.oom_control");
        let ofd = fs::File::open(&control).ctx(|| format!("opening {}", control.display()))?;
        let register = dir.join("cgroup.event_control");
        // The kernel keeps its own reference to memory.oom_control: ofd may be closed after this.
        fs::write(
            &register,
            format!("{} {}", efd.as_raw_fd(), ofd.as_raw_fd()),
        )
        .ctx(|| format!("writing {}", register.display()))?;
        Ok(OomWatch::V1 { efd, dir })
    }

    /// The fd to poll for OOM events (v1), if there is one.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            OomWatch::V1 { efd, .. } => Some(efd.as_fd()),
            OomWatch::V2 { .. } => None,
        }
    }

    /// How many OOM kills happened since the last call.
    pub fn take(&mut self) -> u64 {
        match self {
            OomWatch::V1 { efd, dir } => match efd.read() {
                // The last notification comes from the cgroup's removal, not from an OOM.
                Ok(n) if dir.exists() => n,
                _ => 0,
            },
            OomWatch::V2 { events, seen } => {
                let now = oom_kills(events);
                let new = now.saturating_sub(*seen);
                *seen = now;
                new
            }
        }
    }
}

fn oom_kills(events: &Path) -> u64 {
    fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_expand() {
        assert_eq!(id_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(id_list(""), Vec::<u16>::new());
    }

    #[test]
    fn empty_records_have_runcs_keys() {
        let v = serde_json::to_value(Stats::default()).expect("json");
        let keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
        for k in [
            "cpu",
            "cpuset",
            "memory",
            "pids",
            "blkio",
            "hugetlb",
            "intel_rdt",
            "network_interfaces",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing in {keys:?}");
        }
        assert_eq!(
            v["cpu"]["usage"],
            serde_json::json!({"kernel": 0, "user": 0})
        );
        assert_eq!(
            v["memory"]["kernelTCP"],
            serde_json::json!({"limit": 0, "failcnt": 0})
        );
    }
}
