//! The five capability sets of `process.capabilities`, through the `caps` crate.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities as SpecCaps, LinuxCapabilities};

use crate::error::{Error, Result};

#[derive(Default, Debug)]
pub struct CapabilitySets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

fn convert(field: &str, set: &Option<SpecCaps>) -> Result<CapsHashSet> {
    set.iter()
        .flatten()
        .map(|c| {
            let name = format!("CAP_{c}");
            Capability::from_str(&name).map_err(|_| {
                Error::invalid(format!(
                    "process.capabilities.{field}: unknown capability {name}"
                ))
            })
        })
        .collect()
}

/// When config.json does not parse, names the capability field at fault, if that is the reason:
/// oci-spec reports an unknown name only by line and column.
pub fn diagnose(config: &serde_json::Value) -> Option<Error> {
    let caps = config.pointer("/process/capabilities")?.as_object()?;
    for (set, list) in caps {
        for (i, name) in list.as_array().into_iter().flatten().enumerate() {
            let known = name
                .as_str()
                .is_some_and(|n| Capability::from_str(n).is_ok());
            if !known {
                return Some(Error::invalid(format!(
                    "process.capabilities.{set}[{i}]: unknown capability {name}"
                )));
            }
        }
    }
    None
}

impl CapabilitySets {
    /// No `capabilities` object means no capabilities at all, as in runc.
    pub fn from_spec(caps: Option<&LinuxCapabilities>) -> Result<Self> {
        let Some(c) = caps else {
            return Ok(Self::default());
        };
        Ok(CapabilitySets {
            bounding: convert("bounding", c.bounding())?,
            effective: convert("effective", c.effective())?,
            permitted: convert("permitted", c.permitted())?,
            inheritable: convert("inheritable", c.inheritable())?,
            ambient: convert("ambient", c.ambient())?,
        })
    }

    /// Shrinks the bounding set; done while still privileged, before the user switch.
    pub fn drop_bounding(&self) -> Result<()> {
        for cap in caps::all() {
            if self.bounding.contains(&cap) {
                continue;
            }
            match caps::drop(None, CapSet::Bounding, cap) {
                Ok(()) => {}
                // A capability this kernel does not know is not in the bounding set anyway.
                Err(_) if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) => {}
                Err(e) => {
                    return Err(Error::invalid(format!(
                        "dropping {cap} from bounding set: {e}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Sets effective, permitted, inheritable and ambient, in an order the kernel accepts
    /// (effective within permitted, ambient within permitted and inheritable).
    pub fn apply(&self) -> Result<()> {
        // Names this kernel does not know cannot be set; runc skips them the same way.
        let supported = caps::runtime::thread_all_supported();
        let known =
            |s: &CapsHashSet| -> CapsHashSet { s.intersection(&supported).copied().collect() };
        let set = |which: CapSet, caps: &CapsHashSet, name: &str| {
            caps::set(None, which, caps)
                .map_err(|e| Error::invalid(format!("setting {name} capabilities: {e}")))
        };
        set(CapSet::Effective, &known(&self.effective), "effective")?;
        set(CapSet::Permitted, &known(&self.permitted), "permitted")?;
        set(
            CapSet::Inheritable,
            &known(&self.inheritable),
            "inheritable",
        )?;
        caps::clear(None, CapSet::Ambient)
            .map_err(|e| Error::invalid(format!("clearing ambient capabilities: {e}")))?;
        // Ambient needs the capability in permitted and inheritable too; runc skips the rest, and
        // its default spec relies on that (ambient given, inheritable not).
        for cap in self
            .ambient
            .iter()
            .filter(|c| self.permitted.contains(c) && self.inheritable.contains(c))
        {
            caps::raise(None, CapSet::Ambient, *cap)
                .map_err(|e| Error::invalid(format!("raising ambient capability {cap}: {e}")))?;
        }
        Ok(())
    }
}
