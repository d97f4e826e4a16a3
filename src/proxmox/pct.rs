//! The pct config format, `<pve>/lxc/<vmid>.conf`, as pve-container's PVE::LXC::Config parses
//! and writes it:
//!
//! - `key: value` lines, written sorted by key; raw `lxc.*` keys after them, in their order;
//! - the description as `#` lines at the top of a section, each URL-escaped like
//!   PVE::Tools::encode_text (control and non-ASCII bytes and `:` become `%XX`);
//! - a `[pve:pending]` section (pending changes), then snapshot sections `[name]` sorted by
//!   name, each after a blank line and in the same shape as the main section.
//!
//! The parser keeps everything it reads (unknown keys, snapshots, pending changes), so a file
//! it rewrites loses nothing; a line that fits no rule is an error rather than dropped.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};

/// One section: the main config, the pending changes or one snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Section {
    /// Decoded description lines (without the `#`).
    pub description: Vec<String>,
    /// `key: value` settings; a BTreeMap sorts them as Proxmox writes them (Perl's `sort keys`).
    pub keys: BTreeMap<String, String>,
    /// Raw `lxc.*` settings, in file order (keys may repeat).
    pub lxc: Vec<(String, String)>,
}

impl Section {
    pub fn is_empty(&self) -> bool {
        self.description.is_empty() && self.keys.is_empty() && self.lxc.is_empty()
    }

    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.keys.insert(key.to_string(), value.into());
    }

    fn render(&self, out: &mut String) -> Result<()> {
        for line in &self.description {
            out.push('#');
            out.push_str(&encode_text(line));
            out.push('\n');
        }
        for (key, value) in self.keys.iter().chain(self.lxc.iter().map(|(k, v)| (k, v))) {
            if value.contains('\n') || value.contains('\r') {
                return Err(Error::invalid(format!(
                    "pct config: value of {key:?} contains a line break"
                )));
            }
            out.push_str(key);
            out.push_str(": ");
            out.push_str(value);
            out.push('\n');
        }
        Ok(())
    }

    /// Proxmox drops trailing empty description lines (Perl's split); so do we, so that what
    /// is parsed renders back identically.
    fn finish(&mut self) {
        while self.description.last().is_some_and(String::is_empty) {
            self.description.pop();
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PctConfig {
    pub main: Section,
    pub pending: Option<Section>,
    pub snapshots: BTreeMap<String, Section>,
}

enum Target {
    Main,
    Pending,
    Snapshot(String),
}

impl PctConfig {
    pub fn parse(text: &str) -> Result<Self> {
        let mut conf = PctConfig::default();
        let mut target = Target::Main;
        for (n, line) in text.lines().enumerate() {
            let lineno = n + 1;
            if line.trim().is_empty() {
                continue;
            }
            if let Some(name) = section_header(line) {
                conf.section(&target).finish();
                if name.eq_ignore_ascii_case("pve:pending") {
                    if conf.pending.is_some() {
                        return Err(Error::invalid(format!(
                            "pct config line {lineno}: [pve:pending] given twice"
                        )));
                    }
                    conf.pending = Some(Section::default());
                    target = Target::Pending;
                } else if is_snapshot_name(name) {
                    if conf.snapshots.contains_key(name) {
                        return Err(Error::invalid(format!(
                            "pct config line {lineno}: snapshot [{name}] given twice"
                        )));
                    }
                    conf.snapshots.insert(name.to_string(), Section::default());
                    target = Target::Snapshot(name.to_string());
                } else {
                    return Err(Error::invalid(format!(
                        "pct config line {lineno}: bad section name [{name}]"
                    )));
                }
                continue;
            }
            let section = conf.section(&target);
            if let Some(text) = line.strip_prefix('#') {
                section.description.push(decode_text(text));
            } else if let Some((key, value)) = lxc_line(line) {
                section.lxc.push((key.to_string(), value.to_string()));
            } else if let Some((key, value)) = key_line(line) {
                if key == "description" {
                    // An old-style `description:` line; Proxmox folds it into the comment.
                    section.description.push(decode_text(value));
                } else {
                    section.keys.insert(key.to_string(), value.to_string());
                }
            } else {
                return Err(Error::invalid(format!(
                    "pct config line {lineno}: cannot parse {line:?}"
                )));
            }
        }
        conf.section(&target).finish();
        // An empty pending section is not written back by Proxmox either.
        if conf.pending.as_ref().is_some_and(Section::is_empty) {
            conf.pending = None;
        }
        Ok(conf)
    }

    fn section(&mut self, target: &Target) -> &mut Section {
        match target {
            Target::Main => &mut self.main,
            Target::Pending => self.pending.get_or_insert_with(Section::default),
            Target::Snapshot(name) => self.snapshots.entry(name.clone()).or_default(),
        }
    }

    pub fn render(&self) -> Result<String> {
        let mut out = String::new();
        self.main.render(&mut out)?;
        if let Some(p) = self.pending.as_ref().filter(|p| !p.is_empty()) {
            out.push_str("\n[pve:pending]\n");
            p.render(&mut out)?;
        }
        for (name, snap) in &self.snapshots {
            out.push_str(&format!("\n[{name}]\n"));
            snap.render(&mut out)?;
        }
        Ok(out)
    }

    /// Refuses raw `lxc.*` keys of the main section that pve-container would reject.
    pub fn check_lxc_keys(&self) -> Result<()> {
        match self.main.lxc.iter().find(|(k, _)| !is_allowed_lxc_key(k)) {
            Some((k, _)) => Err(Error::invalid(format!(
                "pct config: {k} is not a raw lxc key Proxmox accepts"
            ))),
            None => Ok(()),
        }
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).ctx(|| format!("reading {}", path.display()))?;
        Self::parse(&text).map_err(|e| e.context(path.display()))
    }
}

/// `[name]` with optional trailing blanks, as Proxmox matches section headers.
fn section_header(line: &str) -> Option<&str> {
    line.trim_end().strip_prefix('[')?.strip_suffix(']')
}

/// Snapshot names: `[a-z][a-z0-9_-]+`, case-insensitive (pve-container's section regex).
fn is_snapshot_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// `lxc.key: value` or `lxc.key = value`.
fn lxc_line(line: &str) -> Option<(&str, &str)> {
    if !line.starts_with("lxc.") {
        return None;
    }
    let end = line
        .bytes()
        .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b)))
        .unwrap_or(line.len());
    let key = &line[..end];
    let rest = line[end..].trim_start_matches([' ', '\t']);
    let value = rest
        .strip_prefix(':')
        .or_else(|| rest.strip_prefix('='))?
        .trim();
    Some((key, value))
}

