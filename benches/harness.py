#!/usr/bin/env python3
"""Benchmark harness for proxmox-lxcri against runc, crun and a C floor. Python 3.11 stdlib only.

Started by scripts/bench, which runs it inside a private mount namespace (with /sys/fs/cgroup/unified
unmounted so Debian's crun accepts the hybrid cgroup host), on a tmpfs work dir, with the floor already
compiled. See benches/README.md for the method and the meaning of every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import html
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
SECCOMP_PROFILE = Path("/usr/share/containers/seccomp.json")
USERNS_MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]
LXCRI = "proxmox-lxcri"
FLOOR = "floor"
SPAWN = "spawn"  # the /bin/true spawn baseline, a pseudo-engine
ENGINE_ORDER = [LXCRI, "runc", "crun", FLOOR]
COLORS = {LXCRI: "#2e8b57", "runc": "#3b6fb6", "crun": "#e08a1e", FLOOR: "#8c8c8c", SPAWN: "#c7c7c7"}


# --- figures ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    what: str
    unit: str = "ms"  # ms | /s | MiB | Minstr
    higher_is_better: bool = False


LATENCY = [
    Figure("run", "run /bin/true", "ENGINE run -b BUNDLE ID: create + start + wait + delete, as a whole"),
    Figure("create", "create", "ENGINE create -b BUNDLE ID, alone"),
    Figure("start", "start", "ENGINE start ID of a created container, alone"),
    Figure("state", "state", "ENGINE state ID of a created container, alone"),
    Figure("delete", "delete", "ENGINE delete ID of a stopped container, alone"),
    Figure("exec", "exec /bin/true", "ENGINE exec ID /bin/true into a running sleep container"),
    Figure("run_seccomp", "run + seccomp", "run /bin/true with podman's seccomp profile (linux.seccomp)"),
    Figure("run_userns", "run + userns", "run /bin/true in a user namespace (0 -> 100000, 65536 ids)"),
]
THROUGHPUT = [
    Figure("tput_seq", "throughput, sequential", "N runs of /bin/true one after the other", "/s", True),
    Figure("tput_par2", "throughput, 2 parallel", "N runs of /bin/true, 2 at a time", "/s", True),
]
# Peak RSS panels of the chart (the markdown table has every figure): (title, latency figure).
RSS_CHART = [("peak RSS: run", "run"), ("peak RSS: create", "create"), ("peak RSS: state", "state"),
             ("peak RSS: exec", "exec")]
# Checks that an engine really did what a figure claims to measure, run once per engine in setup:
# figure -> (bundle, shell test run inside the container). A failed check marks the figure with a †.
CHECKS = {
    "run": ("true", 'test "$$" = 1 && test "$(hostname)" = busybox && grep -qE "^[^ ]+ / [^ ]+ ro[, ]" /proc/mounts'),
    "run_seccomp": ("seccomp", "grep -q '^Seccomp:[[:space:]]*2' /proc/self/status"),
    "run_userns": ("userns", "grep -q '100000' /proc/self/uid_map"),
}
CHECK_TEXT = {
    "run": "the process was not pid 1 with hostname busybox on a read-only root",
    "run_seccomp": "no seccomp filter was in force in the container (Seccomp: in /proc/self/status not 2)",
    "run_userns": "the container was not in the 0 -> 100000 user namespace (/proc/self/uid_map)",
}
# Which latency figures each measuring step fills.
STEPS = {
    "run": ["run"],
    "lifecycle": ["create", "state", "start", "delete"],
    "exec": ["exec"],
    "run_seccomp": ["run_seccomp"],
    "run_userns": ["run_userns"],
}


# --- running commands -------------------------------------------------------------------------------


class HarnessError(Exception):
    """A fault of the harness or the machine (not of an engine): exit non-zero."""


class CmdTimeout(Exception):
    pass


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def _on_term(signum, frame):
    raise KeyboardInterrupt()


@dataclass
class Result:
    ns: int
    code: int
    maxrss_kb: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0


class Runner:
    """posix_spawn + wait4: the cheapest spawn Python has, and the child's own rusage (ru_maxrss).

    stdin is /dev/null, stdout /dev/null (or a capture file), stderr a capture file. The time measured
    is from just before posix_spawn to just after wait4 returns: the same spawn overhead for every
    engine, reported on its own as the /bin/true spawn baseline.
    """

    def __init__(self, workdir: Path, timeout: float, rss_helper: str | None):
        self.timeout = timeout
        # In rss_mode every command runs under benches/rusage.c, which reports its true peak RSS (the
        # harness's own wait4 cannot: a child's ru_maxrss starts at the spawning Python's RSS).
        self.rss_helper = rss_helper
        self.rss_mode = False
        self.rss_file = str(workdir / "cmd.rusage")
        self.devnull = os.open("/dev/null", os.O_RDWR)
        self.out_fd = os.open(workdir / "cmd.out", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.err_fd = os.open(workdir / "cmd.err", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.children: set[int] = set()
        signal.signal(signal.SIGALRM, _on_alarm)

    @staticmethod
    def _reset(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)

    @staticmethod
    def _read(fd: int, limit: int = 1 << 20) -> str:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, limit).decode(errors="replace")

    def run(self, argv: list[str], capture: bool = False, timeout: float | None = None,
            env: dict | None = None) -> Result:
        self._reset(self.err_fd)
        if capture:
            self._reset(self.out_fd)
        wrapped = self.rss_mode and self.rss_helper
        if wrapped:
            argv = [self.rss_helper, self.rss_file] + argv
            try:
                os.unlink(self.rss_file)
            except FileNotFoundError:
                pass
        actions = [
            (os.POSIX_SPAWN_DUP2, self.devnull, 0),
            (os.POSIX_SPAWN_DUP2, self.out_fd if capture else self.devnull, 1),
            (os.POSIX_SPAWN_DUP2, self.err_fd, 2),
        ]
        pid = None
        signal.setitimer(signal.ITIMER_REAL, timeout or self.timeout)
        try:
            t0 = time.perf_counter_ns()
            pid = os.posix_spawn(argv[0], argv, env or ENV, file_actions=actions)
            self.children.add(pid)
            _, status, ru = os.wait4(pid, 0)
            t1 = time.perf_counter_ns()
            self.children.discard(pid)
        except _Alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._kill(pid)
            raise CmdTimeout(f"timed out after {timeout or self.timeout:.0f} s: {' '.join(argv)}") from None
        except BaseException:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._kill(pid)
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        maxrss = ru.ru_maxrss
        if wrapped:
            try:
                maxrss = int(Path(self.rss_file).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                maxrss = -1
        return Result(t1 - t0, os.waitstatus_to_exitcode(status), maxrss,
                      self._read(self.out_fd) if capture else "", self._read(self.err_fd, 8192))

    def spawn_many(self, argvs: list[list[str]], parallel: int, timeout: float) -> tuple[int, int, str]:
        """Runs every argv, `parallel` at a time. Returns (wall ns, failures, first error)."""
        self._reset(self.err_fd)
        actions = [(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, self.devnull, 1),
                   (os.POSIX_SPAWN_DUP2, self.err_fd, 2)]
        todo = list(argvs)
        running: set[int] = set()
        failures = 0
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            t0 = time.perf_counter_ns()
            while todo or running:
                while todo and len(running) < parallel:
                    argv = todo.pop(0)
                    pid = os.posix_spawn(argv[0], argv, ENV, file_actions=actions)
                    running.add(pid)
                    self.children.add(pid)
                pid, status, _ = os.wait4(-1, 0)
                if pid in running:
                    running.discard(pid)
                    self.children.discard(pid)
                    if os.waitstatus_to_exitcode(status) != 0:
                        failures += 1
            t1 = time.perf_counter_ns()
        except _Alarm:
            for pid in list(running):
                self._kill(pid)
            raise CmdTimeout(f"throughput run timed out after {timeout:.0f} s") from None
        except BaseException:
            for pid in list(running):
                self._kill(pid)
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return t1 - t0, failures, self._read(self.err_fd, 4096) if failures else ""

    def _kill(self, pid: int | None) -> None:
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self.children.discard(pid)

    def kill_all(self) -> None:
        for pid in list(self.children):
            self._kill(pid)


# --- engines ----------------------------------------------------------------------------------------


@dataclass
class Engine:
    name: str
    path: str
    root: str = ""
    version: str = ""
    skipped: str = ""  # why the engine is not measured at all
    disabled: dict = field(default_factory=dict)  # step -> why the engine is not measured there
    live: set = field(default_factory=set)  # container ids that may exist
    checks: dict = field(default_factory=dict)  # figure -> True/False (CHECKS)
    fail_streak: dict = field(default_factory=dict)

    @property
    def is_floor(self) -> bool:
        return self.name == FLOOR

    def base(self) -> list[str]:
        return [self.path, "--root", self.root]

    def supports(self, step: str) -> bool:
        if self.is_floor:
            return step in ("run", "run_userns")
        return True


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.workdir)
        self.repo = Path(args.repo)
        self.runner = Runner(self.work, args.timeout, args.rusage)
        self.rng = random.Random(args.seed)
        # In every container id, so that what this run leaves (e.g. cgroups) can be found and only that.
        self.token = f"lb-{random.SystemRandom().randrange(1 << 24):06x}"
        self.seq = 0
        self.samples: dict[str, dict[str, list[int]]] = {}
        self.rss: dict[str, dict[str, list[int]]] = {}
        self.failures: dict[str, dict[str, int]] = {}
        self.errors: dict[str, dict[str, str]] = {}
        self.tput: dict[str, dict[str, dict]] = {}
        self.instructions: dict[str, dict] = {}
        self.notes: list[str] = []
        self.quiet = False
        self.exec_targets: dict[str, str] = {}
        self.bundles: dict[str, Path] = {}
        self.engines: list[Engine] = []

    # -- logging
    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def next_id(self, eng: Engine, step: str) -> str:
        self.seq += 1
        return f"{self.token}-{eng.name[:5]}-{step[:6]}-{self.seq}"

    # -- setup
    def make_bundles(self) -> None:
        b = self.work / "bundles"
        b.mkdir()
        true_dir = b / "true"
        res = subprocess.run([str(self.repo / "scripts/mkbundle"), str(true_dir), "--", "/bin/true"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise HarnessError(f"scripts/mkbundle failed: {res.stderr.strip()}")
        self.bundles["true"] = true_dir
        self.rootfs = true_dir / "rootfs"
        base = json.loads((true_dir / "config.json").read_text())
        base["root"]["path"] = str(self.rootfs)  # variants share the one rootfs (read-only)

        def variant(name: str, cfg: dict) -> None:
            d = b / name
            d.mkdir()
            (d / "config.json").write_text(json.dumps(cfg, indent=1))
            self.bundles[name] = d

        sleep = json.loads(json.dumps(base))
        sleep["process"]["args"] = ["/bin/sleep", "3600"]
        variant("sleep", sleep)

        userns = json.loads(json.dumps(base))
        userns["linux"]["namespaces"].append({"type": "user"})
        userns["linux"]["uidMappings"] = USERNS_MAP
        userns["linux"]["gidMappings"] = USERNS_MAP
        variant("userns", userns)

        self.base_config = base

        if SECCOMP_PROFILE.exists():
            profile = json.loads(SECCOMP_PROFILE.read_text())
            seccomp = json.loads(json.dumps(base))
            seccomp["linux"]["seccomp"] = convert_seccomp(profile, base["process"]["capabilities"]["bounding"])
            variant("seccomp", seccomp)
            n = sum(len(s["names"]) for s in seccomp["linux"]["seccomp"]["syscalls"])
            self.seccomp_info = {"source": str(SECCOMP_PROFILE), "rules": len(seccomp["linux"]["seccomp"]["syscalls"]),
                                 "syscall_names": n}
        else:
            self.seccomp_info = {"source": None}
            self.notes.append(f"run + seccomp skipped: {SECCOMP_PROFILE} missing "
                              "(apt-get install golang-github-containers-common)")

        for fig, (bundle, test) in CHECKS.items():
            if bundle in self.bundles:
                src = self.bundles[bundle] / "config.json"
                cfg = json.loads(src.read_text())
                cfg["root"]["path"] = str(self.rootfs)
                cfg["process"]["args"] = ["/bin/sh", "-c", test]
                variant(f"check-{fig}", cfg)

    def setup_engines(self) -> None:
        wanted = [e.strip() for e in self.args.engines.split(",") if e.strip()]
        for name in wanted:
            if name not in ENGINE_ORDER:
                raise HarnessError(f"unknown engine {name!r} (known: {', '.join(ENGINE_ORDER)})")
        for name in ENGINE_ORDER:
            if name not in wanted:
                continue
            if name == LXCRI:
                path = str(Path(self.args.lxcri).resolve()) if self.args.lxcri else ""
            elif name == FLOOR:
                path = self.args.floor
            else:
                path = shutil.which(name, path=ENV["PATH"]) or ""
            eng = Engine(name, path)
            if not path or not os.access(path, os.X_OK):
                eng.skipped = "not built" if name == LXCRI else "not installed"
            else:
                if not eng.is_floor:
                    eng.root = str(self.work / "roots" / name)
                    os.makedirs(eng.root, mode=0o700)
                eng.version = self.version_of(eng)
                if name == LXCRI:
                    st = os.stat(path)
                    eng.version += (f" (binary sha256:{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]}, "
                                    f"built {dt.datetime.fromtimestamp(st.st_mtime).isoformat(timespec='minutes')})")
                self.smoke(eng)
                if not eng.skipped:
                    self.run_checks(eng)
            self.engines.append(eng)
        for eng in self.engines:
            if eng.skipped:
                print(f"{eng.name}: skipped ({eng.skipped})", flush=True)
                self.notes.append(f"{eng.name}: skipped ({eng.skipped})")
            else:
                print(f"{eng.name}: {eng.version}  [{eng.path}]", flush=True)
        if not self.active():
            raise HarnessError("no engine left to measure")

    def version_of(self, eng: Engine) -> str:
        if eng.is_floor:
            src = self.repo / "benches/floor.c"
            digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
            cc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
            return f"floor.c sha256:{digest}, gcc {cc} -O2"
        try:
            r = self.runner.run([eng.path, "--version"], capture=True, timeout=10)
            lines = [ln.strip() for ln in (r.stdout or r.stderr).splitlines() if ln.strip()]
            return "; ".join(lines[:2]) if lines else f"unknown (--version exited {r.code})"
        except CmdTimeout:
            return "unknown (--version timed out)"

    def smoke(self, eng: Engine) -> None:
        """One run of /bin/true; an engine that cannot do that is skipped, with the reason printed."""
        self.quiet = True
        try:
            self.measure_run(eng, "run", record=False)
        except CmdTimeout as e:
            eng.skipped = f"smoke run failed: {e}"
            return
        finally:
            self.quiet = False
        if "run" in eng.disabled:
            eng.skipped = f"smoke run failed: {eng.disabled.pop('run')}"
            # The reason is the engine's note; its failed smoke run is no figure's failure.
            self.failures.get("run", {}).pop(eng.name, None)
            self.errors.get("run", {}).pop(eng.name, None)

    def run_checks(self, eng: Engine) -> None:
        """Is what we time what we think? (E.g. a runtime that ignores linux.seccomp would look fast.)"""
        for fig, (bundle, test) in CHECKS.items():
            if f"check-{fig}" not in self.bundles:
                continue
            if eng.is_floor:
                if fig == "run_seccomp":
                    continue
                argv = [eng.path] + (["-U"] if fig == "run_userns" else []) + [str(self.rootfs), "/bin/sh", "-c", test]
                if fig == "run":  # the floor leaves / writable: it only promises pid 1 and the hostname
                    argv[-1] = test.split(" && grep")[0]
            else:
                cid = self.next_id(eng, "check")
                eng.live.add(cid)
                argv = eng.base() + ["run", "-b", str(self.bundles[f"check-{fig}"]), cid]
            try:
                res = self.runner.run(argv)
            except CmdTimeout:
                res = None
            eng.checks[fig] = bool(res and res.ok)
            if not eng.is_floor:
                if res and res.ok:
                    eng.live.discard(cid)
                else:
                    self.cleanup_container(eng, cid)
            if not eng.checks[fig]:
                print(f"{eng.name}: check failed for {fig}: {CHECK_TEXT[fig]}", flush=True)

    def active(self) -> list[Engine]:
        return [e for e in self.engines if not e.skipped]

    # -- bookkeeping
    def record(self, fig: str, eng: str, res: Result) -> None:
        if self.runner.rss_mode:
            if res.maxrss_kb > 0:
                self.rss.setdefault(fig, {}).setdefault(eng, []).append(res.maxrss_kb)
        else:
            self.samples.setdefault(fig, {}).setdefault(eng, []).append(res.ns)

    def fail(self, eng: Engine, step: str, fig: str, msg: str, warmup: bool) -> None:
        self.failures.setdefault(fig, {}).setdefault(eng.name, 0)
        self.failures[fig][eng.name] += 1
        self.errors.setdefault(fig, {}).setdefault(eng.name, msg)
        streak = eng.fail_streak.get(step, 0) + 1
        eng.fail_streak[step] = streak
        if warmup or streak >= 3:
            if step not in eng.disabled:
                eng.disabled[step] = msg
                if not self.quiet:
                    self.log(f"  {eng.name}: {step} disabled: {msg}")

    def ok(self, eng: Engine, step: str) -> None:
        eng.fail_streak[step] = 0

    @staticmethod
    def describe(res: Result) -> str:
        err = " ".join(res.stderr.strip().split())
        return f"exit {res.code}" + (f": {err[-300:]}" if err else "")

    def cleanup_container(self, eng: Engine, cid: str) -> None:
        if eng.is_floor:
            return
        try:
            self.runner.run(eng.base() + ["delete", "--force", cid], timeout=30)
        except CmdTimeout:
            self.log(f"  {eng.name}: delete --force {cid} timed out")
        eng.live.discard(cid)

    # -- measuring steps
    def measure_run(self, eng: Engine, step: str, record: bool, warmup: bool = False) -> None:
        bundle = {"run": "true", "run_seccomp": "seccomp", "run_userns": "userns"}[step]
        if eng.is_floor:
            argv = [eng.path] + (["-U"] if step == "run_userns" else []) + [str(self.rootfs), "/bin/true"]
            cid = None
        else:
            cid = self.next_id(eng, step)
            eng.live.add(cid)
            argv = eng.base() + ["run", "-b", str(self.bundles[bundle]), cid]
        res = self.runner.run(argv)
        if res.ok:
            if cid:
                eng.live.discard(cid)
            self.ok(eng, step)
            if record:
                self.record(step, eng.name, res)
        else:
            self.fail(eng, step, step, self.describe(res), warmup or not record)
            if cid:
                self.cleanup_container(eng, cid)

    def state_of(self, eng: Engine, cid: str) -> str | None:
        res = self.runner.run(eng.base() + ["state", cid], capture=True)
        if not res.ok:
            return None
        try:
            return json.loads(res.stdout).get("status")
        except (ValueError, AttributeError):
            return None

    def measure_lifecycle(self, eng: Engine, record: bool, warmup: bool = False) -> None:
        step = "lifecycle"
        cid = self.next_id(eng, "lc")
        eng.live.add(cid)
        got: list[tuple[str, Result]] = []
        try:
            res = self.runner.run(eng.base() + ["create", "-b", str(self.bundles["true"]), cid])
            if not res.ok:
                return self.fail(eng, step, "create", self.describe(res), warmup)
            got.append(("create", res))
            res = self.runner.run(eng.base() + ["state", cid], capture=True)
            if not res.ok:
                return self.fail(eng, step, "state", self.describe(res), warmup)
            try:
                status = json.loads(res.stdout).get("status")
            except (ValueError, AttributeError):
                status = None
            if status != "created":
                return self.fail(eng, step, "state", f"state says status {status!r}, want 'created'", warmup)
            got.append(("state", res))
            res = self.runner.run(eng.base() + ["start", cid])
            if not res.ok:
                return self.fail(eng, step, "start", self.describe(res), warmup)
            got.append(("start", res))
            # /bin/true exits at once; wait (untimed) until the engine says so.
            deadline = time.monotonic() + 10
            while self.state_of(eng, cid) != "stopped":
                if time.monotonic() > deadline:
                    return self.fail(eng, step, "delete", "container never reached 'stopped' after start", warmup)
            res = self.runner.run(eng.base() + ["delete", cid])
            if not res.ok:
                return self.fail(eng, step, "delete", self.describe(res), warmup)
            eng.live.discard(cid)
            got.append(("delete", res))
            self.ok(eng, step)
            if record:
                for fig, r in got:
                    self.record(fig, eng.name, r)
        finally:
            if cid in eng.live:
                self.cleanup_container(eng, cid)

    def exec_target(self, eng: Engine) -> str | None:
        if eng.name in self.exec_targets:
            return self.exec_targets[eng.name]
        cid = f"{self.token}-{eng.name[:5]}-exec-target"
        eng.live.add(cid)
        for argv in (eng.base() + ["create", "-b", str(self.bundles["sleep"]), cid], eng.base() + ["start", cid]):
            res = self.runner.run(argv)
            if not res.ok:
                self.fail(eng, "exec", "exec", f"exec target {argv[3]}: {self.describe(res)}", True)
                self.cleanup_container(eng, cid)
                return None
        self.exec_targets[eng.name] = cid
        return cid

    def measure_exec(self, eng: Engine, record: bool, warmup: bool = False) -> None:
        cid = self.exec_target(eng)
        if cid is None:
            return
        res = self.runner.run(eng.base() + ["exec", cid, "/bin/true"])
        if res.ok:
            self.ok(eng, "exec")
            if record:
                self.record("exec", eng.name, res)
        else:
            self.fail(eng, "exec", "exec", self.describe(res), warmup)

    def measure(self, step: str, eng: Engine, record: bool, warmup: bool) -> None:
        try:
            if step in ("run", "run_seccomp", "run_userns"):
                self.measure_run(eng, step, record, warmup)
            elif step == "lifecycle":
                self.measure_lifecycle(eng, record, warmup)
            elif step == "exec":
                self.measure_exec(eng, record, warmup)
        except CmdTimeout as e:
            # A hung command is the engine's failure, not the harness's: note it, stop that step.
            self.fail(eng, step, STEPS[step][0], str(e), True)

    # -- the main loop
    def steps(self) -> list[str]:
        steps = list(STEPS)
        if "seccomp" not in self.bundles:
            steps.remove("run_seccomp")
        return steps

    def latency(self) -> None:
        a = self.args
        total = a.warmup + a.iterations
        t_start = time.monotonic()
        for i in range(total):
            warm = i < a.warmup
            record = not warm
            # The spawn baseline: posix_spawn + wait4 of /bin/true, the harness's own share of every figure.
            res = self.runner.run(["/bin/true"])
            if record:
                self.record("spawn", SPAWN, res)
            for step in self.steps():
                engines = [e for e in self.active() if e.supports(step) and step not in e.disabled]
                self.rng.shuffle(engines)  # interleaved: the noise of this moment hits every engine alike
                for eng in engines:
                    self.measure(step, eng, record, warm)
            if (i + 1) % max(1, total // 10) == 0 or i + 1 == total:
                el = time.monotonic() - t_start
                self.log(f"  latency: iteration {i + 1}/{total}{' (warm-up)' if warm else ''}, {el:.0f} s")

    def peak_rss(self) -> None:
        """Every step again, a few times, each command under the rusage helper; not timed."""
        reps = self.args.rss_reps
        if reps <= 0 or not self.runner.rss_helper:
            return
        self.runner.rss_mode = True
        try:
            for _ in range(reps):
                self.record("spawn", SPAWN, self.runner.run(["/bin/true"]))
                for step in self.steps():
                    engines = [e for e in self.active() if e.supports(step) and step not in e.disabled]
                    self.rng.shuffle(engines)
                    for eng in engines:
                        self.measure(step, eng, True, False)
        finally:
            self.runner.rss_mode = False
            for eng in self.active():
                cid = self.exec_targets.pop(eng.name, None)
                if cid:
                    self.cleanup_container(eng, cid)

    def throughput(self) -> None:
        n = self.args.throughput
        if n <= 0:
            return
        for fig, par in (("tput_seq", 1), ("tput_par2", 2)):
            engines = [e for e in self.active() if "run" not in e.disabled]
            self.rng.shuffle(engines)
            for eng in engines:
                argvs, ids = [], []
                for _ in range(n):
                    if eng.is_floor:
                        argvs.append([eng.path, str(self.rootfs), "/bin/true"])
                    else:
                        cid = self.next_id(eng, "tp")
                        ids.append(cid)
                        eng.live.add(cid)
                        argvs.append(eng.base() + ["run", "-b", str(self.bundles["true"]), cid])
                try:
                    ns, failures, err = self.runner.spawn_many(argvs, par, timeout=max(60.0, n * 5.0))
                except CmdTimeout as e:
                    self.tput.setdefault(fig, {})[eng.name] = {"error": str(e)}
                    ns, failures, err = None, n, str(e)
                if failures:
                    # A failed run may leave its container behind: make sure it is gone.
                    for cid in ids:
                        self.cleanup_container(eng, cid)
                else:
                    eng.live.difference_update(ids)
                if ns is not None:
                    per_s = (n - failures) / (ns / 1e9) if ns else 0.0
                    self.tput.setdefault(fig, {})[eng.name] = {
                        "n": n, "parallel": par, "wall_ns": ns, "failures": failures,
                        "per_second": per_s, "ms_per_container": ns / 1e6 / n,
                        **({"error": " ".join(err.split())[-300:]} if failures else {}),
                    }
                self.log(f"  {fig}: {eng.name}: " + (f"{n} runs in {ns / 1e9:.2f} s" if ns else "failed")
                         + (f", {failures} failed" if failures else ""))

    def cleanup(self) -> None:
        self.runner.kill_all()
        for eng in self.engines:
            if eng.skipped or eng.is_floor:
                continue
            for cid in sorted(eng.live):
                self.cleanup_container(eng, cid)
        self.sweep_cgroups()

    def sweep_cgroups(self) -> None:
        """Removes cgroups named after this run's containers that an engine left behind (a failed
        create under valgrind, a killed run...): kills what is still in them, then rmdir, deepest first."""
        found = []
        for top in cgroup_mounts():
            for dirpath, dirnames, _ in os.walk(top):
                depth = Path(dirpath).relative_to(top).parts
                if len(depth) >= 4:
                    dirnames[:] = []
                    continue
                found += [Path(dirpath) / d for d in dirnames if self.token in d]
                dirnames[:] = [d for d in dirnames if self.token not in d]  # rglob below covers those
        for cg in found:
            for sub in sorted((p for p in [cg, *cg.rglob("*")] if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    for pid in (sub / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except (ProcessLookupError, ValueError):
                            pass
                except OSError:
                    pass
        removed = 0
        for cg in found:
            for sub in sorted((p for p in [cg, *cg.rglob("*")] if p.is_dir()), key=lambda p: -len(p.parts)):
                for _ in range(20):
                    try:
                        sub.rmdir()
                        removed += 1
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)  # killed processes take a moment to leave
                else:
                    self.log(f"  could not remove {sub}")
        if found:
            self.log(f"  removed {removed} cgroup dir(s) left behind by engines ({len(found)} found)")

    # -- instruction counts
    def count_instructions(self) -> None:
        tool = instruction_tool()
        self.instructions["tool"] = tool
        if tool is None:
            self.notes.append("--instructions: neither perf (instructions counter) nor valgrind usable")
            return
        self.log(f"  instructions: counting with {tool}")
        vg = self.work / "valgrind"
        vg.mkdir(exist_ok=True)
        crun_ro = None
        for eng in self.active():
            per = self.instructions.setdefault(eng.name, {})
            if eng.is_floor:
                argv = [eng.path, str(self.rootfs), "/bin/true"]
                per["run"] = self._count(tool, argv, vg / "floor-run", children=False)
                per["run"]["label"] = "floor's parent process only (valgrind cannot follow the execve after pivot_root)"
                continue
            env = dict(ENV)
            path = eng.path
            label_extra = ""
            if tool == "valgrind":
                env["GODEBUG"] = "asyncpreemptoff=1"  # callgrind asserts on Go's preemption signals
                if eng.name == "crun":
                    # crun re-executes itself from a sealed memfd, which valgrind cannot follow; from a
                    # read-only bind mount with _LIBCONTAINER_CLONED_BINARY=1 it considers itself cloned.
                    if crun_ro is None:
                        crun_ro = self.work / "crun-ro"
                        crun_ro.touch()
                        ok = subprocess.run(["mount", "--bind", eng.path, str(crun_ro)]).returncode == 0 and \
                            subprocess.run(["mount", "-o", "remount,bind,ro", str(crun_ro)]).returncode == 0
                        if not ok:
                            crun_ro = False
                    if crun_ro:
                        path = str(crun_ro)
                        env["_LIBCONTAINER_CLONED_BINARY"] = "1"
                        label_extra = "; without crun's self-copy to a memfd (read-only bind mount)"
            base = [path, "--root", eng.root]
            # state and delete of a created container, create alone, run as a whole.
            for what in ("state", "create", "delete", "run"):
                cid = self.next_id(eng, "ins")
                eng.live.add(cid)
                if what in ("state", "delete"):
                    r = self.runner.run(eng.base() + ["create", "-b", str(self.bundles["true"]), cid])
                    if not r.ok:
                        per[what] = {"error": f"setup create: {self.describe(r)}"}
                        self.cleanup_container(eng, cid)
                        continue
                argv = {
                    "state": base + ["state", cid],
                    "create": base + ["create", "-b", str(self.bundles["true"]), cid],
                    "delete": base + ["delete", cid],
                    "run": base + ["run", "-b", str(self.bundles["true"]), cid],
                }[what]
                per[what] = self._count(tool, argv, vg / f"{eng.name}-{what}", env=env)
                if label_extra and "label" in per[what]:
                    per[what]["label"] += label_extra
                self.cleanup_container(eng, cid)
            self.log(f"  instructions: {eng.name}: " + ", ".join(
                f"{k} {v['instructions'] / 1e6:.2f} M" if "instructions" in v else f"{k} n/a"
                for k, v in per.items()))

    def _count(self, tool: str, argv: list[str], out: Path, children: bool = True, env: dict | None = None) -> dict:
        if tool == "perf":
            cmd = ["/usr/bin/perf", "stat", "-x,", "-e", "instructions:u", "-o", str(out) + ".perf", "--"] + argv
            try:
                r = self.runner.run(cmd, timeout=120, env=env)
            except CmdTimeout as e:
                return {"error": str(e)}
            text = Path(str(out) + ".perf").read_text() if Path(str(out) + ".perf").exists() else ""
            m = re.search(r"^(\d+),[^,]*,instructions", text, re.M)
            if r.code != 0 or not m:
                return {"error": self.describe(r)}
            return {"instructions": int(m.group(1)), "label": "perf stat -e instructions:u, all children"}
        out.mkdir(exist_ok=True)
        cmd = ["/usr/bin/valgrind", "--tool=callgrind", f"--trace-children={'yes' if children else 'no'}",
               f"--callgrind-out-file={out}/cg.%p", "--log-file=" + str(out / "log.%p")] + argv
        try:
            r = self.runner.run(cmd, timeout=180, env=env)
        except CmdTimeout as e:
            return {"error": str(e)}
        total, procs = 0, 0
        for f in sorted(out.glob("cg.*")):
            m = re.search(r"^summary: (\d+)", f.read_text(errors="replace"), re.M)
            if m:
                total += int(m.group(1))
                procs += 1
        if r.code != 0 or procs == 0:
            logs = " ".join(p.read_text(errors="replace") for p in out.glob("log.*"))
            hint = ""
            for pat in ("Unsupported clone\\(\\) flags[^\n]*", "unhandled [^\n]*syscall: \\d+", "Assertion[^\n]*",
                        "EXEC FAILED[^\n]*", "[^\n]*Operation not permitted[^\n]*"):
                m = re.search(pat, logs + "\n" + r.stderr)
                if m:
                    hint = m.group(0).strip()
                    break
            errs = [ln for ln in r.stderr.splitlines() if ln.strip()]
            if errs and errs[-1].strip() not in hint:
                hint = (hint + "; " if hint else "") + errs[-1].strip()
            return {"error": f"exit {r.code} under valgrind" + (f": {hint[:200]}" if hint else ""),
                    **({"partial_instructions": total, "processes": procs} if procs else {})}
        return {"instructions": total, "processes": procs,
                "label": f"callgrind, {procs} process(es) traced" + ("" if children else ", children not followed")}

    # -- run everything
    def run(self) -> dict:
        a = self.args
        started = dt.datetime.now()
        self.load_start = Path("/proc/loadavg").read_text().split()[:3]
        self.make_bundles()
        self.setup_engines()
        self.log(f"latency: {a.iterations} iterations + {a.warmup} warm-up, engines interleaved "
                 f"(seed {a.seed}), steps: {', '.join(self.steps())}")
        self.latency()
        self.log(f"peak RSS: {a.rss_reps} more rounds of every step under the rusage helper")
        self.peak_rss()
        self.log(f"throughput: {a.throughput} containers per engine, sequential and 2 in parallel")
        self.throughput()
        if a.instructions:
            self.log("instructions (valgrind/perf):")
            self.count_instructions()
        return self.report(started)

    def report(self, started: dt.datetime) -> dict:
        a = self.args
        figs = {}
        for fig in [Figure("spawn", "spawn /bin/true", "posix_spawn + wait4 of /bin/true: harness overhead")] + LATENCY:
            per = {}
            names = [SPAWN] if fig.key == "spawn" else [e.name for e in self.engines]
            for name in names:
                eng = next((e for e in self.engines if e.name == name), None)
                xs = self.samples.get(fig.key, {}).get(name, [])
                entry: dict = {}
                if eng is not None and eng.skipped:
                    entry["skipped"] = eng.skipped
                elif eng is not None and not eng.supports(next(s for s, fs in STEPS.items() if fig.key in fs)):
                    entry["not_applicable"] = True
                if xs:
                    entry["stats_ns"] = stats(xs)
                    entry["samples_ns"] = xs
                rs = self.rss.get(fig.key, {}).get(name, [])
                if rs:
                    entry["maxrss_kb"] = stats(rs)
                if self.failures.get(fig.key, {}).get(name):
                    entry["failures"] = self.failures[fig.key][name]
                    entry["error"] = self.errors[fig.key][name]
                per[name] = entry
            figs[fig.key] = {"title": fig.title, "what": fig.what, "unit": fig.unit, "engines": per}
        doc = {
            "schema": "proxmox-lxcri-bench/1",
            "date": started.astimezone().isoformat(timespec="seconds"),
            "duration_s": round((dt.datetime.now() - started).total_seconds(), 1),
            "machine": {**machine_info(), "loadavg_start": self.load_start},
            "repo": git_info(self.repo),
            "method": {
                "iterations": a.iterations, "warmup": a.warmup, "throughput_n": a.throughput,
                "seed": a.seed, "quick": a.quick, "timeout_s": a.timeout,
                "timing": "time.perf_counter_ns around os.posix_spawn + os.wait4 of the engine's CLI",
                "interleaving": "per iteration, per step, engines in a fresh random order",
                "rss": "ru_maxrss from wait4 in benches/rusage.c (static helper) around the command, in "
                       f"{a.rss_reps} separate untimed rounds; includes the children the command reaped",
                "rss_rounds": a.rss_reps,
                "environment": "private mount namespace, /sys/fs/cgroup/unified unmounted, state and bundles on tmpfs",
                "bundle": "scripts/mkbundle busybox bundle, process.args [/bin/true]",
                "seccomp": self.seccomp_info,
                "userns": {"uidMappings": USERNS_MAP, "gidMappings": USERNS_MAP},
            },
            "engines": {e.name: {"path": e.path, "version": e.version, "root": e.root, "checks": e.checks,
                                 **({"skipped": e.skipped} if e.skipped else {}),
                                 **({"disabled": e.disabled} if e.disabled else {})} for e in self.engines},
            "cli": cli_calls(),
            "figures": figs,
            "throughput": self.tput,
            "ratios": ratios(figs, [e.name for e in self.engines if not e.skipped]),
            "instructions": self.instructions,
            "notes": self.notes,
        }
        return doc


# --- helpers ----------------------------------------------------------------------------------------


def convert_seccomp(profile: dict, caps: list[str]) -> dict:
    """podman's containers/common seccomp.json -> OCI linux.seccomp for x86_64 and the given caps.

    That file is docker's format: archMap instead of architectures, and per rule includes/excludes by
    arch, capability and kernel version, plus comment and errno name fields OCI does not have. A rule
    applies when all its included caps are held and none of its excluded ones (docker's semantics).
    """
    arch_names = {"amd64", "x86_64", "x32", "x86", "386"}
    kernel = tuple(int(x) for x in re.findall(r"\d+", platform.release())[:2])
    out: dict = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    for m in profile.get("archMap") or []:
        if m["architecture"] == "SCMP_ARCH_X86_64":
            out["architectures"] = [m["architecture"]] + list(m.get("subArchitectures") or [])
    if "architectures" not in out and profile.get("architectures"):
        out["architectures"] = profile["architectures"]
    rules = []
    for s in profile.get("syscalls", []):
        inc, exc = s.get("includes") or {}, s.get("excludes") or {}
        if inc.get("arches") and not arch_names & set(inc["arches"]):
            continue
        if inc.get("caps") and not all(c in caps for c in inc["caps"]):
            continue
        if inc.get("minKernel"):
            want = tuple(int(x) for x in re.findall(r"\d+", inc["minKernel"])[:2])
            if kernel < want:
                continue
        if exc.get("arches") and arch_names & set(exc["arches"]):
            continue
        if exc.get("caps") and any(c in caps for c in exc["caps"]):
            continue
        names = s.get("names") or ([s["name"]] if s.get("name") else [])
        rule: dict = {"names": names, "action": s["action"]}
        if s.get("errnoRet") is not None:
            rule["errnoRet"] = s["errnoRet"]
        if s.get("args"):
            rule["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a} for a in s["args"]]
        rules.append(rule)
    out["syscalls"] = rules
    return out


def stats(xs: list[int | float]) -> dict:
    s = sorted(xs)
    n = len(s)

    def q(p: float) -> float:
        if n == 1:
            return float(s[0])
        idx = (n - 1) * p
        lo, hi = math.floor(idx), math.ceil(idx)
        return s[lo] + (s[hi] - s[lo]) * (idx - lo)

    med = q(0.5)
    dev = sorted(abs(x - med) for x in s)
    mad = dev[n // 2] if n % 2 else (dev[n // 2 - 1] + dev[n // 2]) / 2
    return {"n": n, "median": med, "p10": q(0.10), "p90": q(0.90), "min": s[0], "max": s[-1],
            "mean": sum(s) / n, "mad": mad}


def ratios(figs: dict, names: list[str]) -> dict:
    out: dict = {}
    for key, fig in figs.items():
        if key == "spawn":
            continue
        med = {n: e["stats_ns"]["median"] for n, e in fig["engines"].items() if "stats_ns" in e and n in names}
        r = {}
        for a in med:
            for b in med:
                if a != b and med[b]:
                    r[f"{a}/{b}"] = med[a] / med[b]
        if r:
            out[key] = r
    return out


def cli_calls() -> list[str]:
    return [
        "ENGINE --version",
        "ENGINE --root ROOT run -b BUNDLE ID",
        "ENGINE --root ROOT create -b BUNDLE ID",
        "ENGINE --root ROOT state ID   (stdout: JSON with \"status\": created|running|stopped)",
        "ENGINE --root ROOT start ID",
        "ENGINE --root ROOT delete ID",
        "ENGINE --root ROOT delete --force ID",
        "ENGINE --root ROOT exec ID /bin/true",
    ]


def git_info(repo: Path) -> dict:
    """The commit the measured binary was presumably built from (read-only git calls)."""
    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    if not shutil.which("git"):
        return {}
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def cgroup_mounts() -> list[Path]:
    """Mount points of cgroup (v1) and cgroup2 file systems in this mount namespace."""
    tops = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            pre, _, post = line.partition(" - ")
            if post.split(" ", 1)[0] in ("cgroup", "cgroup2"):
                mp = pre.split()[4].replace("\\040", " ")
                if Path(mp) not in tops:
                    tops.append(Path(mp))
    except OSError:
        pass
    return tops


def instruction_tool() -> str | None:
    if shutil.which("perf"):
        r = subprocess.run(["perf", "stat", "-x,", "-e", "instructions:u", "/bin/true"],
                           capture_output=True, text=True)
        if r.returncode == 0 and re.search(r"^\d+,[^,]*,instructions", r.stderr, re.M):
            return "perf"
    if shutil.which("valgrind"):
        return "valgrind"
    return None


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kb = int(m.group(1)) if m else 0
    except OSError:
        pass
    os_release = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            k, _, v = line.partition("=")
            os_release[k] = v.strip('"')
    except OSError:
        pass
    cg = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1/hybrid"
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "os": os_release.get("PRETTY_NAME", ""),
        "python": platform.python_version(),
        "cgroup": cg,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
    }


# --- output: markdown, console, svg -------------------------------------------------------------------


def fmt_ms(ns: float) -> str:
    ms = ns / 1e6
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def engine_cols(doc: dict) -> list[str]:
    return [n for n in ENGINE_ORDER if n in doc["engines"]]


def cell_latency(doc: dict, fig_key: str, name: str) -> str:
    e = doc["figures"][fig_key]["engines"].get(name, {})
    if "skipped" in e:
        return "skipped"
    if e.get("not_applicable"):
        return "n/a"
    if "stats_ns" not in e:
        step = next((st for st, fs in STEPS.items() if fig_key in fs), None)
        if step in (doc["engines"].get(name, {}).get("disabled") or {}):
            return "not measured (see notes)"
        return f"failed ({e.get('failures', 0)}×)" if e.get("failures") else "—"
    s = e["stats_ns"]
    txt = f"**{fmt_ms(s['median'])}** [{fmt_ms(s['p10'])}–{fmt_ms(s['p90'])}]"
    fl = doc["figures"][fig_key]["engines"].get(FLOOR, {})
    if name != FLOOR and "stats_ns" in fl and fl["stats_ns"]["median"]:
        txt += f" ×{s['median'] / fl['stats_ns']['median']:.1f}"
    if doc["engines"].get(name, {}).get("checks", {}).get(fig_key) is False:
        txt += " †"
    if e.get("failures"):
        txt += f" ({e['failures']} failed)"
    return txt


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    cols = engine_cols(doc)
    out = [f"# proxmox-lxcri benchmark, {doc['date']}", ""]
    out.append(f"Machine: {m['cpu_model']}, {m['nproc']} cores, {m['mem_gib']} GiB, kernel {m['kernel']}, "
               f"{m['os']}, cgroup {m['cgroup']}; load average {' '.join(m.get('loadavg_start', []))} at the start, "
               f"{' '.join(m.get('loadavg_end', []))} at the end.  ")
    meth = doc["method"]
    out.append(f"Method: {meth['iterations']} iterations after {meth['warmup']} warm-up, engines interleaved in a "
               f"random order per iteration (seed {meth['seed']}); median [p10–p90]; ×N is the median over the "
               f"floor's. Run took {doc['duration_s']} s{' (--quick)' if meth['quick'] else ''}.")
    out.append("")
    out.append("| engine | version |")
    out.append("|---|---|")
    for n in cols:
        e = doc["engines"][n]
        out.append(f"| {n} | {('skipped: ' + e['skipped']) if e.get('skipped') else e['version']} |")
    sp = doc["figures"]["spawn"]["engines"][SPAWN].get("stats_ns")
    if sp:
        out += ["", f"Spawn baseline (posix_spawn + wait4 of /bin/true, included in every figure): "
                    f"{fmt_ms(sp['median'])} ms [{fmt_ms(sp['p10'])}–{fmt_ms(sp['p90'])}]."]
    out += ["", "## Latency, ms (lower is better)", "", "| figure | " + " | ".join(cols) + " |",
            "|---|" + "---|" * len(cols)]
    for f in LATENCY:
        if f.key not in doc["figures"]:
            continue
        out.append(f"| {f.title} | " + " | ".join(cell_latency(doc, f.key, n) for n in cols) + " |")
    # Peer ratios.
    peers = [n for n in cols if n != FLOOR and not doc["engines"][n].get("skipped")]
    pairs = [(a, b) for i, a in enumerate(peers) for b in peers[i + 1:]]
    if pairs:
        out += ["", "## Ratios between engines (median / median; < 1 means the first is faster)", "",
                "| figure | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |", "|---|" + "---|" * len(pairs)]
        for f in LATENCY:
            r = doc["ratios"].get(f.key, {})
            out.append(f"| {f.title} | " + " | ".join(
                f"{r[f'{a}/{b}']:.2f}" if f"{a}/{b}" in r else "—" for a, b in pairs) + " |")
    if doc["throughput"]:
        out += ["", f"## Throughput, containers per second (higher is better; N = {doc['method']['throughput_n']})",
                "", "| figure | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for f in THROUGHPUT:
            row = []
            for n in cols:
                t = doc["throughput"].get(f.key, {}).get(n)
                if doc["engines"][n].get("skipped"):
                    row.append("skipped")
                elif not t or "per_second" not in t:
                    row.append(f"failed: {t.get('error', '')[:60]}" if t else "—")
                else:
                    row.append(f"**{t['per_second']:.1f}** ({t['ms_per_container']:.1f} ms each"
                               + (f", {t['failures']} failed" if t.get("failures") else "") + ")")
            out.append(f"| {f.title} | " + " | ".join(row) + " |")
    out += ["", "## Peak RSS, MiB (median of ru_maxrss of the command and the children it reaped)", "",
            "| command | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for f in LATENCY:
        row = []
        for n in cols:
            e = doc["figures"].get(f.key, {}).get("engines", {}).get(n, {})
            row.append(f"{e['maxrss_kb']['median'] / 1024:.1f}" if "maxrss_kb" in e else
                       ("skipped" if "skipped" in e else "n/a" if e.get("not_applicable") else "—"))
        out.append(f"| {f.title} | " + " | ".join(row) + " |")
    sp_rss = doc["figures"]["spawn"]["engines"][SPAWN].get("maxrss_kb")
    if sp_rss:
        out += ["", f"(/bin/true under the same helper: {sp_rss['median'] / 1024:.1f} MiB.)"]
    ins = doc.get("instructions") or {}
    if ins.get("tool"):
        whats = ["state", "create", "delete", "run"]
        out += ["", f"## Instructions, millions ({ins['tool']}; what it could count)", "",
                "| command | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for w in whats:
            row = []
            for n in cols:
                v = ins.get(n, {}).get(w)
                if not v:
                    row.append("—")
                elif "instructions" in v:
                    row.append(f"{v['instructions'] / 1e6:.2f}")
                else:
                    row.append("n/a")
            out.append(f"| {w} | " + " | ".join(row) + " |")
        lab = []
        for n in cols:
            for w, v in (ins.get(n) or {}).items():
                if v.get("label") and "instructions" in v:
                    lab.append(f"- {n} {w}: {v['label']}")
                elif v.get("error"):
                    lab.append(f"- {n} {w}: not counted ({v['error']})")
        out += [""] + lab
    # Failures and notes.
    notes = list(doc["notes"])
    for n, e in doc["engines"].items():
        for fig, ok in (e.get("checks") or {}).items():
            if ok is False:
                notes.append(f"† {n} {doc['figures'][fig]['title']}: check failed: {CHECK_TEXT[fig]}; "
                             "the figure does not measure what it says for this engine")
    for n, e in doc["engines"].items():
        for step, why in (e.get("disabled") or {}).items():
            notes.append(f"{n}: {', '.join(STEPS[step])} not measured: {why}")
    for key, fig in doc["figures"].items():
        for n, e in fig["engines"].items():
            step = next((st for st, fs in STEPS.items() if key in fs), None)
            if e.get("failures") and step not in (doc["engines"].get(n, {}).get("disabled") or {}):
                notes.append(f"{n} {fig['title']}: {e['failures']} failed attempt(s) left out, first: {e['error']}")
    for fig, per in doc["throughput"].items():
        for n, t in per.items():
            if t.get("failures") or t.get("error"):
                notes.append(f"{n} {fig}: {t.get('failures', '?')} failed run(s): {t.get('error', '')}")
    if notes:
        out += ["", "## Notes", ""] + [f"- {x}" for x in dict.fromkeys(notes)]
    out += ["", "Figures: see benches/README.md. Raw samples (ns) are in the JSON file next to this one.", ""]
    return "\n".join(out)


def svg_chart(doc: dict) -> str:
    """A dependency-free SVG: one panel per figure, one horizontal bar per engine (median), a whisker
    from p10 to p90, the value and the ratio to the floor written next to it."""
    cols = engine_cols(doc)
    panels = []  # (title, unit, higher_is_better, [(name, median, p10, p90, label_suffix, missing_text)])
    for f in LATENCY:
        if f.key not in doc["figures"]:
            continue
        rows = []
        fl = doc["figures"][f.key]["engines"].get(FLOOR, {}).get("stats_ns")
        for n in cols:
            e = doc["figures"][f.key]["engines"].get(n, {})
            if "stats_ns" in e:
                s = e["stats_ns"]
                suf = f"  ×{s['median'] / fl['median']:.1f}" if fl and n != FLOOR and fl["median"] else ""
                if doc["engines"].get(n, {}).get("checks", {}).get(f.key) is False:
                    suf += " † check failed"
                rows.append((n, s["median"] / 1e6, s["p10"] / 1e6, s["p90"] / 1e6, suf, None))
            else:
                step = next((st for st, fs in STEPS.items() if f.key in fs), None)
                disabled = step in (doc["engines"].get(n, {}).get("disabled") or {})
                rows.append((n, None, None, None, "", "skipped" if "skipped" in e else
                             "n/a" if e.get("not_applicable") else "not measured (fails)" if disabled else
                             "failed" if e.get("failures") else "—"))
        panels.append((f.title, "ms", False, rows))
    for f in THROUGHPUT:
        rows = []
        for n in cols:
            t = doc["throughput"].get(f.key, {}).get(n)
            if t and "per_second" in t:
                rows.append((n, t["per_second"], None, None, f"{t['ms_per_container']:.1f} ms each", None))
            else:
                rows.append((n, None, None, None, "",
                             "skipped" if doc["engines"][n].get("skipped") else "failed" if t else "—"))
        if any(r[1] is not None for r in rows):
            panels.append((f.title, "containers/s", True, rows))
    for title, src in RSS_CHART:
        rows = []
        for n in cols:
            e = doc["figures"][src]["engines"].get(n, {})
            if "maxrss_kb" in e:
                s = e["maxrss_kb"]
                rows.append((n, s["median"] / 1024, None, None, "", None))
            else:
                rows.append((n, None, None, None, "", "skipped" if "skipped" in e else
                             "n/a" if e.get("not_applicable") else "—"))
        if any(r[1] is not None for r in rows):
            panels.append((title, "MiB", False, rows))

    ins = doc.get("instructions") or {}
    for what in ("state", "delete"):
        rows = []
        for n in cols:
            v = (ins.get(n) or {}).get(what) or {}
            if "instructions" in v:
                rows.append((n, v["instructions"] / 1e6, None, None, "", None))
            else:
                rows.append((n, None, None, None, "", "skipped" if doc["engines"][n].get("skipped") else
                             "not counted" if v else "n/a"))
        if sum(r[1] is not None for r in rows) >= 2:
            panels.append((f"instructions: {what}", f"millions, {ins.get('tool')}", False, rows))

    W, COLS, PAD = 1040, 2, 16
    pw = (W - PAD * (COLS + 1)) // COLS
    row_h, head_h = 22, 30
    label_w, value_w = 104, 150
    bar_w = pw - label_w - value_w - 16
    max_rows = max(len(p[3]) for p in panels) if panels else 1
    ph = head_h + max_rows * row_h + 12
    top = 96
    nrows = math.ceil(len(panels) / COLS)
    H = top + nrows * (ph + PAD) + 28
    m = doc["machine"]
    esc = html.escape
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
         f'<text x="{PAD}" y="28" font-size="19" font-weight="bold">proxmox-lxcri vs runc vs crun vs floor</text>',
         f'<text x="{PAD}" y="48" fill="#444">{esc(doc["date"])} · {esc(m["cpu_model"])} · {m["nproc"]} cores · '
         f'kernel {esc(m["kernel"])} · {doc["method"]["iterations"]} iterations, interleaved · load '
         f'{esc((m.get("loadavg_start") or ["?"])[0])} → {esc((m.get("loadavg_end") or ["?"])[0])}</text>',
         f'<text x="{PAD}" y="66" fill="#444">bar = median, whisker = p10–p90, ×N = median / floor median, '
         f'bold = best runtime; lower is better except throughput</text>']
    x = PAD
    for n in cols:
        e = doc["engines"][n]
        o.append(f'<rect x="{x}" y="76" width="12" height="12" fill="{COLORS[n]}"/>')
        label = n + (" (skipped)" if e.get("skipped") else "")
        o.append(f'<text x="{x + 16}" y="86">{esc(label)}</text>')
        x += 16 + 7.2 * len(label) + 18
    for i, (title, unit, hib, rows) in enumerate(panels):
        px = PAD + (i % COLS) * (pw + PAD)
        py = top + (i // COLS) * (ph + PAD)
        o.append(f'<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="#f7f7f7" stroke="#dddddd"/>')
        note = "higher is better" if hib else ""
        o.append(f'<text x="{px + 10}" y="{py + 20}" font-size="14" font-weight="bold">{esc(title)}'
                 f'<tspan dx="6" font-weight="normal" fill="#666" font-size="12">({esc(unit)}'
                 f'{", " + note if note else ""})</tspan></text>')
        vmax = max([r[3] if r[3] is not None else r[1] for r in rows if r[1] is not None] or [1.0]) or 1.0
        bx = px + label_w
        # The best engine (the floor and engines whose check failed aside) gets its value in bold.
        peers = [r for r in rows if r[1] is not None and r[0] != FLOOR and "†" not in r[4]]
        best = (max if hib else min)(peers, key=lambda r: r[1])[0] if len(peers) > 1 else None
        for j, (name, med, p10, p90, suf, missing) in enumerate(rows):
            y = py + head_h + j * row_h
            o.append(f'<text x="{bx - 8}" y="{y + 14}" text-anchor="end">{esc(name)}</text>')
            if med is None:
                o.append(f'<text x="{bx + 4}" y="{y + 14}" fill="#999" font-style="italic">{esc(missing or "")}</text>')
                continue
            w = max(1.0, bar_w * med / vmax)
            o.append(f'<rect x="{bx}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{COLORS[name]}"/>')
            if p10 is not None and p90 is not None:
                x1, x2 = bx + bar_w * p10 / vmax, bx + bar_w * p90 / vmax
                yc = y + row_h / 2
                o.append(f'<path d="M{x1:.1f} {yc:.1f}H{x2:.1f}M{x1:.1f} {yc - 5:.1f}V{yc + 5:.1f}'
                         f'M{x2:.1f} {yc - 5:.1f}V{yc + 5:.1f}" stroke="#222" stroke-width="1.2" fill="none"/>')
            val = f"{med:.2f}" if med < 10 else f"{med:.1f}" if med < 1000 else f"{med:.0f}"
            weight = ' font-weight="bold"' if name == best else ""
            short = {"containers/s": "/s"}.get(unit, "M" if unit.startswith("millions") else unit)
            o.append(f'<text x="{bx + bar_w + 8}" y="{y + 14}"{weight}>{esc(val)} '
                     f'{esc(short)}'
                     + (f'<tspan dx="6" fill="#555" font-weight="normal">{esc(suf.strip())}</tspan>' if suf else "")
                     + '</text>')
    o.append(f'<text x="{PAD}" y="{H - 10}" fill="#888" font-size="11">spawn baseline (posix_spawn+wait4 of /bin/true) '
             + (f'{doc["figures"]["spawn"]["engines"][SPAWN]["stats_ns"]["median"] / 1e6:.2f} ms'
                if doc["figures"]["spawn"]["engines"][SPAWN].get("stats_ns") else "n/a")
             + ' is part of every latency · scripts/bench · benches/README.md</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def save(doc: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(doc["date"]).strftime("%Y-%m-%d-%H%M")
    if doc["method"]["quick"]:
        stamp += "-quick"
    if any(out_dir.glob(f"{stamp}.*")):
        stamp = dt.datetime.fromisoformat(doc["date"]).strftime("%Y-%m-%d-%H%M%S") + ("-quick" if doc["method"]["quick"] else "")
    texts = {"json": json.dumps(doc, indent=1) + "\n", "md": to_markdown(doc), "svg": svg_chart(doc)}
    written = []
    for ext, text in texts.items():
        # A --quick run is a smoke test: it never replaces latest.*.
        for name in (f"{stamp}.{ext}",) + (() if doc["method"]["quick"] else (f"latest.{ext}",)):
            p = out_dir / name
            tmp = out_dir / (name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, p)
            if name.startswith(stamp):
                written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark proxmox-lxcri against runc, crun and a C floor (see benches/README.md).")
    p.add_argument("--lxcri", default=None, metavar="BIN",
                   help="proxmox-lxcri binary (default: target/release/proxmox-lxcri)")
    p.add_argument("--engines", default=",".join(ENGINE_ORDER),
                   help=f"comma-separated subset of {','.join(ENGINE_ORDER)} (default: all)")
    p.add_argument("-n", "--iterations", type=int, default=None, help="measured iterations (default 100; --quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations, not recorded (default 5; --quick 1)")
    p.add_argument("--throughput", type=int, default=None, metavar="N",
                   help="containers per throughput run (default 100; --quick 10; 0: skip)")
    p.add_argument("--rss-rounds", dest="rss_reps", type=int, default=None, metavar="N",
                   help="untimed rounds of every step for peak RSS (default 5; --quick 2; 0: skip)")
    p.add_argument("--quick", action="store_true", help="a smoke run: few iterations, well under a minute")
    p.add_argument("--instructions", action="store_true",
                   help="also count instructions of state/create/delete/run (perf, else valgrind callgrind)")
    p.add_argument("--seed", type=int, default=None, help="seed of the interleaving order (default: random)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before one command counts as hung")
    p.add_argument("--out", default=None, help="results directory (default: bench-results in the repo)")
    p.add_argument("--no-save", action="store_true", help="print the results only")
    p.add_argument("--render", metavar="JSON",
                   help="only rewrite the .md and .svg next to a results JSON (no root needed: "
                        "python3 benches/harness.py --render FILE.json)")
    # Set by scripts/bench:
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--floor", help=argparse.SUPPRESS)
    p.add_argument("--rusage", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repo", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.render:
        src = Path(a.render)
        doc = json.loads(src.read_text())
        for ext, text in (("md", to_markdown(doc)), ("svg", svg_chart(doc))):
            dst = src.with_suffix("." + ext)
            dst.write_text(text)
            print(f"wrote {dst}")
        return 0
    if not (a.workdir and a.floor and a.repo):
        p.error("run through scripts/bench (it passes --workdir, --floor and --repo)")
    if a.iterations is None:
        a.iterations = 5 if a.quick else 100
    if a.warmup is None:
        a.warmup = 1 if a.quick else 5
    if a.throughput is None:
        a.throughput = 10 if a.quick else 100
    if a.rss_reps is None:
        a.rss_reps = 2 if a.quick else 5
    a.warmup = max(1, a.warmup)  # the first warm-up is also each step's probe
    if a.iterations < 1:
        p.error("--iterations must be at least 1")
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    if a.lxcri is None:
        a.lxcri = str(Path(a.repo) / "target/release/proxmox-lxcri")
    out_dir = Path(a.out) if a.out else Path(a.repo) / "bench-results"

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    bench = Bench(a)
    try:
        doc = bench.run()
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr)
        return 130
    except HarnessError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            bench.cleanup()
        except KeyboardInterrupt:
            bench.cleanup()
    print()
    print(to_markdown(doc))
    if not a.no_save:
        for path in save(doc, out_dir):
            print(f"wrote {path}")
        if a.quick:
            print(f"(--quick: {out_dir}/latest.* left as it was)")
        else:
            print(f"updated {out_dir}/latest.{{json,md,svg}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
