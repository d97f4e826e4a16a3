//! Checks of `linux.resources` values before they reach the kernel, so that a bad value fails with
//! the name of its field (and before any cgroup exists) rather than as a write error on some cgroup
//! file half-way through; and the byte sizes of runc's `update` flags.

use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result};

/// Validates `r`, whose fields are named below `at` (e.g. `linux.resources`) in errors.
pub fn validate(r: &LinuxResources, at: &str) -> Result<()> {
    let bad = |field: &str, why: String| Err(Error::invalid(format!("{at}.{field}: {why}")));
    if let Some(m) = r.memory() {
        for (name, v) in [
            ("limit", m.limit()),
            ("reservation", m.reservation()),
            ("swap", m.swap()),
            ("kernel", m.kernel()),
            ("kernelTCP", m.kernel_tcp()),
        ] {
            if let Some(v) = v.filter(|v| *v < -1) {
                return bad(
                    &format!("memory.{name}"),
                    format!("{v} is not a byte count (-1 means no limit)"),
                );
            }
        }
        if let (Some(limit), Some(swap)) = (m.limit(), m.swap()) {
            if limit > 0 && swap > 0 && swap < limit {
                return bad(
                    "memory.swap",
                    format!("{swap} is below memory.limit {limit} (swap limits memory plus swap)"),
                );
            }
        }
        if let Some(s) = m.swappiness().filter(|s| *s > 100) {
            return bad("memory.swappiness", format!("{s} is not in 0-100"));
        }
    }
    if let Some(c) = r.cpu() {
        // The kernel's CFS bounds: quota at least 1 ms, period between 1 ms and 1 s.
        if let Some(q) = c.quota().filter(|q| *q < -1 || (*q > 0 && *q < 1000)) {
            return bad(
                "cpu.quota",
                format!("{q} µs is not -1 (no limit) or at least 1000"),
            );
        }
        if let Some(p) = c
            .period()
            .filter(|p| *p != 0 && !(1000..=1_000_000).contains(p))
        {
            return bad("cpu.period", format!("{p} µs is not in 1000-1000000"));
        }
        if let Some(rt) = c.realtime_runtime().filter(|v| *v < -1) {
            return bad(
                "cpu.realtimeRuntime",
                format!("{rt} µs is not -1 (no limit) or a duration"),
            );
        }
        if let Some(i) = c.idle().filter(|i| !(0..=1).contains(i)) {
            return bad("cpu.idle", format!("{i} is not 0 or 1"));
        }
        for (name, list) in [("cpus", c.cpus()), ("mems", c.mems())] {
            if let Some(list) = list.as_deref().filter(|l| !is_id_list(l)) {
                return bad(
                    &format!("cpu.{name}"),
                    format!("{list:?} is not a list like \"0-3,6\""),
                );
            }
        }
    }
    if let Some(l) = r.pids().as_ref().map(|p| p.limit()).filter(|l| *l < -1) {
        return bad("pids.limit", format!("{l} is not -1 (no limit) or a count"));
    }
    if let Some(b) = r.block_io() {
        for (name, w) in [("weight", b.weight()), ("leafWeight", b.leaf_weight())] {
            if let Some(w) = w.filter(|w| *w != 0 && !(10..=1000).contains(w)) {
                return bad(&format!("blockIO.{name}"), format!("{w} is not in 10-1000"));
            }
        }
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        if !is_page_size(h.page_size()) {
            return bad(
                &format!("hugepageLimits[{i}].pageSize"),
                format!("{:?} is not a size like \"2MB\"", h.page_size()),
            );
        }
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) && !super::cgroups::is_unified() {
        return bad(
            "unified",
            "raw cgroup v2 keys need a pure cgroup v2 host; this host runs its controllers on \
             cgroup v1"
                .into(),
        );
    }
    Ok(())
}

/// `0-3,6`: the kernel's list format for cpus and memory nodes.
fn is_id_list(s: &str) -> bool {
    let num = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    !s.is_empty()
        && s.split(',').all(|part| match part.split_once('-') {
            Some((a, b)) => num(a) && num(b),
            None => num(part),
        })
}

/// `2MB`, `1GB`, `64KB`: the page size names of the hugetlb controller's files.
fn is_page_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB")
}

/// A byte size as runc's `update` takes it (docker's RAMInBytes): a number with an optional
/// binary unit `k`, `m`, `g`, `t`, `p` (`kb`, `KiB`... too), or `-1` for no limit.
pub fn parse_size(s: &str) -> Option<i64> {
    if s == "-1" {
        return Some(-1);
    }
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let value: f64 = num.parse().ok()?;
    let bytes = value * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_runcs_update() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("2KiB"), Some(2048));
        assert_eq!(parse_size("-1"), Some(-1));
        for bad in ["", "-5", "m", "12x", "1e9", "99999999999p"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn id_lists_follow_the_kernel_format() {
        for good in ["0", "0-1", "0,2-3,7"] {
            assert!(is_id_list(good), "{good}");
        }
        for bad in ["", "a", "0-", ",1", "1;2", " 1"] {
            assert!(!is_id_list(bad), "{bad}");
        }
    }

    #[test]
    fn values_the_kernel_refuses_are_named() {
        let r: LinuxResources = serde_json::from_str(r#"{"cpu":{"quota":5}}"#).expect("json");
        let e = validate(&r, "linux.resources").unwrap_err().to_string();
        assert!(e.starts_with("linux.resources.cpu.quota: 5"), "{e}");
        let r: LinuxResources = serde_json::from_str(r#"{"memory":{"limit":-5}}"#).expect("json");
        let e = validate(&r, "x").unwrap_err().to_string();
        assert!(e.starts_with("x.memory.limit: -5"), "{e}");
        let r: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":-1},"pids":{"limit":-1}}"#).expect("json");
        assert!(validate(&r, "x").is_ok());
    }
}