/// `key: value` with a key of `[a-z][a-z_]*\d*` and a non-empty value.
fn key_line(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let b = key.as_bytes();
    let letters = b
        .iter()
        .take_while(|c| c.is_ascii_lowercase() || **c == b'_')
        .count();
    let ok =
        !b.is_empty() && b[0].is_ascii_lowercase() && b[letters..].iter().all(u8::is_ascii_digit);
    let value = value.trim();
    (ok && !value.is_empty()).then_some((key, value))
}

/// PVE::Tools::encode_text: UTF-8 bytes outside 0x20..=0x7e, and `:`, become `%XX`.
pub fn encode_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b':' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// PVE::Tools::decode_text: every `%XX` becomes its byte, then the bytes are read as UTF-8.
pub fn decode_text(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Raw `lxc.*` keys pve-container accepts in a config (its valid list, plus the cgroup,
/// prlimit and net families); only these may be written.
pub fn is_allowed_lxc_key(key: &str) -> bool {
    const VALID: &[&str] = &[
        "lxc.apparmor.profile",
        "lxc.apparmor.allow_incomplete",
        "lxc.apparmor.allow_nesting",
        "lxc.apparmor.raw",
        "lxc.selinux.context",
        "lxc.include",
        "lxc.arch",
        "lxc.uts.name",
        "lxc.signal.halt",
        "lxc.signal.reboot",
        "lxc.signal.stop",
        "lxc.init.cmd",
        "lxc.init.cwd",
        "lxc.pty.max",
        "lxc.console.logfile",
        "lxc.console.path",
        "lxc.tty.max",
        "lxc.devtty.dir",
        "lxc.hook.autodev",
        "lxc.autodev",
        "lxc.kmsg",
        "lxc.mount.fstab",
        "lxc.mount.entry",
        "lxc.mount.auto",
        "lxc.rootfs.mount",
        "lxc.cap.drop",
        "lxc.cap.keep",
        "lxc.seccomp.profile",
        "lxc.seccomp.notify.proxy",
        "lxc.seccomp.notify.cookie",
        "lxc.idmap",
        "lxc.hook.pre-start",
        "lxc.hook.pre-mount",
        "lxc.hook.mount",
        "lxc.hook.start",
        "lxc.hook.stop",
        "lxc.hook.post-stop",
        "lxc.hook.clone",
        "lxc.hook.destroy",
        "lxc.hook.version",
        "lxc.log.level",
        "lxc.log.file",
        "lxc.start.auto",
        "lxc.start.delay",
        "lxc.start.order",
        "lxc.group",
        "lxc.environment",
        "lxc.environment.runtime",
        "lxc.environment.hooks",
        "lxc.sysctl.fs.mqueue",
        "lxc.sysctl.kernel.msgmax",
        "lxc.sysctl.kernel.msgmnb",
        "lxc.sysctl.kernel.msgmni",
        "lxc.sysctl.kernel.sem",
        "lxc.sysctl.kernel.shmall",
        "lxc.sysctl.kernel.shmmax",
        "lxc.sysctl.kernel.shmmni",
        "lxc.sysctl.kernel.shm_rmid_forced",
    ];
    VALID.contains(&key)
        || ["lxc.cgroup.", "lxc.cgroup2.", "lxc.prlimit.", "lxc.net."]
            .iter()
            .any(|p| key.starts_with(p) && key.len() > p.len())
}

/// Writes `text` to `path` atomically: a temp file in the same directory (named as
/// PVE::Tools::file_set_contents names its own), then rename over the target.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp.{}", path.display(), std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .ctx(|| format!("writing {}", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, path).ctx(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config in the shape Proxmox VE 8 writes for a container with a pending change and two
    /// snapshots (one with its own description), plus raw lxc keys.
    const PROXMOX_SHAPED: &str = "\
#Web server%3A nginx + php
#
#owner%3A ops team %C3%A9t%C3%A9
arch: amd64
cores: 2
features: nesting=1
hostname: web01
memory: 1024
net0: name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:2E:4A:01,ip=dhcp,type=veth
onboot: 1
ostype: debian
parent: before-upgrade
rootfs: local-zfs:subvol-101-disk-0,size=8G
swap: 512
unprivileged: 1
lxc.cgroup2.devices.allow: c 10:200 rwm
lxc.mount.entry: /dev/net dev/net none bind,create=dir

[pve:pending]
delete: onboot
memory: 2048

[before-upgrade]
#state before apt upgrade
arch: amd64
cores: 2
hostname: web01
memory: 1024
ostype: debian
rootfs: local-zfs:subvol-101-disk-0,size=8G
snaptime: 1718000000
swap: 512
unprivileged: 1

[first]
arch: amd64
hostname: web01
memory: 512
ostype: debian
rootfs: local-zfs:subvol-101-disk-0,size=8G
snaptime: 1717000000
";

    #[test]
    fn a_proxmox_shaped_config_round_trips_byte_for_byte() {
        let c = PctConfig::parse(PROXMOX_SHAPED).unwrap();
        assert_eq!(
            c.main.description,
            ["Web server: nginx + php", "", "owner: ops team été"]
        );
        assert_eq!(c.main.get("cores"), Some("2"));
        assert_eq!(c.main.get("parent"), Some("before-upgrade"));
        assert_eq!(c.main.lxc.len(), 2);
        assert_eq!(c.main.lxc[1].0, "lxc.mount.entry");
        assert_eq!(c.main.lxc[1].1, "/dev/net dev/net none bind,create=dir");
        let pending = c.pending.as_ref().unwrap();
        assert_eq!(pending.get("memory"), Some("2048"));
        assert_eq!(pending.get("delete"), Some("onboot"));
        assert_eq!(
            c.snapshots.keys().collect::<Vec<_>>(),
            ["before-upgrade", "first"]
        );
        assert_eq!(
            c.snapshots["before-upgrade"].description,
            ["state before apt upgrade"]
        );
        assert_eq!(c.render().unwrap(), PROXMOX_SHAPED);
        assert_eq!(PctConfig::parse(&c.render().unwrap()).unwrap(), c);
    }

    #[test]
    fn rewriting_keeps_sections_and_unknown_keys() {
        let mut c = PctConfig::parse(PROXMOX_SHAPED).unwrap();
        c.main.set("zz_unknown", "1"); // not a key pct would write; still kept
        c.main.set("hostname", "web02");
        let text = c.render().unwrap();
        let back = PctConfig::parse(&text).unwrap();
        assert_eq!(back.main.get("hostname"), Some("web02"));
        assert_eq!(back.main.get("zz_unknown"), Some("1"));
        assert_eq!(back.snapshots.len(), 2);
        assert!(back.pending.is_some());
        assert!(text.contains("\n[pve:pending]\n") && text.contains("\n[first]\n"));
    }

    #[test]
    fn proxmox_parsing_quirks_are_followed() {
        let text = "\
arch: amd64
lxc.apparmor.profile = unconfined
description: old%20style
hostname:   spaced   \n\
#late comment
[pve:pending]

[Snap_1]
memory: 256
";
        let c = PctConfig::parse(text).unwrap();
        assert_eq!(
            c.main.lxc,
            [("lxc.apparmor.profile".into(), "unconfined".into())]
        );
        assert_eq!(c.main.description, ["old style", "late comment"]);
        assert_eq!(c.main.get("hostname"), Some("spaced"));
        assert!(c.pending.is_none(), "an empty pending section is dropped");
        assert_eq!(c.snapshots["Snap_1"].get("memory"), Some("256"));
        // Written back the way Proxmox writes: comments first, `lxc.x: y`.
        assert_eq!(
            c.render().unwrap(),
            "#old style\n#late comment\narch: amd64\nhostname: spaced\nlxc.apparmor.profile: unconfined\n\n[Snap_1]\nmemory: 256\n"
        );
    }

    #[test]
    fn unparsable_lines_are_errors_not_dropped() {
        for bad in [
            "Memory: 5",
            "memory 5",
            "memory:",
            "[x]",
            "[a b]",
            "[s1]\n[s1]",
            "1abc: x",
        ] {
            assert!(PctConfig::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn values_with_line_breaks_are_refused_on_write() {
        let mut c = PctConfig::default();
        c.main.set("hostname", "a\nrootfs: /");
        assert!(c.render().is_err());
    }

    #[test]
    fn text_is_escaped_like_pve_tools() {
        assert_eq!(encode_text("a: b%c\té"), "a%3A b%c%09%C3%A9");
        assert_eq!(decode_text("a%3A b%c%09%C3%A9"), "a: b%c\té");
        assert_eq!(decode_text("100%"), "100%");
        assert_eq!(decode_text("%4"), "%4");
    }

    #[test]
    fn lxc_keys_follow_pve_containers_list() {
        assert!(is_allowed_lxc_key("lxc.mount.entry"));
        assert!(is_allowed_lxc_key("lxc.cgroup2.devices.allow"));
        assert!(is_allowed_lxc_key("lxc.prlimit.nofile"));
        assert!(!is_allowed_lxc_key("lxc.rootfs.path"));
        assert!(!is_allowed_lxc_key("lxc.cgroup."));
        assert!(!is_allowed_lxc_key("lxc.bogus"));
    }
}
