//! The `io.proxmox.lxcri.*` annotations through which one container opts in or out of Proxmox
//! visibility and picks its vmid, storage, disk size and net0. Every error names the annotation.
//! Other `io.proxmox.lxcri.*` keys are left alone: they may belong to other features.

use std::collections::HashMap;

use crate::config::{self, MAX_DISK_SIZE_GIB, VMID_MAX, VMID_MIN};
use crate::error::{Error, Result};

pub const ENABLED: &str = "io.proxmox.lxcri.enabled";
pub const VMID: &str = "io.proxmox.lxcri.vmid";
pub const STORAGE: &str = "io.proxmox.lxcri.storage";
pub const SIZE: &str = "io.proxmox.lxcri.size";
pub const NET0: &str = "io.proxmox.lxcri.net0";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Annotations {
    pub enabled: Option<bool>,
    pub vmid: Option<u32>,
    pub storage: Option<String>,
    pub size_gib: Option<u64>,
    pub net0: Option<String>,
}

impl Annotations {
    pub fn parse(map: &HashMap<String, String>) -> Result<Self> {
        let mut a = Annotations::default();
        if let Some(v) = map.get(ENABLED) {
            a.enabled = Some(match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(Error::invalid(format!(
                        "annotation {ENABLED}: {v:?} must be true or false"
                    )))
                }
            });
        }
        if let Some(v) = map.get(VMID) {
            a.vmid = Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (VMID_MIN..=VMID_MAX).contains(n))
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "annotation {VMID}: {v:?} is not a vmid ({VMID_MIN} to {VMID_MAX})"
                        ))
                    })?,
            );
        }
        if let Some(v) = map.get(STORAGE) {
            if !config::is_storage_id(v) {
                return Err(Error::invalid(format!(
                    "annotation {STORAGE}: {v:?} is not a Proxmox storage id"
                )));
            }
            a.storage = Some(v.clone());
        }
        if let Some(v) = map.get(SIZE) {
            a.size_gib = Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n <= MAX_DISK_SIZE_GIB)
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "annotation {SIZE}: {v:?} must be a whole number of GiB from 0 (no limit) to {MAX_DISK_SIZE_GIB}"
                        ))
                    })?,
            );
        }
        if let Some(v) = map.get(NET0) {
            check_net(v).map_err(|e| e.context(format!("annotation {NET0}")))?;
            a.net0 = Some(v.clone());
        }
        Ok(a)
    }
}

/// Checks a Proxmox `netN` property string (`name=eth0,bridge=vmbr0,ip=dhcp`) against the keys
/// and value formats of pve-container's network schema, so that the config we write parses.
pub fn check_net(s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid("empty"));
    }
    let mut seen = Vec::new();
    for part in s.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("{part:?}: expected key=value")))?;
        if seen.contains(&key) {
            return Err(Error::invalid(format!("{key} given twice")));
        }
        seen.push(key);
        let ok = match key {
            "name" | "bridge" => {
                !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            }
            "type" => value == "veth",
            "hwaddr" => is_mac(value),
            "mtu" => value
                .parse::<u32>()
                .is_ok_and(|n| (64..=65535).contains(&n)),
            "ip" => matches!(value, "dhcp" | "manual") || is_cidr::<std::net::Ipv4Addr>(value, 32),
            "ip6" => {
                matches!(value, "dhcp" | "manual" | "auto")
                    || is_cidr::<std::net::Ipv6Addr>(value, 128)
            }
            "gw" => value.parse::<std::net::Ipv4Addr>().is_ok(),
            "gw6" => value.parse::<std::net::Ipv6Addr>().is_ok(),
            "firewall" | "link_down" => matches!(value, "0" | "1"),
            "tag" => value.parse::<u32>().is_ok_and(|n| (1..=4094).contains(&n)),
            "trunks" => value
                .split(';')
                .all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())),
            "rate" => is_number(value),
            _ => return Err(Error::invalid(format!("unknown key {key:?}"))),
        };
        if !ok {
            return Err(Error::invalid(format!("{key}={value:?} is not valid")));
        }
    }
    if !seen.contains(&"name") {
        return Err(Error::invalid("name= is required"));
    }
    Ok(())
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_cidr<A: std::str::FromStr>(s: &str, max_prefix: u32) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    addr.parse::<A>().is_ok()
        && !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_digit())
        && prefix.parse::<u32>().is_ok_and(|p| p <= max_prefix)
}

/// Proxmox's `number`: `\d+(\.\d+)?`.
fn is_number(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn valid_annotations_are_read() {
        let a = Annotations::parse(&map(&[
            (ENABLED, "true"),
            (VMID, "150000"),
            (STORAGE, "local-zfs"),
            (SIZE, "0"),
            (
                NET0,
                "name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1,tag=5,firewall=1",
            ),
            ("io.proxmox.lxcri.something-else", "x"),
        ]))
        .unwrap();
        assert_eq!(a.enabled, Some(true));
        assert_eq!(a.vmid, Some(150000));
        assert_eq!(a.storage.as_deref(), Some("local-zfs"));
        assert_eq!(a.size_gib, Some(0));
        assert_eq!(
            Annotations::parse(&map(&[("x", "y")])).unwrap(),
            Annotations::default()
        );
    }

    #[test]
    fn bad_annotations_are_named() {
        for (k, v) in [
            (ENABLED, "yes please"),
            (VMID, "99"),
            (VMID, "1000000000"),
            (VMID, "12a"),
            (STORAGE, "Local Disk"),
            (SIZE, "-1"),
            (SIZE, "8G"),
            (NET0, "bridge=vmbr0"),
            (NET0, "name=eth0,bridge=vmbr0\nrootfs: /"),
            (NET0, "name=eth0,ip=10.0.0.5"),
            (NET0, "name=eth0,colour=red"),
            (NET0, "name=eth0,name=eth1"),
            (NET0, "name=eth0,tag=5000"),
            (NET0, "name=eth0,hwaddr=zz:00:00:00:00:00"),
        ] {
            let e = Annotations::parse(&map(&[(k, v)]))
                .expect_err(&format!("{k}={v:?} accepted"))
                .to_string();
            assert!(e.contains(k), "{e:?} does not name {k}");
        }
    }

    #[test]
    fn net_strings_in_proxmox_shapes_pass() {
        for s in [
            "name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:2E:4A:01,ip=dhcp,ip6=auto,type=veth",
            "name=eth1,bridge=vmbr1,ip=192.168.1.2/24,gw=192.168.1.1,ip6=fd00::2/64,gw6=fd00::1,mtu=1400,rate=12.5,trunks=10;20",
            "name=eth0,link_down=1",
        ] {
            check_net(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }
}
