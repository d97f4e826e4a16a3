//! What Proxmox is told about an OCI container: the pct config made from its spec.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, LinuxResources};

use super::pct::{PctConfig, Section};
use super::storage::Volume;
use crate::spec::Bundle;

/// The first description line, which also tells `delete` that a config is ours.
pub fn marker(id: &str) -> String {
    format!("OCI container {id} (managed by proxmox-lxcri; do not start or change it with pct)")
}

/// Proxmox's defaults for memory and swap (MiB), written when the spec sets no limit.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
pub const DEFAULT_SWAP_MIB: u64 = 512;
/// Proxmox's minimum for `memory`.
const MIN_MEMORY_MIB: u64 = 16;

pub struct Inputs<'a> {
    pub id: &'a str,
    pub bundle: &'a Bundle,
    /// The rootfs whose /etc/os-release names the OS (the bundle's, before it is replaced).
    pub rootfs: &'a Path,
    pub volume: &'a Volume,
    pub net0: Option<&'a str>,
}

pub fn config(i: &Inputs<'_>) -> PctConfig {
    let mut s = Section {
        description: vec![marker(i.id), format!("bundle {}", i.bundle.dir.display())],
        ..Section::default()
    };
    if let Some(arch) = arch() {
        s.set("arch", arch);
    }
    s.set(
        "hostname",
        hostname(i.bundle.spec.hostname().as_deref(), i.id),
    );
    let resources = i
        .bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref());
    let (memory, swap) = memory_swap(resources);
    s.set("memory", memory.to_string());
    s.set("swap", swap.to_string());
    let cpu = cpu(resources);
    if let Some(cores) = cpu.cores {
        s.set("cores", cores.to_string());
    }
    if let Some(limit) = cpu.limit {
        s.set("cpulimit", limit);
    }
    if let Some(units) = cpu.units {
        s.set("cpuunits", units.to_string());
    }
    s.set(
        "rootfs",
        format!("{},size={}", i.volume.volid, size(i.volume.size_gib)),
    );
    s.set("ostype", ostype(i.rootfs));
    if unprivileged(i.bundle) {
        s.set("unprivileged", "1");
    }
    if let Some(net) = i.net0 {
        s.set("net0", net);
    }
    PctConfig {
        main: s,
        ..PctConfig::default()
    }
}

/// The host's architecture in Proxmox's words; None for one Proxmox does not know.
pub fn arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "x86" => Some("i386"),
        "aarch64" => Some("arm64"),
        "arm" => Some("armhf"),
        "riscv64" => Some("riscv64"),
        _ => None,
    }
}

/// The spec's hostname when it is a valid DNS name, else one made from the container id
/// (letters, digits and dashes, at most 63 characters: one DNS label).
pub fn hostname(spec: Option<&str>, id: &str) -> String {
    if let Some(h) = spec.filter(|h| is_dns_name(h)) {
        return h.to_string();
    }
    let mut label: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    label = label.trim_matches('-').chars().take(63).collect();
    label = label.trim_end_matches('-').to_string();
    if label.is_empty() {
        "oci-container".to_string()
    } else {
        label
    }
}

/// Proxmox's dns-name: dot-separated labels of letters, digits and inner dashes.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 255
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `memory` and `swap` in MiB from the memory limit and the OCI memory+swap limit.
pub fn memory_swap(resources: Option<&LinuxResources>) -> (u64, u64) {
    const MIB: i64 = 1 << 20;
    let mem = resources.and_then(|r| r.memory().as_ref());
    let limit = mem.and_then(|m| m.limit()).filter(|l| *l > 0);
    let Some(limit) = limit else {
        return (DEFAULT_MEMORY_MIB, DEFAULT_SWAP_MIB);
    };
    let memory = ((limit + MIB - 1) / MIB).max(MIN_MEMORY_MIB as i64) as u64;
    let swap = match mem.and_then(|m| m.swap()) {
        // OCI's swap is memory + swap.
        Some(total) if total >= limit => ((total - limit) / MIB) as u64,
        _ => DEFAULT_SWAP_MIB,
    };
    (memory, swap)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    pub cores: Option<u32>,
    pub limit: Option<String>,
    pub units: Option<u64>,
}

