//! Checks `linux.seccomp` before the system is touched. Every error names the field at fault
//! (`linux.seccomp.syscalls[3].action`), including the ones serde would report only by line and
//! column (an unknown action, operator, architecture or flag).

use std::str::FromStr;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde_json::Value;

use crate::error::{Error, Result};

/// Syscalls have six arguments (0-5).
const MAX_ARG_INDEX: usize = 5;
/// The data field of SECCOMP_RET_ERRNO and SECCOMP_RET_TRACE is 16 bits wide.
const MAX_RET_DATA: u32 = 0xffff;
/// The runtime's own syscalls after the filter is loaded: the notify fd is handed over with
/// sendmsg, then execve. A NOTIFY rule on sendmsg would make the runtime wait for a listener
/// that has not got its fd yet.
const RUNTIME_SYSCALLS_AFTER_LOAD: &[&str] = &["sendmsg"];

/// Semantic checks of a parsed profile.
pub fn validate(s: &LinuxSeccomp) -> Result<()> {
    check_ret(
        "linux.seccomp.defaultErrnoRet",
        s.default_action(),
        s.default_errno_ret(),
    )?;
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(Error::invalid(
            "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action \
             (every syscall, the runtime's own last ones included, would wait for the listener)",
        ));
    }
    if let Some(p) = s.listener_path() {
        if !p.is_absolute() {
            return Err(Error::invalid(format!(
                "linux.seccomp.listenerPath {}: must be an absolute path",
                p.display()
            )));
        }
    }
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        if sc.names().is_empty() {
            return Err(Error::invalid(format!("{field}.names: must not be empty")));
        }
        if let Some(j) = sc.names().iter().position(|n| n.is_empty()) {
            return Err(Error::invalid(format!(
                "{field}.names[{j}]: empty syscall name"
            )));
        }
        check_ret(&format!("{field}.errnoRet"), sc.action(), sc.errno_ret())?;
        if sc.action() == LinuxSeccompAction::ScmpActNotify {
            if s.listener_path().is_none() {
                return Err(Error::invalid(format!(
                    "{field}.action: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath"
                )));
            }
            if let Some(n) = sc
                .names()
                .iter()
                .find(|n| RUNTIME_SYSCALLS_AFTER_LOAD.contains(&n.as_str()))
            {
                return Err(Error::invalid(format!(
                    "{field}: SCMP_ACT_NOTIFY on {n} is not supported: the runtime hands the \
                     notify fd to the listener with {n} after loading the filter"
                )));
            }
        }
        for (j, a) in sc.args().iter().flatten().enumerate() {
            if a.index() > MAX_ARG_INDEX {
                return Err(Error::invalid(format!(
                    "{field}.args[{j}].index {}: a syscall has arguments 0 to {MAX_ARG_INDEX}",
                    a.index()
                )));
            }
        }
    }
    Ok(())
}

/// errnoRet belongs to ERRNO and TRACE only, and must fit the 16-bit data field.
fn check_ret(field: &str, action: LinuxSeccompAction, ret: Option<u32>) -> Result<()> {
    let Some(ret) = ret else { return Ok(()) };
    if !matches!(
        action,
        LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace
    ) {
        return Err(Error::invalid(format!(
            "{field}: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take a return value, not {action}"
        )));
    }
    if ret > MAX_RET_DATA {
        return Err(Error::invalid(format!(
            "{field} {ret}: must be at most {MAX_RET_DATA}"
        )));
    }
    Ok(())
}

/// When config.json does not parse, finds the seccomp field at fault, if that is the reason:
/// serde names an unknown enum value only by line and column.
pub fn diagnose(config: &Value) -> Option<Error> {
    let s = config.pointer("/linux/seccomp")?;
    if s.is_null() {
        return None;
    }
    let bad = |field: String, what: &str| Some(Error::invalid(format!("{field}: {what}")));
    let Some(obj) = s.as_object() else {
        return bad("linux.seccomp".into(), "must be an object");
    };
    match obj.get("defaultAction") {
        None => return bad("linux.seccomp.defaultAction".into(), "missing"),
        Some(v) => {
            if let Some(e) =
                check_name::<LinuxSeccompAction>("linux.seccomp.defaultAction".into(), v, "action")
            {
                return Some(e);
            }
        }
    }
    if let Some(e) = check_u32(
        "linux.seccomp.defaultErrnoRet".into(),
        obj.get("defaultErrnoRet"),
    ) {
        return Some(e);
    }
    for (key, what) in [("architectures", "architecture"), ("flags", "flag")] {
        let Some(v) = obj.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(list) = v.as_array() else {
            return bad(format!("linux.seccomp.{key}"), "must be an array");
        };
        for (i, item) in list.iter().enumerate() {
            let field = format!("linux.seccomp.{key}[{i}]");
            let err = if key == "flags" {
                check_name::<LinuxSeccompFilterFlag>(field, item, what)
            } else {
                check_name::<Arch>(field, item, what)
            };
            if err.is_some() {
                return err;
            }
        }
    }
    let calls = obj.get("syscalls").filter(|v| !v.is_null())?;
    let Some(calls) = calls.as_array() else {
        return bad("linux.seccomp.syscalls".into(), "must be an array");
    };
    for (i, call) in calls.iter().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        if let Some(e) = diagnose_syscall(&field, call) {
            return Some(e);
        }
    }
    None
}

