#!/usr/bin/env python3
"""Summarises a scripts/bench-storage run: median create-to-running latency per rootfs and
backend, and each backend's ratio to `dir` and to `zfs-copy`. Writes X.md next to X.tsv and
prints it. The run is under QEMU emulation: only the ratios carry over to real hardware."""

import csv
import statistics
import sys
from collections import defaultdict


def main(path: str) -> None:
    runs = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            runs[(row["rootfs"], row["backend"])].append(int(row["ms"]))
    order = ["dir", "zfs-copy", "zfs-clone", "zfs-clone-first"]
    lines = [
        f"# Storage: create-to-running latency ({path.rsplit('/', 1)[-1]})",
        "",
        "Emulated guest (QEMU TCG): absolute times are not those of real hardware; compare",
        "backends by their ratios. zfs-clone-first is the create that fills the template.",
        "",
        "| rootfs | backend | n | median ms | min ms | max ms | vs dir | vs zfs-copy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rootfs in ["small", "large"]:
        med = {b: statistics.median(runs[(rootfs, b)]) for b in order if runs[(rootfs, b)]}
        for b in order:
            v = runs.get((rootfs, b))
            if not v:
                continue
            rd = f"{med[b] / med['dir']:.2f}x" if "dir" in med else "-"
            rc = f"{med[b] / med['zfs-copy']:.2f}x" if "zfs-copy" in med else "-"
            lines.append(
                f"| {rootfs} | {b} | {len(v)} | {med[b]:.0f} | {min(v)} | {max(v)} | {rd} | {rc} |"
            )
    text = "\n".join(lines) + "\n"
    with open(path.rsplit(".", 1)[0] + ".md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1])
