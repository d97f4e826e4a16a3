#!/usr/bin/env python3
"""Where the time of `run /bin/true` goes: samples the CPU (perf's cpu-clock, which works in a VM
without hardware counters) over many runs of the busybox bundle and splits the samples by the
kernel work and the user-space code they were in. Complements scripts/bench, which says how long
things take; this says why. Writes bench-results/profile-YYYY-MM-DD-HHMM.md (and profile-latest.md).

Categories overlap (a page fault inside execve counts in both); each is the share of all samples
whose call chain passes through the named entry point ("children" in perf's terms).
"""

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (label, kind, names): kind "sym" matches perf's children-inclusive symbols, "dso" a DSO's own
# (self) samples.
CATEGORIES = [
    ("every system call", "sym", ["entry_SYSCALL_64_after_hwframe"]),
    ("page faults (binary, libraries, heap)", "sym", ["asm_exc_page_fault"]),
    ("clone3/unshare: new namespaces", "sym", ["create_new_namespaces"]),
    ("  of which the network namespace", "sym", ["copy_net_ns"]),
    ("execve (runtime, container program)", "sym", ["__x64_sys_execve"]),
    ("open/openat2 path walks", "sym", ["__x64_sys_openat", "__x64_sys_openat2", "__x64_sys_open"]),
    ("mount, mount_setattr, pivot_root, umount", "sym",
     ["__x64_sys_mount", "__x64_sys_mount_setattr", "__x64_sys_pivot_root", "__x64_sys_umount",
      "__x64_sys_open_tree", "__x64_sys_move_mount"]),
    ("mkdir/rmdir (cgroup directories, mount points)", "sym",
     ["__x64_sys_mkdir", "__x64_sys_mkdirat", "__x64_sys_rmdir"]),
    ("write(2): cgroup files, messages to the init", "sym", ["ksys_write"]),
    ("reading /proc/self/mountinfo", "sym", ["show_mountinfo"]),
    ("loading the seccomp filter", "sym", ["do_seccomp"]),
    ("process exit (address space teardown)", "sym", ["do_group_exit"]),
    ("dynamic loader (ld.so) own code", "dso", ["ld-linux-x86-64.so.2"]),
    ("libc own code", "dso", ["libc.so.6"]),
    ("proxmox-lxcri own code", "dso", ["proxmox-lxcri"]),
]


def sh(argv, **kw):
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw).stdout


def report(data: Path, args: list[str]) -> dict[str, float]:
    out = sh(["perf", "report", "-i", str(data), "--stdio", "-g", "none", *args])
    shares = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(?:([\d.]+)%\s+)?(?:\[[.k]\]\s+)?(\S+)", line)
        if m:
            name = m.group(3)
            shares.setdefault(name, float(m.group(1)))
    return shares


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lxcri", default=str(REPO / "target/release/proxmox-lxcri"))
    ap.add_argument("-n", "--iterations", type=int, default=200)
    ap.add_argument("--seccomp", action="store_true", help="with podman's seccomp profile")
    ap.add_argument("--out", default=str(REPO / "bench-results"))
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("profile: run as root")
    if not shutil.which("perf"):
        sys.exit("profile: perf is missing (scripts/install-deps installs linux-perf)")
    lxcri = Path(args.lxcri)
    if not lxcri.is_file():
        sys.exit(f"profile: {lxcri} is not built (cargo build --release)")

    work = Path(tempfile.mkdtemp(prefix="lxcri-profile-"))
    try:
        bundle = work / "bundle"
        sh([str(REPO / "scripts/mkbundle"), str(bundle), "--", "/bin/true"])
        if args.seccomp:
            sys.path.insert(0, str(REPO / "benches"))
            import json
            from harness import convert_seccomp
            cfg = json.loads((bundle / "config.json").read_text())
            docker = json.loads(Path("/usr/share/containers/seccomp.json").read_text())
            caps = cfg["process"].get("capabilities", {}).get("bounding", [])
            cfg["linux"]["seccomp"] = convert_seccomp(docker, caps)
            (bundle / "config.json").write_text(json.dumps(cfg))
        loop = work / "loop.sh"
        loop.write_text(
            "#!/bin/sh\n"
            f"i=0; while [ $i -lt {args.iterations} ]; do\n"
            f"  {lxcri} --root {work}/root run --bundle {bundle} p$i >/dev/null || exit 1\n"
            "  i=$((i+1)); done\n")
        loop.chmod(0o755)
        data = work / "perf.data"
        # Warms the page cache and the seccomp cache, and gives the CPU time without sampling.
        stat = subprocess.run(["perf", "stat", "-x", ",", "-e", "task-clock", str(loop)],
                              check=True, text=True, capture_output=True).stderr
        unsampled_ms = float(stat.strip().splitlines()[-1].split(",")[0]) / args.iterations
        started = dt.datetime.now(dt.timezone.utc)
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "10000", "-g",
                        "-o", str(data), str(loop)], check=True, stdout=subprocess.DEVNULL)
        dso_text = sh(["perf", "report", "-i", str(data), "--stdio", "-g", "none", "--sort", "dso"])
        samples = int(re.search(r"Event count \(approx\.\): (\d+)", dso_text).group(1))
        per_run_ms = samples / 1e6 / args.iterations  # cpu-clock counts nanoseconds
        syms = report(data, ["--children", "--sort", "sym"])
        dsos = report(data, ["--no-children", "--sort", "dso"])
        # The loop's shell is not the runtime's work.
        shell = sum(v for k, v in dsos.items() if k in ("dash", "sh", "bash"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for label, kind, names in CATEGORIES:
        table = syms if kind == "sym" else dsos
        share = sum(table.get(n, 0.0) for n in names)
        rows.append((label, share))
    title = "with podman's seccomp profile" if args.seccomp else "plain busybox spec"
    lines = [
        f"# Where `run /bin/true` spends its CPU time ({title}), {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, kernel {platform.release()}, {os.cpu_count()} CPUs; "
        f"{args.iterations} runs of `{lxcri.name} run` sampled with `perf record -e cpu-clock -F 10000 -g`. "
        f"CPU time per run (runtime, container init and /bin/true, all children): "
        f"**{unsampled_ms:.2f} ms** without sampling, {per_run_ms:.2f} ms while sampled (the ms column "
        f"scales the shares to the unsampled figure); the loop's shell: {shell:.1f}% of the samples.",
        "",
        "| where | share of CPU samples | ms per run |",
        "|---|---|---|",
    ]
    for label, share in rows:
        lines.append(f"| {label} | {share:.1f}% | {share / 100 * unsampled_ms:.2f} |")
    lines += ["", "Shares overlap (a page fault during execve counts in both rows); "
              "kernel work done later by kernel threads (network namespace clean-up) is not sampled."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        suffix = "-seccomp" if args.seccomp else ""
        name = out / f"profile{suffix}-{started:%Y-%m-%d-%H%M}.md"
        name.write_text(text)
        (out / f"profile{suffix}-latest.md").write_text(text)
        print(f"profile: wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
