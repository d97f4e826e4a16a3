//! proxmox-lxcri: a fast OCI container runtime with runc's command line.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod container;
mod error;
mod hooks;
mod linux;
mod log;
mod proxmox;
mod spec;
mod state;

use clap::Parser;

use cli::{Cli, Command};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
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
    log::init(&cli);
    let result = dispatch(&cli);
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            log::error(&err.to_string());
            std::process::exit(1);
        }
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
    }
}