/// `cores` from the cpuset, `cpulimit` from quota/period, `cpuunits` from the shares.
pub fn cpu(resources: Option<&LinuxResources>) -> Cpu {
    let Some(cpu) = resources.and_then(|r| r.cpu().as_ref()) else {
        return Cpu::default();
    };
    let cores = cpu
        .cpus()
        .as_deref()
        .and_then(count_cpus)
        .map(|n| n.clamp(1, 8192));
    let limit = match (cpu.quota(), cpu.period()) {
        (Some(q), Some(p)) if q > 0 && p > 0 => {
            // Proxmox's `number`: at most two decimals are kept, rounded up so the limit
            // shown is never below the real one.
            let hundredths = (q as u128 * 100).div_ceil(p as u128).min(8192 * 100) as u64;
            let text = format!("{}.{:02}", hundredths / 100, hundredths % 100);
            Some(text.trim_end_matches('0').trim_end_matches('.').to_string())
        }
        _ => None,
    };
    let units = cpu.shares().map(|s| s.min(500_000));
    Cpu {
        cores,
        limit,
        units,
    }
}

/// The number of CPUs in a cpuset list (`0-3,6`).
fn count_cpus(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                n = n.checked_add(b.checked_sub(a)? + 1)?;
            }
            None => {
                part.parse::<u32>().ok()?;
                n += 1;
            }
        }
    }
    (n > 0).then_some(n)
}

/// A Proxmox disk size from GiB (PVE::JSONSchema::format_size: `8G`, `1T`, `0T`).
pub fn size(gib: u64) -> String {
    if gib % 1024 == 0 {
        format!("{}T", gib / 1024)
    } else {
        format!("{gib}G")
    }
}

/// Whether Proxmox should see the container as unprivileged: a new user namespace with maps.
pub fn unprivileged(bundle: &Bundle) -> bool {
    bundle.creates_namespace(LinuxNamespaceType::User)
        && bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.uid_mappings().as_ref())
            .is_some_and(|m| !m.is_empty())
}

/// The ostype Proxmox would pick, from the rootfs's os-release; `unmanaged` when unknown.
pub fn ostype(rootfs: &Path) -> &'static str {
    let text = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| read_in_root(rootfs, p))
        .unwrap_or_default();
    ostype_of(&text)
}

fn ostype_of(os_release: &str) -> &'static str {
    let field = |name: &str| {
        os_release.lines().find_map(|l| {
            let v = l.trim().strip_prefix(name)?.strip_prefix('=')?;
            Some(v.trim().trim_matches(['"', '\'']).to_ascii_lowercase())
        })
    };
    let id = field("ID").unwrap_or_default();
    let like = field("ID_LIKE").unwrap_or_default();
    for candidate in std::iter::once(id.as_str()).chain(like.split_whitespace()) {
        let t = match candidate {
            "debian" => "debian",
            "devuan" => "devuan",
            "ubuntu" => "ubuntu",
            "alpine" => "alpine",
            "arch" | "archlinux" => "archlinux",
            "fedora" => "fedora",
            "centos" | "rhel" | "rocky" | "almalinux" | "ol" => "centos",
            "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" | "sles" | "suse" => "opensuse",
            "gentoo" => "gentoo",
            "nixos" => "nixos",
            _ => continue,
        };
        return t;
    }
    "unmanaged"
}

