"""Peak memory of `aftpipe extract` and `aftpipe train` on SST-2, and whether extraction's grows with the rows.

    python benchmarks/memory.py --store cache/sst2/minilm [--small 8192] [--threads 2] [--write BENCHMARKS.md]

Each command runs as its own process; its peak resident set size comes from wait4 (the process and the
DataLoader workers it waited for, whichever was largest). "extract, N rows" is `aftpipe extract --source minilm
--splits train,dev --limit N` into a fresh store (every dev row, and the first N train rows: the whole split
without a limit); "train" is one epoch of `aftpipe train --method aft` on every labeled SST-2 row against
`--store`. Extraction streams its rows shard by shard, so its peak must not grow with the dataset: the
benchmark prints the ratio of the two extraction peaks (goal: within ±10%).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of `cmd`."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd[2:6])} failed:\n{err[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="cache/sst2/minilm", help="an SST-2 MiniLM store for the train run")
    ap.add_argument("--small", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    aft = [sys.executable, "-m", "aftpipe.cli"]
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for limit in (args.small, None):
            cmd = [*aft, "extract", "--dataset", "sst2", "--source", "minilm", "--splits", "train,dev", "--quiet",
                   "--cache-dir", str(Path(tmp) / f"cache-{limit}"), *(["--limit", str(limit)] if limit else [])]
            mib, wall = peak(cmd, env)
            rows.append((f"extract, {limit or 67349:,} train + 872 dev rows", mib, wall))
            print(rows[-1], flush=True)
        cmd = [*aft, "train", "--dataset", "sst2", "--features", args.store, "--method", "aft", "--beta", "0.3",
               "--epochs", "1", "--threads", str(args.threads), "--out", str(Path(tmp) / "run"), "--quiet"]
        mib, wall = peak(cmd, env)
        rows.append(("train, aft, 1 epoch over 60,614 train rows", mib, wall))
        print(rows[-1], flush=True)
    growth = rows[1][1] / rows[0][1] - 1
    print(f"extraction peak: {rows[0][1]:.0f} MiB at {args.small:,} rows, {rows[1][1]:.0f} MiB at 67,349 ({growth:+.1%})")
    if args.write:
        from _markdown import append_rows

        machine = f"{platform.machine()} ×{os.cpu_count()}, load {os.getloadavg()[0]:.1f}"
        append_rows(args.write, "memory", [
            f"| {datetime.date.today()} | {machine} | {what} | {mib:,.0f} | {wall:.0f} |" for what, mib, wall in rows]
            + [f"| {datetime.date.today()} | {machine} | extraction peak, 67,349 vs {args.small:,} train rows | "
               f"**{growth:+.1%}** | – |"])


if __name__ == "__main__":
    main()
