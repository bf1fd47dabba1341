"""The default student trained by this checkout and by another, seed by seed: is the faster step the same model?

    python benchmarks/student_accuracy.py --before <checkout of the version before> --store cache/sst2/minilm \\
                                          [--seeds 0 1 2] [--labels 2000] [--steps 300] [--lr 3e-3] [--threads 1]
                                          [--write BENCHMARKS.md]

Each seed is one `aftpipe train --method none` (SST-2, the TextCNN, batch 128, `--labels` labeled rows, the
first setting of pipelines/sst2-2k.yaml's `none`) run as its own process by this checkout and then by the
other (`python -m aftpipe.cli` from each checkout's folder imports that checkout). The row gives the test
accuracy of each (mean ± std over the seeds), the largest per-seed difference, and the ratio of the median
ms/step the runs report (the training loop's own time, without data loading and evaluation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _markdown import machine

REPO = Path(__file__).resolve().parents[1]


def train(checkout: Path, out: Path, args: argparse.Namespace, seed: int, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "aftpipe.cli", "train", "--dataset", "sst2", "--features", str(Path(args.store).resolve()),
           "--method", "none", "--labels", str(args.labels), "--steps", str(args.steps), "--lr", str(args.lr),
           "--seed", str(seed), "--threads", str(args.threads), "--out", str(out), "--quiet"]
    cmd += ["--data-dir", args.data_dir]  # the other checkout would look for the data beside itself
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"train in {checkout} failed:\n{done.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="a checkout of the version to compare with")
    ap.add_argument("--store", default="cache/sst2/minilm")
    ap.add_argument("--data-dir")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--labels", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write")
    args = ap.parse_args()
    if not args.data_dir:
        from aftpipe.data import default_data_dir

        args.data_dir = str(default_data_dir())
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    acc: dict[str, list[float]] = {"now": [], "before": []}
    ms: dict[str, list[float]] = {"now": [], "before": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name, checkout in (("now", REPO), ("before", Path(args.before).resolve())):
                m = train(checkout, Path(tmp) / f"{name}-{seed}", args, seed, env)
                acc[name].append(100 * m["test"]["accuracy"])
                ms[name].append(m["ms_per_step"])
                print(f"seed {seed} {name}: test accuracy {acc[name][-1]:.2f}, {ms[name][-1]:.1f} ms/step", flush=True)

    def mean_std(xs: list[float]) -> str:
        return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"

    diff = max(abs(a - b) for a, b in zip(acc["now"], acc["before"]))
    speedup = statistics.median(ms["before"]) / statistics.median(ms["now"])
    line = (f"| {datetime.date.today()} | {machine()} | "
            f"none, textcnn, {args.labels} labels, {args.steps} steps, lr {args.lr:g} | {args.threads} | "
            f"{','.join(map(str, args.seeds))} | {mean_std(acc['before'])} | {mean_std(acc['now'])} | {diff:.2f} | "
            f"{statistics.median(ms['before']):.1f} | {statistics.median(ms['now']):.1f} | **{speedup:.2f}×** |")
    print(line)
    if args.write:
        from _markdown import append_rows

        append_rows(args.write, "student_accuracy", [line])


if __name__ == "__main__":
    main()
