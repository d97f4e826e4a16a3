//! runc's command line, flag for flag, so that go-runc (containerd), conmon (CRI-O, podman) and
//! scripts written for runc drive proxmox-lxcri unchanged.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand, ValueEnum};

pub const DEFAULT_ROOT: &str = "/run/proxmox-lxcri";

/// The command line's global options, written once for every command tree: [`Cli`] and the
/// cut-down [`IdCli`] and [`MakeCli`] (the same options over a few subcommands).
macro_rules! cli_struct {
    ($(#[$meta:meta])* $name:ident, $command:ty) => {
        $(#[$meta])*
        #[derive(Parser, Debug)]
        #[command(
            name = "proxmox-lxcri",
            about = "A fast OCI container runtime whose containers Proxmox VE can see",
            version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0"),
            disable_version_flag = true
        )]
        // The arg group clap names after the struct: "Cli" in both trees, so their matches agree.
        #[group(id = "Cli")]
        pub struct $name {
            /// Directory holding the containers' state (default: /run/proxmox-lxcri; for an
            /// unprivileged user $XDG_RUNTIME_DIR/proxmox-lxcri)
            #[arg(long, global = true, default_value_os_t = crate::linux::rootless::default_root(),
                  hide_default_value = true)]
            pub root: PathBuf,
            /// Also write log messages (errors and warnings) to this file
            #[arg(long, global = true)]
            pub log: Option<PathBuf>,
            /// Format of the log file
            #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
            pub log_format: LogFormat,
            /// The runtime's own config (default: $PROXMOX_LXCRI_CONFIG, else
            /// /etc/proxmox-lxcri/config.json; a missing file means defaults)
            #[arg(long, global = true, value_name = "FILE")]
            pub config: Option<PathBuf>,
            /// Log debug messages too
            #[arg(long, global = true)]
            pub debug: bool,
            /// Manage cgroups through systemd (slice:prefix:name cgroup paths)
            #[arg(long, global = true)]
            pub systemd_cgroup: bool,
            /// Rootless mode, as runc's: auto (default: on when not root), true or false. In
            /// rootless mode a cgroup the caller cannot write is skipped unless resource limits are
            /// asked for. Only before the subcommand, where runc takes it, since `spec --rootless`
            /// is another flag
            #[arg(long, value_name = "auto|true|false")]
            pub rootless: Option<String>,
            /// Print the version
            #[arg(short = 'v', long, action = clap::ArgAction::Version)]
            pub version: Option<bool>,
            #[command(subcommand)]
            pub command: $command,
        }
    };
}

cli_struct!(Cli, Command);

// The commands engines run for every container, each in a new process, parse with a small tree
// first. Building clap's tree of all the commands (every argument of every subcommand, each global
// option copied into each) was most of their heap. A cut-down tree has the same global options and
// defines its subcommands by the same argument structs, so a command line it accepts gets the very
// matches the full tree would give (see the tests); anything it rejects (usage errors, `help`,
// `--version`, other subcommands) goes to the full tree, which answers as before.

cli_struct!(
    /// The global options over `start`, `state`, `kill` and `delete`.
    IdCli,
    IdCommand
);

#[derive(Subcommand, Debug)]
pub enum IdCommand {
    Start(IdArg),
    State(IdArg),
    Kill(KillArgs),
    Delete(DeleteArgs),
}

cli_struct!(
    /// The global options over `create` and `run`.
    MakeCli,
    MakeCommand
);

#[derive(Subcommand, Debug)]
pub enum MakeCommand {
    Create(CreateArgs),
    Run(RunArgs),
}

/// The subcommand names of [`IdCommand`] and [`MakeCommand`] (a test checks them), looked for in
/// the command line before building a tree.
const ID_COMMANDS: [&str; 4] = ["start", "state", "kill", "delete"];
const MAKE_COMMANDS: [&str; 2] = ["create", "run"];

/// A cut-down tree: the names of its subcommands and its builder.
type HotTree = (&'static [&'static str], fn() -> clap::Command);

