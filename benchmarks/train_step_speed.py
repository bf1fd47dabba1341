"""A training step now vs before, alternating in one process: ms/step ratios that hold on a busy machine.

    python benchmarks/train_step_speed.py --store cache/sst2/minilm [--method none] [--labels 2000 --unlabeled]
                                          [--threads 1] [--rounds 8] [--block 10] [--write BENCHMARKS.md]

Two `Trainer`s are built from one config and seed (SST-2, TextCNN, batch 128). "before" runs the step as it
was: TextCNN's dense convolution over the padded batch, AdamW one tensor at a time, and RKD's angles from
the B×B×d tensor of difference vectors (kept below as references); "now" is the code as it is. They take
blocks of `--block` steps in turn, on the same batches with the same dropout masks (the torch seed is set
per step), so the ratio of their median block times is the speed-up and their losses must agree: the
largest loss difference over the run is printed (float rounding grows with the steps, so it is small, not 0).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import tempfile
import time
import types

import torch
import torch.nn.functional as F
from _markdown import machine
from _trainer import add_run_args, build_trainer, describe

from aftpipe.methods import losses
from aftpipe.training import Trainer


def dense_textcnn_features(self, batch):
    """TextCNN as it was: each width's convolution over every position of the padded batch."""
    mask = batch["attention_mask"].bool()
    x = (self.embed(batch["input_ids"]) * mask.unsqueeze(-1)).transpose(1, 2)
    pooled = []
    for conv in self.convs:
        y = F.relu(conv(F.pad(x, (0, conv.kernel_size[0] - 1))))
        pooled.append(y.masked_fill(~mask.unsqueeze(1), 0.0).amax(dim=2))
    return self.drop(torch.cat(pooled, dim=1))


def bmm_triplet_cosines(x):
    """RKD's angles as they were (and as the authors' code computes them): B×B×d unit difference vectors."""
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)
    return torch.bmm(e, e.transpose(1, 2)).reshape(-1)


@contextlib.contextmanager
def before_losses():
    now = losses._triplet_cosines
    losses._triplet_cosines = bmm_triplet_cosines
    try:
        yield
    finally:
        losses._triplet_cosines = now


def build(args: argparse.Namespace, out: str, before: bool) -> Trainer:
    tr = build_trainer(args, out, steps=100_000)
    if before:
        if args.student == "textcnn":
            tr.student.features = types.MethodType(dense_textcnn_features, tr.student)
        groups = [{"params": g["params"], "lr": g["initial_lr"], "weight_decay": g["weight_decay"]}
                  for g in tr.opt.param_groups]
        tr.opt = torch.optim.AdamW(groups, foreach=False)
        tr.sched = torch.optim.lr_scheduler.LambdaLR(tr.opt, tr.sched.lr_lambdas[0])
    tr.student.train()
    return tr


def run_block(tr: Trainer, before: bool, steps: range, losses_out: list[float]) -> float:
    ctx = before_losses() if before else contextlib.nullcontext()
    with ctx:
        t = time.perf_counter()
        for s in steps:
            torch.manual_seed(s)  # the same dropout masks in both trainers
            losses_out.append(tr.step(tr.batch_rows(s))["loss"])
        return (time.perf_counter() - t) / len(steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_args(ap)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        trainers = {"before": build(args, a, True), "now": build(args, b, False)}
        times: dict[str, list[float]] = {k: [] for k in trainers}
        seen: dict[str, list[float]] = {k: [] for k in trainers}
        warm = range(0, 5)
        for name, tr in trainers.items():
            run_block(tr, name == "before", warm, seen[name])
        for r in range(args.rounds):
            steps = range(5 + r * args.block, 5 + (r + 1) * args.block)
            for name in (("before", "now") if r % 2 == 0 else ("now", "before")):
                times[name].append(run_block(trainers[name], name == "before", steps, seen[name]))
    before, now = (1000 * statistics.median(times[k]) for k in ("before", "now"))
    dloss = max(abs(x - y) for x, y in zip(seen["before"], seen["now"], strict=True))
    load = os.getloadavg()[0]
    what = describe(args)
    print(f"{what}: before {before:.1f} ms/step, now {now:.1f} ms/step, {before / now:.2f}x; "
          f"largest loss difference over {len(seen['now'])} steps {dloss:.1e} ({args.threads} thread(s), load {load:.1f})")
    if args.write:
        from _markdown import append_rows

        append_rows(args.write, "train_step_speed", [
            f"| {datetime.date.today()} | {machine()} | {what} | "
            f"{args.threads} | {before:.1f} | {now:.1f} | **{before / now:.2f}×** | {dloss:.0e} over "
            f"{len(seen['now'])} steps |"])


if __name__ == "__main__":
    main()
