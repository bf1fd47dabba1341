"""Extraction throughput of N processes (torchrun) vs 1 process, one thread each.

    python benchmarks/extract_scaling.py [--procs 2 --rows 3072 --repeats 2 --device cpu] [--write BENCHMARKS.md]

Each run is a real `python -m aftpipe extract` (through torchrun for N > 1) of the first `--rows` rows of a
split into a fresh store, one compute thread per process and no DataLoader worker. Rows/s is what rank 0
reports for the job: the rows over the slowest rank's time in the split (model loading and process start-up
excluded, as they are once per job). 1 and N processes alternate `--repeats` times, so a machine whose load
changes affects both alike; the table gives the median of each and their ratio (target: ≥ 0.8·N on CPU,
≥ 0.9·N on GPUs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile

from _markdown import append_rows

RATE = re.compile(r"\s(\d+(?:\.\d+)?)s\s+([\d,]+) ex/s")


def run(procs: int, args: argparse.Namespace, cache: str) -> float:
    extract = ["-m", "aftpipe", "extract", "--dataset", args.dataset, "--source", args.source, "--splits", args.split,
               "--limit", str(args.rows), "--shard-rows", str(args.shard_rows), "--chunk-rows", str(args.shard_rows),
               "--batch-size", str(args.batch_size), "--workers", "0", "--device", args.device, "--cache-dir", cache,
               "--quiet"]
    launcher = [] if procs == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's aftpipe, not another
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    p = subprocess.run([sys.executable, *launcher, *extract], env=env, capture_output=True, text=True, check=False)
    if p.returncode:
        raise SystemExit(f"{procs} process(es) failed:\n{p.stderr[-3000:]}")
    found = RATE.findall(p.stdout + p.stderr)
    if len(found) != 1:
        raise SystemExit(f"expected one result line, got {found}:\n{(p.stdout + p.stderr)[-3000:]}")
    return float(found[0][1].replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--split", default="train")
    ap.add_argument("--source", default="minilm")
    ap.add_argument("--rows", type=int, default=3072)
    ap.add_argument("--shard-rows", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="compute threads per process")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--note", default="", help="what else the machine was doing")
    ap.add_argument("--write")
    args = ap.parse_args()

    rates: dict[int, list[float]] = {1: [], args.procs: []}
    for _ in range(args.repeats):
        for n in (1, args.procs):
            with tempfile.TemporaryDirectory() as tmp:
                rates[n].append(run(n, args, tmp))
            print(f"{n} process(es): {rates[n][-1]:,.0f} ex/s", flush=True)
    one, many = statistics.median(rates[1]), statistics.median(rates[args.procs])
    line = (f"| {datetime.date.today()} | {args.source.rsplit('/', 1)[-1]} | {args.dataset}/{args.split} {args.rows} rows, "
            f"{args.shard_rows}-row shards | {args.device}, {args.threads} thread/process | "
            f"{', '.join(f'{r:,.0f}' for r in rates[1])} | {args.procs}: {', '.join(f'{r:,.0f}' for r in rates[args.procs])} | "
            f"{many / one:.2f}× | {args.note} |")
    print(line)
    if args.write:
        append_rows(args.write, "extract_scaling", [line])


if __name__ == "__main__":
    main()