const HOT_TREES: [HotTree; 2] = [
    (&ID_COMMANDS, IdCli::command),
    (&MAKE_COMMANDS, MakeCli::command),
];

/// The matches of a cut-down tree that accepts the command line, if any does.
pub fn hot_matches(args: &[OsString]) -> Option<ArgMatches> {
    let named = |set: &[&str]| args.iter().skip(1).any(|a| set.iter().any(|n| a == n));
    HOT_TREES
        .into_iter()
        .filter(|(set, _)| named(set))
        .find_map(|(_, tree)| tree().try_get_matches_from(args).ok())
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`
    Create(CreateArgs),
    /// Start the process of a created container
    Start(IdArg),
    /// Print the state of a container as JSON
    State(IdArg),
    /// Send a signal to the container's init (or to all its processes)
    Kill(KillArgs),
    /// Delete a container and everything the runtime made for it
    Delete(DeleteArgs),
    /// Create and start a container, wait for it and delete it
    Run(RunArgs),
    /// Run a new process in a running container
    Exec(Box<ExecArgs>),
    /// List the containers under --root
    List(ListArgs),
    /// Write a default config.json
    Spec(SpecArgs),
    /// Print the features this runtime implements (runtime-spec features document)
    Features,
    /// Freeze every process of a running container
    Pause(IdArg),
    /// Thaw a paused container
    Resume(IdArg),
    /// List the processes of a container
    Ps(PsArgs),
    /// Change the resource limits of a container while it runs
    Update(Box<UpdateArgs>),
    /// Print resource statistics and OOM events of a container
    Events(EventsArgs),
    /// Summarise the events log: count, errors, p50/p99 latency, fallbacks per command and engine
    Metrics(MetricsArgs),
    /// Checkpoint a running container with CRIU (served by a delegate engine built with CRIU)
    Checkpoint(Box<CheckpointArgs>),
    /// Restore a container from a CRIU checkpoint (served by a delegate engine built with CRIU)
    Restore(Box<RestoreArgs>),
}

#[derive(Args, Debug)]
pub struct IdArg {
    pub id: String,
}

#[derive(Args, Debug, Clone, Default)]
pub struct CreateArgs {
    /// Path to the bundle directory
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the master side of the container's terminal
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the container's init pid to this file
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Use a move mount and chroot instead of pivot_root
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a session keyring for the container
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many fds (from fd 3 on) to the container's process
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Unix socket that receives a pidfd of the container's init
    #[arg(long)]
    pub pidfd_socket: Option<PathBuf>,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal every process in the container, not only its init
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    /// Signal name (KILL, SIGKILL) or number; TERM when absent
    #[arg(default_value = "TERM", allow_hyphen_values = true)]
    pub signal: String,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kill the container first if it is still running
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container runs, instead of waiting for it
    #[arg(short, long)]
    pub detach: bool,
    /// Do not delete the container after it exits
    #[arg(long)]
    pub keep: bool,
    /// Accepted for runc compatibility: the runtime never becomes a subreaper
    #[arg(long)]
    pub no_subreaper: bool,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// A runtime-spec process JSON file describing the process (instead of COMMAND)
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Unix socket that receives the master side of the process's terminal
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Unix socket that receives a pidfd of the process
    #[arg(long)]
    pub pidfd_socket: Option<PathBuf>,
    /// Working directory inside the container
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables (KEY=VALUE)
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// uid[:gid] to run as
    #[arg(short, long)]
    pub user: Option<String>,
    /// Supplementary group ids
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// Return once the process runs
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's host pid to this file
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// SELinux label for the process
    #[arg(long)]
    pub process_label: Option<String>,
    /// AppArmor profile for the process
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Set no_new_privs
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability (CAP_...) to the process's sets
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Pass this many fds (from fd 3 on) to the process
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Exec even if the container is paused
    #[arg(long)]
    pub ignore_paused: bool,
    /// Accepted for runc compatibility: the process joins the container's cgroup
    #[arg(long)]
    pub cgroup: Vec<String>,
    pub id: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Print only the container ids
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    /// Directory to write config.json into
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write a spec for a rootless container
    #[arg(long)]
    pub rootless: bool,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Output format: `table` runs ps(1), `json` prints the container's host pids
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    pub id: String,
    /// Arguments for ps(1) (default `-ef`), after the id or after `--`
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// runc's `update` flags; numbers stay strings here so that errors name the flag, as runc's do.
#[derive(Args, Debug, Default)]
pub struct UpdateArgs {
    /// A runtime-spec LinuxResources JSON file, or `-` for stdin; the other flags are then ignored
    #[arg(short, long, value_name = "FILE|-")]
    pub resources: Option<String>,
    /// Block IO weight (10-1000)
    #[arg(long, allow_hyphen_values = true)]
    pub blkio_weight: Option<String>,
    /// CFS period in microseconds
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_period: Option<String>,
    /// CFS quota in microseconds (-1: no limit)
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<String>,
    /// CFS burst in microseconds
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_burst: Option<String>,
    /// CPU shares (relative weight); runc spells it --cpu-share
    #[arg(long, alias = "cpu-shares", allow_hyphen_values = true)]
    pub cpu_share: Option<String>,
    /// Realtime period in microseconds
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_period: Option<String>,
    /// Realtime runtime in microseconds
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<String>,
    /// SCHED_IDLE for the cgroup (1) or not (0)
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_idle: Option<String>,
    /// CPUs the container may use (e.g. 0-2,4)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Ignored, as by runc (kernel memory limits are obsolete)
    #[arg(long, hide = true)]
    pub kernel_memory: Option<String>,
    /// Ignored, as by runc
    #[arg(long, hide = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Memory limit in bytes (k, m, g suffixes; -1: no limit)
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit in bytes
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit in bytes (-1: unlimited swap)
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Maximum number of pids (-1: no limit)
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<String>,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t = MetricsFormat::Table)]
    pub format: MetricsFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsFormat {
    Table,
    Json,
    Prometheus,
}

/// CRIU options shared by `checkpoint` and `restore` (runc's flags; passed to the engine as given).
#[derive(Args, Debug)]
pub struct CriuArgs {
    /// Directory for the CRIU image files
    #[arg(long)]
    pub image_path: Option<PathBuf>,
    /// Directory for CRIU's work files and logs
    #[arg(long)]
    pub work_path: Option<PathBuf>,
    /// Allow open TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// Allow external unix sockets
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// Allow shell jobs
    #[arg(long)]
    pub shell_job: bool,
    /// Handle file locks
    #[arg(long)]
    pub file_locks: bool,
    /// Use userfaultfd to lazily restore memory pages
    #[arg(long)]
    pub lazy_pages: bool,
    /// cgroups mode: soft, full, strict or ignore
    #[arg(long)]
    pub manage_cgroups_mode: Option<String>,
    /// Namespaces to leave empty (e.g. network)
    #[arg(long)]
    pub empty_ns: Vec<String>,
    /// Enable auto deduplication of memory images
    #[arg(long)]
    pub auto_dedup: bool,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub criu: CriuArgs,
    /// Directory of a previous (pre-dump) image
    #[arg(long)]
    pub parent_path: Option<PathBuf>,
    /// Leave the process running after checkpointing
    #[arg(long)]
    pub leave_running: bool,
    /// CRIU writes \0 to this fd when lazy-pages is ready
    #[arg(long)]
    pub status_fd: Option<String>,
    /// ADDRESS:PORT of the page server
    #[arg(long)]
    pub page_server: Option<String>,
    /// Dump the memory only, leave the container running
    #[arg(long)]
    pub pre_dump: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Print one stats record and exit
    #[arg(long)]
    pub stats: bool,
    /// Time between stats records (5s, 500ms, 1m; a bare number is seconds)
    #[arg(long, default_value = "5s")]
    pub interval: String,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub criu: CriuArgs,
    /// Path to the bundle directory
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the master side of the container's terminal
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Return once the container runs
    #[arg(short, long)]
    pub detach: bool,
    /// Write the container's init pid to this file
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility
    #[arg(long)]
    pub no_subreaper: bool,
    /// Do not use pivot_root
    #[arg(long)]
    pub no_pivot: bool,
    /// LSM profile of the restored process
    #[arg(long)]
    pub lsm_profile: Option<String>,
    /// LSM mount context of the restored container
    #[arg(long)]
    pub lsm_mount_context: Option<String>,
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    /// Every argument of a built command as clap sees it (id, flags, action, parser, defaults).
    fn args_of(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments().map(|a| format!("{a:?}")).collect()
    }

    #[test]
    fn hot_trees_are_the_full_tree_cut_down() {
        let mut full = Cli::command();
        full.build();
        for (set, tree) in HOT_TREES {
            let mut hot = tree();
            hot.build();
            assert_eq!(args_of(&hot), args_of(&full), "global options differ");
            let names: Vec<&str> = hot
                .get_subcommands()
                .map(|s| s.get_name())
                .filter(|n| *n != "help")
                .collect();
            assert_eq!(names, set);
            for sub in hot.get_subcommands().filter(|s| s.get_name() != "help") {
                let same = full
                    .find_subcommand(sub.get_name())
                    .expect("in the full tree");
                assert_eq!(args_of(sub), args_of(same), "{}", sub.get_name());
            }
        }
    }

    #[test]
    fn hot_trees_accept_only_what_the_full_tree_parses_alike() {
        let accepted: &[&[&str]] = &[
            &["state", "c1"],
            &["--root", "/r", "start", "c1"],
            &[
                "--root=/r",
                "--log=/l",
                "--log-format",
                "json",
                "delete",
                "--force",
                "c1",
            ],
            &["delete", "c1", "-f", "--debug"],
            &["kill", "--all", "c1", "KILL"],
            &["kill", "c1", "-9"],
            &["--rootless", "true", "--systemd-cgroup", "state", "c1"],
            &["--config", "/c.json", "kill", "-a", "c1", "--root", "/r"],
            &["create", "--bundle", "/b", "--pid-file=/p", "c1"],
            &["--root", "/r", "run", "-d", "--keep", "-b", "/b", "c1"],
            &["--root", "state", "create", "c1"],
            &["create", "start"],
        ];
        // Usage errors, help and version: the full tree answers them.
        let rejected: &[&[&str]] = &[
            &["state"],
            &["state", "a", "b"],
            &["help", "state"],
            &["state", "--help"],
            &["-v"],
            &["-v", "state", "c1"],
            &["create", "--detach", "c1"],
            &["run", "--help"],
            &["delete", "--rootless", "x", "c1"],
            &["kill", "--bogus", "c1"],
            &["list"],
        ];
        let argv = |line: &[&str]| -> Vec<OsString> {
            std::iter::once("proxmox-lxcri")
                .chain(line.iter().copied())
                .map(OsString::from)
                .collect()
        };
        for line in rejected {
            assert!(hot_matches(&argv(line)).is_none(), "{line:?}");
        }
        for line in accepted {
            let hot = hot_matches(&argv(line)).unwrap_or_else(|| panic!("{line:?}"));
            let full = Cli::command()
                .try_get_matches_from(argv(line))
                .unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let a = Cli::from_arg_matches(&hot).expect("hot matches");
            let b = Cli::from_arg_matches(&full).expect("full matches");
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{line:?}");
            let (hot_name, hot_sub) = hot.subcommand().expect("a subcommand");
            let (full_name, full_sub) = full.subcommand().expect("a subcommand");
            assert_eq!(hot_name, full_name);
            for m in [(&hot, &full), (hot_sub, full_sub)] {
                let ids: Vec<_> = m.1.ids().collect();
                assert_eq!(m.0.ids().collect::<Vec<_>>(), ids, "{line:?}");
                for id in ids {
                    let id = id.as_str();
                    assert_eq!(m.0.value_source(id), m.1.value_source(id), "{line:?} {id}");
                }
            }
        }
    }
}