fn diagnose_syscall(field: &str, call: &Value) -> Option<Error> {
    let bad = |f: String, what: &str| Some(Error::invalid(format!("{f}: {what}")));
    let Some(obj) = call.as_object() else {
        return bad(field.into(), "must be an object");
    };
    match obj.get("names").and_then(Value::as_array) {
        None => {
            return bad(
                format!("{field}.names"),
                "must be an array of syscall names",
            )
        }
        Some(names) => {
            if let Some(j) = names.iter().position(|n| !n.is_string()) {
                return bad(format!("{field}.names[{j}]"), "must be a string");
            }
        }
    }
    match obj.get("action") {
        None => return bad(format!("{field}.action"), "missing"),
        Some(v) => {
            if let Some(e) =
                check_name::<LinuxSeccompAction>(format!("{field}.action"), v, "action")
            {
                return Some(e);
            }
        }
    }
    if let Some(e) = check_u32(format!("{field}.errnoRet"), obj.get("errnoRet")) {
        return Some(e);
    }
    let args = obj.get("args").filter(|v| !v.is_null())?;
    let Some(args) = args.as_array() else {
        return bad(format!("{field}.args"), "must be an array");
    };
    for (j, arg) in args.iter().enumerate() {
        let af = format!("{field}.args[{j}]");
        let Some(a) = arg.as_object() else {
            return bad(af, "must be an object");
        };
        for key in ["index", "value", "valueTwo"] {
            match a.get(key) {
                None if key == "valueTwo" => {}
                Some(Value::Null) if key == "valueTwo" => {}
                Some(v) if v.as_u64().is_some() => {}
                None => return bad(format!("{af}.{key}"), "missing"),
                Some(v) => {
                    return bad(
                        format!("{af}.{key}"),
                        &format!("{v} is not an unsigned 64-bit integer"),
                    )
                }
            }
        }
        match a.get("op") {
            None => return bad(format!("{af}.op"), "missing"),
            Some(v) => {
                if let Some(e) =
                    check_name::<LinuxSeccompOperator>(format!("{af}.op"), v, "operator")
                {
                    return Some(e);
                }
            }
        }
    }
    None
}

fn check_name<T: FromStr>(field: String, v: &Value, what: &str) -> Option<Error> {
    match v.as_str() {
        None => Some(Error::invalid(format!("{field}: {v} is not a string"))),
        Some(name) if T::from_str(name).is_err() => {
            Some(Error::invalid(format!("{field}: unknown {what} {name:?}")))
        }
        Some(_) => None,
    }
}

fn check_u32(field: String, v: Option<&Value>) -> Option<Error> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) if v.as_u64().is_some_and(|n| n <= u32::MAX as u64) => None,
        Some(v) => Some(Error::invalid(format!(
            "{field}: {v} is not an unsigned 32-bit integer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diag(seccomp: Value) -> String {
        diagnose(&json!({ "linux": { "seccomp": seccomp } }))
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn unknown_names_are_reported_with_their_field() {
        let ok = json!({"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"});
        assert_eq!(
            diag(
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [ok, ok, ok,
                {"names": ["getcwd"], "action": "SCMP_ACT_BOGUS"}]})
            ),
            "linux.seccomp.syscalls[3].action: unknown action \"SCMP_ACT_BOGUS\""
        );
        assert_eq!(
            diag(json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]})),
            "linux.seccomp.architectures[0]: unknown architecture \"SCMP_ARCH_VAX\""
        );
        assert_eq!(
            diag(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"]})),
            "linux.seccomp.flags[0]: unknown flag \"SECCOMP_FILTER_FLAG_X\""
        );
        assert_eq!(
            diag(
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]})
            ),
            "linux.seccomp.syscalls[0].args[0].op: unknown operator \"SCMP_CMP_XX\""
        );
        assert_eq!(
            diag(json!({"defaultAction": "KILL"})),
            "linux.seccomp.defaultAction: unknown action \"KILL\""
        );
    }

    #[test]
    fn a_well_formed_profile_has_nothing_to_diagnose() {
        assert_eq!(
            diag(
                json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 1, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}]}]})
            ),
            ""
        );
    }
}
