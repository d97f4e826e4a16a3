//! proxmox-lxcri: a fast OCI container runtime with runc's command line.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod config;
mod container;
mod delegate;
mod error;
mod eventlog;
mod fsutil;
mod hooks;
mod linux;
mod log;
mod proxmox;
mod spec;
mod state;

use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command};

/// Commands that concern no container and change nothing are not recorded in the events log.
const UNRECORDED: &[&str] = &["spec", "features", "metrics"];

fn main() {
    let started = std::time::Instant::now();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Commands run per container: a cut-down command tree first (see cli::IdCli), else the full one.
    let parsed = match cli::hot_matches(&args) {
        Some(m) => Ok(m),
        None => Cli::command().try_get_matches_from(args),
    };
    let matches = match parsed {
        Ok(m) => m,
        Err(e) => {
            // Engines read the runtime's error from the --log file (containerd's shim, conmon):
            // a usage error must land there too.
            if !matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) {
                log::usage_error(&e.to_string());
            }
            e.exit()
        }
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    log::init(&cli);
    config::init(cli.config.as_deref());
    let (name, sub) = matches
        .subcommand()
        .map(|(n, s)| (n, Some(s)))
        .unwrap_or(("", None));
    if let Err(err) = check_rootless(&cli, &matches, name) {
        log::error(&err.to_string());
        std::process::exit(1);
    }
    // A container owned by a delegate engine: the command goes to that engine.
    let result = match sub.and_then(|s| delegate::route(&cli, name, s)) {
        Some(r) => r,
        None => dispatch(&cli),
    };
    if !UNRECORDED.contains(&name) {
        let id = sub.and_then(|s| s.try_get_one::<String>("id").ok().flatten());
        eventlog::record(&cli.root, name, id.map(String::as_str), started, &result);
    }
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            log::error(&err.to_string());
            std::process::exit(1);
        }
    }
}

/// The --rootless mode, and a usable state root for an unprivileged caller that gave no --root
/// (commands that keep no state need none).
fn check_rootless(cli: &Cli, matches: &clap::ArgMatches, name: &str) -> error::Result<()> {
    linux::rootless::init(cli.rootless.as_deref())?;
    let root_given = matches.value_source("root") == Some(clap::parser::ValueSource::CommandLine);
    if root_given || UNRECORDED.contains(&name) {
        return Ok(());
    }
    match linux::rootless::default_root_problem() {
        Some(problem) => Err(error::Error::invalid(problem)),
        None => Ok(()),
    }
}

fn dispatch(cli: &Cli) -> error::Result<i32> {
    match &cli.command {
        Command::Create(a) => commands::create::run(cli, a),
        Command::Start(a) => commands::start::run(cli, &a.id),
        Command::State(a) => commands::state::run(cli, &a.id),
        Command::Kill(a) => commands::kill::run(cli, a),
        Command::Delete(a) => commands::delete::run(cli, a),
        Command::Run(a) => commands::run::run(cli, a),
        Command::Exec(a) => commands::exec::run(cli, a),
        Command::List(a) => commands::list::run(cli, a),
        Command::Spec(a) => commands::spec::run(a),
        Command::Features => commands::features::run(),
        Command::Pause(a) => commands::pause::pause(cli, &a.id),
        Command::Resume(a) => commands::pause::resume(cli, &a.id),
        Command::Ps(a) => commands::ps::run(cli, a),
        Command::Update(a) => commands::update::run(cli, a),
        Command::Events(a) => commands::events::run(cli, a),
        Command::Metrics(a) => commands::metrics::run(cli, a),
        Command::Checkpoint(a) => commands::checkpoint::run(cli, a),
        Command::Restore(a) => commands::restore::run(cli, a),
    }
}
