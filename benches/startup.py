#!/usr/bin/env python3
"""benches/startup.py [-r ROUNDS] [-n N] BIN [BIN...]   (as root)

The runtime's own per-process cost, for comparing builds of proxmox-lxcri in one session: engines
run `create`, `start`, `state` and `delete` as separate processes, so start-up (ld.so, page faults,
argument parsing) counts several times per container. For each round and each binary in turn
(interleaved, so that load hits all alike):

- `perf stat -r N -e task-clock,page-faults` of `state` of a created container and of `run` of
  /bin/true (task-clock and faults include the container's init for `run`);
- N create / start / delete cycles, each command under the static rusage helper (benches/rusage.c):
  minor faults, utime+stime and ru_maxrss of the command (and the children it reaped itself).

Page faults are exact counts and barely move between runs: prefer them over CPU time on a loaded
machine. Prints one table: faults (mean), CPU ms (median), peak RSS KiB (median).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = ("state", "start", "delete", "create", "run")


def perf_stat(argv: list[str], n: int) -> dict[str, float]:
    out = subprocess.run(["perf", "stat", "-x,", "-r", str(n), "-e", "task-clock,page-faults"] + argv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True).stderr
    vals = {}
    for line in out.splitlines():
        f = line.split(",")
        if len(f) > 3 and f[0] and f[0][0].isdigit():
            vals[f[2]] = float(f[0])
    return vals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=30, help="runs per command, round and binary")
    ap.add_argument("bins", nargs="+")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("startup.py: must run as root", file=sys.stderr)
        return 1
    bins = [str(Path(b).resolve()) for b in a.bins]
    has_perf = shutil.which("perf") is not None
    res: dict[tuple, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="lxcri-startup.") as tmp:
        w = Path(tmp)
        bundle, rusage, out = w / "bundle", w / "rusage", w / "rusage.out"
        subprocess.run([str(REPO / "scripts/mkbundle"), str(bundle), "--", "/bin/true"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["gcc", "-O2", "-static", "-o", str(rusage), str(REPO / "benches/rusage.c")], check=True)

        def measured(argv: list[str]) -> tuple[int, float, int]:
            if subprocess.run([str(rusage), str(out)] + argv, stdout=subprocess.DEVNULL).returncode:
                raise SystemExit(f"failed: {' '.join(argv)}")
            rss, ut, st, flt = map(int, out.read_text().split())
            return flt, (ut + st) / 1000, rss

        roots = {b: str(w / f"root{i}") for i, b in enumerate(bins)}
        try:
            for b in bins:
                subprocess.run([b, "--root", roots[b], "create", "-b", str(bundle), "st"], check=True)
            for r in range(a.rounds):
                for b in bins:
                    base = [b, "--root", roots[b]]
                    for step, args in (("state", ["state", "st"]), ("run", ["run", "-b", str(bundle), "rr"])):
                        if has_perf:
                            v = perf_stat(base + args, a.n)
                            res[(b, step, "faults")].append(v["page-faults"])
                            res[(b, step, "ms")].append(v["task-clock"])
                        else:
                            for _ in range(a.n):
                                flt, ms, rss = measured(base + args)
                                res[(b, step, "faults")].append(flt)
                                res[(b, step, "ms")].append(ms)
                    for _ in range(a.n):
                        for step, args in (("create", ["create", "-b", str(bundle), "cc"]), ("start", ["start", "cc"]),
                                           ("delete", ["delete", "cc"])):
                            if step == "delete":  # a delete of a stopped container, as engines do
                                while b'"stopped"' not in subprocess.run(base + ["state", "cc"],
                                                                         capture_output=True).stdout:
                                    pass
                            flt, ms, rss = measured(base + args)
                            res[(b, step, "faults")].append(flt)
                            res[(b, step, "ms")].append(ms)
                            res[(b, step, "rss")].append(rss)
                print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
        finally:
            for b in bins:
                for cid in ("st", "cc", "rr"):
                    subprocess.run([b, "--root", roots[b], "delete", "--force", cid],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    width = max(8, max(len(Path(b).name) for b in bins) + 2)
    print(f"{'binary':<{width}}{'command':<9}{'faults':>9}{'cpu ms':>9}{'RSS KiB':>9}")
    for step in STEPS:
        for b in bins:
            rss = res.get((b, step, "rss"))
            print(f"{Path(b).name:<{width}}{step:<9}{statistics.mean(res[(b, step, 'faults')]):>9.1f}"
                  f"{statistics.median(res[(b, step, 'ms')]):>9.2f}"
                  f"{(f'{statistics.median(rss):.0f}' if rss else '-'):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
