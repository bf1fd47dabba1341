"""How long a pipeline takes, from one measured run per group: what `make bench-quality` costs without running it.

    python benchmarks/sweep_estimate.py pipelines/sst2-2k.yaml pipelines/cola.yaml ... --cache-dir cache \\
                                        [--jobs 2] [--write BENCHMARKS.md]

For every group of each pipeline (method × sources × student) one run is trained, as the sweep trains it (one
thread, the group's first setting, `tune_seed`), into a temporary runs folder; its wall time (data, student,
steps, evaluations, test; the teacher or probe head from the head cache when the stores' cache holds it) is
that group's cost per run. The linear probe's runs are all trained (the first fits the head, the others
read it). The pipeline's estimate is the sum over groups of runs × cost; "with N jobs" divides it by N, the
bound that N one-thread workers approach when the groups are many. Nothing is written to the stores'
folder but heads, through the normal head cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import tempfile
import time
from pathlib import Path

from _markdown import machine

from aftpipe.pipeline import PROBE, plan_pipeline
from aftpipe.progress import SilentProgress
from aftpipe.sweep import Sweep, train_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pipelines", nargs="+")
    ap.add_argument("--cache-dir", default="cache")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--write")
    args = ap.parse_args()

    lines = []
    for path in args.pipelines:
        with tempfile.TemporaryDirectory() as tmp:
            plan = plan_pipeline(path, args.cache_dir, tmp)
            if plan.missing_stores():
                raise SystemExit(f"{path}: extract its stores first ({', '.join(plan.missing_stores())})")
            sweep = Sweep(plan, SilentProgress())
            total, detail = 0.0, []
            for g in plan.groups:
                beta, lr = g.grid[0]
                seeds = plan.cfg.seeds if g.method == PROBE else (plan.cfg.tune_seed,)
                walls = []
                for seed in seeds:
                    tc = sweep.config(g, beta, lr, seed)
                    t = time.perf_counter()
                    train_run(dataclasses.replace(tc, resume=False), SilentProgress())
                    walls.append(time.perf_counter() - t)
                n = plan.runs(g)
                cost = sum(walls) * n / len(walls) if g.method != PROBE else sum(walls) + (n - len(walls)) * walls[-1]
                total += cost
                detail.append(f"{g.label} {n}×{cost / n:.0f}")
                print(f"{plan.cfg.name}: {g.label}: {n} runs × {cost / n:.1f} s", flush=True)
        line = (f"| {datetime.date.today()} | {machine()} | "
                f"{Path(path).name} | {plan.total_runs} | {total / 60:.1f} | **{total / 60 / args.jobs:.1f}** | "
                f"{'; '.join(detail)} |")
        print(line)
        lines.append(line)
    if args.write:
        from _markdown import append_rows

        append_rows(args.write, "sweep_estimate", lines)


if __name__ == "__main__":
    main()
