use crate::cli::{Cli, CreateArgs};
use crate::container::create::{create, CreateOptions};
use crate::delegate::{self, Decision, Mode};
use crate::error::Result;

pub fn options<'a>(cli: &'a Cli, args: &'a CreateArgs) -> CreateOptions<'a> {
    CreateOptions {
        root: &cli.root,
        id: &args.id,
        pid_file: args.pid_file.as_deref(),
        console_socket: args.console_socket.as_deref(),
        attach_terminal: false,
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        pidfd_socket: args.pidfd_socket.as_deref(),
        preserve_fds: args.preserve_fds,
        systemd_cgroup: cli.systemd_cgroup,
        config: cli.config.as_deref(),
    }
}

pub fn run(cli: &Cli, args: &CreateArgs) -> Result<i32> {
    crate::linux::cgroups::check_systemd_flag(cli.systemd_cgroup)?;
    let bundle = match delegate::decide(cli, &args.bundle, &args.id, Mode::Create)? {
        Decision::Native(b) => b,
        Decision::Delegated(code) => return Ok(code),
    };
    match create(&options(cli, args), *bundle) {
        Ok(_) => Ok(0),
        Err(e) => delegate::after_native_failure(cli, &args.bundle, &args.id, Mode::Create, e),
    }
}
