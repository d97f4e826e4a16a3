//! The caller's command line re-targeted at an engine: our global options are dropped (the engine
//! gets its own `--root` and the caller's log settings), the subcommand and its arguments are
//! passed verbatim — so every runc subcommand, including ones added later, passes through.

use std::collections::HashMap;
use std::ffi::OsString;

use clap::CommandFactory;

use crate::cli::Cli;

/// `(name, takes a value)` of the long and short options of a clap command.
fn options(cmd: &clap::Command) -> (HashMap<String, bool>, HashMap<char, bool>) {
    let mut long = HashMap::new();
    let mut short = HashMap::new();
    for a in cmd.get_arguments() {
        let takes = a.get_action().takes_values();
        for l in a.get_long_and_visible_aliases().into_iter().flatten() {
            long.insert(l.to_string(), takes);
        }
        if let Some(c) = a.get_short() {
            short.insert(c, takes);
        }
    }
    (long, short)
}

/// The subcommand and everything after it from `raw` (argv without argv[0]), minus our global
/// options, which clap accepts anywhere before the container id.
pub fn subcommand_args(raw: &[OsString], sub: &str) -> Vec<OsString> {
    let cli = Cli::command();
    let (globals, _) = options(&cli);
    let (sub_long, sub_short) = cli.find_subcommand(sub).map(options).unwrap_or_default();
    let mut out = Vec::new();
    let mut it = raw.iter();
    let mut seen_sub = false;
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        if s == "--" {
            out.push(arg.clone());
            out.extend(it.by_ref().cloned());
            break;
        }
        if let Some(name) = s.strip_prefix("--") {
            let (name, inline) = match name.split_once('=') {
                Some((n, _)) => (n, true),
                None => (name, false),
            };
            if let Some(&takes) = globals.get(name) {
                if takes && !inline {
                    it.next();
                }
                continue;
            }
            if seen_sub {
                out.push(arg.clone());
                if sub_long.get(name) == Some(&true) && !inline {
                    out.extend(it.next().cloned());
                }
            }
            continue;
        }
        if !seen_sub {
            if s == sub {
                seen_sub = true;
                out.push(arg.clone());
            }
            // Anything else before the subcommand is a global flag's business (-v, --rootless).
            continue;
        }
        if s.len() > 1 && s.starts_with('-') && !s.starts_with("--") {
            out.push(arg.clone());
            // `-p FILE`: the value follows unless attached (`-pFILE`).
            let chars: Vec<char> = s[1..].chars().collect();
            if chars.len() == 1 && sub_short.get(&chars[0]) == Some(&true) {
                out.extend(it.next().cloned());
            }
            continue;
        }
        // The first positional is the container id; the rest (exec's command, kill's signal)
        // belongs to the subcommand whatever it looks like.
        out.push(arg.clone());
        out.extend(it.by_ref().cloned());
        break;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str, sub: &str) -> Vec<String> {
        let raw: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        subcommand_args(&raw, sub)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn our_globals_are_dropped_wherever_they_are() {
        assert_eq!(
            split(
                "--root /r --log=/l create --debug --bundle /b --root /x c1",
                "create"
            ),
            ["create", "--bundle", "/b", "c1"]
        );
        assert_eq!(
            split("kill --all c1 KILL", "kill"),
            ["kill", "--all", "c1", "KILL"]
        );
    }

    #[test]
    fn what_follows_the_id_is_kept_verbatim() {
        assert_eq!(
            split("exec -e A=1 --cwd /tmp c1 sh -c --debug --root", "exec"),
            ["exec", "-e", "A=1", "--cwd", "/tmp", "c1", "sh", "-c", "--debug", "--root"]
        );
        // A flag value that equals the subcommand's name is not taken for it.
        assert_eq!(split("--root state state c2", "state"), ["state", "c2"]);
    }
}
