"""Where a training step's time goes: torch.profiler over the real `Trainer.step` (and one evaluation).

    python benchmarks/profile_train.py --store cache/sst2/minilm [--method none] [--labels 2000 --unlabeled]
                                       [--threads 1] [--steps 60] [--top 15] [--write BENCHMARKS.md]

Builds the run a pipeline would (SST-2, the TextCNN student, rows planned with data seed 0), takes a few
warm-up steps, then profiles `--steps` optimizer steps and one hold-out evaluation. Prints ms/step, the
evaluation's cost in steps, and the operators with the most self CPU time; `--write` appends the summary
to BENCHMARKS.md. Thread count is explicit: on a shared 2-core machine 2 torch threads can be far slower
than 1 when the other core is busy.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time

import torch
from _markdown import machine
from _trainer import add_run_args, build_trainer, describe
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_args(ap)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--label", default="", help="a name for this profile in the written summary")
    ap.add_argument("--write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tr = build_trainer(args, tmp, steps=10_000)
        tr.student.train()
        for s in range(10):  # warm-up: allocator, oneDNN primitive caches
            tr.step(tr.batch_rows(s))
        t = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for s in range(10, 10 + args.steps):
                tr.step(tr.batch_rows(s))
        step_ms = 1000 * (time.perf_counter() - t) / args.steps
        evals = []
        for _ in range(3):  # the first evaluation also pays for its batch shapes' first use
            t = time.perf_counter()
            tr.evaluate({"loss": 0.0})
            evals.append(1000 * (time.perf_counter() - t))
        eval_ms = sorted(evals)[1]

    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
    print(table)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[: args.top]
    load = os.getloadavg()[0]
    what = describe(args)
    print(f"{what}: {step_ms:.1f} ms/step (profiled, {args.threads} thread(s), load {load:.1f}); one evaluation "
          f"{eval_ms:.0f} ms = {eval_ms / step_ms:.1f} steps")
    if args.write:
        from _markdown import append_rows

        ops = ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}% ({e.count // args.steps}/step)"
                        for e in top[:8])
        append_rows(args.write, "profile_train", [
            f"| {datetime.date.today()} | {machine()} | "
            f"{args.label or '-'} | {what} | {args.threads} | {step_ms:.1f} | {eval_ms / step_ms:.1f} | {ops} |"])


if __name__ == "__main__":
    main()