/// Reads a small regular file of the rootfs, resolving the path inside it: the rootfs is not
/// trusted, and /etc/os-release may be a symlink aimed at the host or a fifo.
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let root = std::fs::File::open(rootfs).ok()?;
    let fd = sys::openat2(
        root.as_fd(),
        Path::new(path.trim_start_matches('/')),
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(64 * 1024).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};

    #[test]
    fn os_release_gives_proxmoxs_ostype() {
        assert_eq!(ostype_of("ID=debian\nVERSION_ID=12\n"), "debian");
        assert_eq!(ostype_of("NAME=\"Alpine\"\nID=alpine\n"), "alpine");
        assert_eq!(
            ostype_of("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n"),
            "centos"
        );
        assert_eq!(
            ostype_of("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"),
            "ubuntu"
        );
        assert_eq!(ostype_of("ID=arch\n"), "archlinux");
        assert_eq!(ostype_of("ID=opensuse-tumbleweed\n"), "opensuse");
        assert_eq!(ostype_of("ID=busybox\n"), "unmanaged");
        assert_eq!(ostype_of(""), "unmanaged");
        assert_eq!(ostype_of("VERSION_ID=3\n"), "unmanaged");
    }

    #[test]
    fn hostnames_are_valid_dns_names() {
        assert_eq!(hostname(Some("web01"), "x"), "web01");
        assert_eq!(hostname(Some("bad_name"), "my_app.1"), "my-app-1");
        assert_eq!(hostname(None, &"a".repeat(64)), "a".repeat(63));
        assert_eq!(hostname(None, "__"), "oci-container");
        assert_eq!(hostname(Some(""), "abc"), "abc");
    }

    #[test]
    fn memory_and_swap_are_mib_with_proxmox_defaults() {
        let r = |limit: Option<i64>, swap: Option<i64>| {
            let mut m = LinuxMemoryBuilder::default();
            if let Some(l) = limit {
                m = m.limit(l);
            }
            if let Some(s) = swap {
                m = m.swap(s);
            }
            LinuxResourcesBuilder::default()
                .memory(m.build().unwrap())
                .build()
                .unwrap()
        };
        assert_eq!(memory_swap(None), (512, 512));
        assert_eq!(memory_swap(Some(&r(None, None))), (512, 512));
        assert_eq!(memory_swap(Some(&r(Some(-1), None))), (512, 512));
        assert_eq!(memory_swap(Some(&r(Some(256 << 20), None))), (256, 512));
        assert_eq!(
            memory_swap(Some(&r(Some(256 << 20), Some(256 << 20)))),
            (256, 0)
        );
        assert_eq!(
            memory_swap(Some(&r(Some(256 << 20), Some(768 << 20)))),
            (256, 512)
        );
        assert_eq!(memory_swap(Some(&r(Some(256 << 20), Some(-1)))), (256, 512));
        assert_eq!(memory_swap(Some(&r(Some(1), None))), (16, 512));
        assert_eq!(
            memory_swap(Some(&r(Some((100 << 20) + 1), None))),
            (101, 512)
        );
    }

    #[test]
    fn cpu_settings_map_to_cores_cpulimit_and_cpuunits() {
        let r =
            |cpus: Option<&str>, quota: Option<i64>, period: Option<u64>, shares: Option<u64>| {
                let mut c = LinuxCpuBuilder::default();
                if let Some(x) = cpus {
                    c = c.cpus(x);
                }
                if let Some(q) = quota {
                    c = c.quota(q);
                }
                if let Some(p) = period {
                    c = c.period(p);
                }
                if let Some(s) = shares {
                    c = c.shares(s);
                }
                LinuxResourcesBuilder::default()
                    .cpu(c.build().unwrap())
                    .build()
                    .unwrap()
            };
        assert_eq!(cpu(None), Cpu::default());
        let c = cpu(Some(&r(
            Some("0-3,6"),
            Some(150_000),
            Some(100_000),
            Some(2048),
        )));
        assert_eq!(c.cores, Some(5));
        assert_eq!(c.limit.as_deref(), Some("1.5"));
        assert_eq!(c.units, Some(2048));
        assert_eq!(
            cpu(Some(&r(None, Some(100_000), Some(100_000), None)))
                .limit
                .as_deref(),
            Some("1")
        );
        assert_eq!(
            cpu(Some(&r(None, Some(100_000), Some(300_000), None)))
                .limit
                .as_deref(),
            Some("0.34")
        );
        assert_eq!(
            cpu(Some(&r(None, Some(-1), Some(100_000), None))).limit,
            None
        );
        assert_eq!(cpu(Some(&r(Some("x"), None, None, None))).cores, None);
    }

    #[test]
    fn sizes_are_written_as_proxmox_does() {
        assert_eq!(size(8), "8G");
        assert_eq!(size(1024), "1T");
        assert_eq!(size(0), "0T");
        assert_eq!(size(1536), "1536G");
    }
}
