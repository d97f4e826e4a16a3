//! A validated `linux.seccomp` profile to a classic BPF program, through libseccomp. Only the
//! program is produced here; the load flags are the kernel's business and are passed at load time.

use std::io::{Read, Seek, SeekFrom};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator,
};

use crate::error::{Context, Error, Result};

/// The spec's default for ERRNO and TRACE without errnoRet (runc's too).
const DEFAULT_RET: u32 = libc::EPERM as u32;

pub fn action(a: LinuxSeccompAction, ret: Option<u32>) -> ScmpAction {
    let ret = ret.unwrap_or(DEFAULT_RET);
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        // validate() keeps the value within 16 bits.
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(ret as i32),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret as u16),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn condition(a: &LinuxSeccompArg) -> ScmpArgCompare {
    let op = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // As in runc: `value` is the mask, `valueTwo` what the masked argument must equal.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(
                a.index() as u32,
                ScmpCompareOp::MaskedEqual(a.value()),
                a.value_two().unwrap_or(0),
            )
        }
    };
    ScmpArgCompare::new(a.index() as u32, op, a.value())
}

fn scmp_err(field: impl std::fmt::Display, e: libseccomp::error::SeccompError) -> Error {
    Error::invalid(format!("{field}: {e}"))
}

/// Compiles the profile to BPF (struct sock_filter in native byte order). Syscall names this
/// libseccomp does not know are skipped with a warning on stderr, as runc does.
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<u8>> {
    let default = action(s.default_action(), s.default_errno_ret());
    let mut ctx =
        ScmpFilterContext::new(default).map_err(|e| scmp_err("linux.seccomp.defaultAction", e))?;
    for (i, a) in s.architectures().iter().flatten().enumerate() {
        ctx.add_arch(arch(*a)).map_err(|e| {
            scmp_err(
                format!("linux.seccomp.architectures[{i}] {a}: not supported by this libseccomp"),
                e,
            )
        })?;
    }
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let act = action(sc.action(), sc.errno_ret());
        // libseccomp refuses a rule that repeats the default action; it would change nothing.
        if act == default {
            continue;
        }
        let args = sc.args().as_deref().unwrap_or_default();
        let conds: Vec<ScmpArgCompare> = args.iter().map(condition).collect();
        // libseccomp ANDs the conditions of one rule but cannot compare one argument twice in
        // it; like runc, a rule with a repeated index becomes one rule per condition (an OR).
        let mut seen = [false; 6];
        let repeated = args
            .iter()
            .any(|a| std::mem::replace(&mut seen[a.index()], true));
        for name in sc.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                eprintln!(
                    "proxmox-lxcri: warning: linux.seccomp.syscalls[{i}]: unknown syscall {name:?} skipped"
                );
                continue;
            };
            let field = || format!("linux.seccomp.syscalls[{i}] ({name})");
            if repeated {
                for c in &conds {
                    ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map_err(|e| scmp_err(field(), e))?;
                }
            } else {
                ctx.add_rule_conditional(act, nr, &conds)
                    .map_err(|e| scmp_err(field(), e))?;
            }
        }
    }
    export(&ctx)
}

/// libseccomp 2.5 exports only to an fd; a memfd takes a program of any size.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    let fd = nix::sys::memfd::memfd_create(
        c"seccomp-bpf",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .ctx(|| "memfd_create for the seccomp program")?;
    ctx.export_bpf(&fd)
        .map_err(|e| scmp_err("exporting the seccomp program", e))?;
    let mut file = std::fs::File::from(fd);
    file.seek(SeekFrom::Start(0))
        .ctx(|| "reading the seccomp program")?;
    let mut bpf = Vec::new();
    file.read_to_end(&mut bpf)
        .ctx(|| "reading the seccomp program")?;
    Ok(bpf)
}
