"""The linear probe / kd_logit-tokt teacher: scikit-learn's logistic regression vs the torch head it replaced.

    python benchmarks/probe_speed.py --store cache/sst2/minilm [--labels 2000] [--write BENCHMARKS.md]

Rows as the sst2-2k pipeline plans them (2,000 labels, 10% hold-out, data seed 0 → 1,800 training rows),
φ read from the store once. Both heads choose C over the same grid by 5-fold cross-validation and are scored
on the dev split (872). "torch" is the Adam-trained head that was the linear default (`fit_torch_head`,
hidden=0), fitted with seeds 0, 1, 2 as the probe's three seeds did; "sklearn" is `fit_linear_head` (lbfgs,
seed-free); "cached" reads that head back from the head cache (`aftpipe.heads`), which is what every later
seed and kd_logit/tokt teacher on the same rows costs; "agreement" is the share of test rows on which the
two heads predict the same class (the lowest over seeds). The fits alternate (torch, sklearn, torch, ...) in one
process, so the ratio holds on a busy machine even where the absolute times do not.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from _markdown import machine

import aftpipe
from aftpipe.features import open_split_features, plan_rows
from aftpipe.heads import fitted_head
from aftpipe.methods.teacher import fit_linear_head, fit_torch_head, head_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="cache/sst2/minilm")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--test-split", default="dev")
    ap.add_argument("--labels", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--write", help="append the results as a table row to this Markdown file")
    args = ap.parse_args()

    ds = aftpipe.load_dataset(args.dataset)
    train_split = ds.split("train")
    feats = open_split_features((args.store,), ds, "train")
    plan = plan_rows(feats.examples, train_split.labels, args.labels, 0.1, 0)
    x, y = feats(plan.train), torch.from_numpy(train_split.labels[plan.train])
    test = open_split_features((args.store,), ds, args.test_split)
    xt, yt = test(test.examples), torch.from_numpy(ds.split(args.test_split).labels[test.examples])

    torch_s, torch_acc, sk_s, sk_acc, agree = [], [], [], [], []
    for seed in range(args.seeds):
        t = time.perf_counter()
        old = fit_torch_head(x, y, ds.num_classes, seed=seed)
        torch_s.append(time.perf_counter() - t)
        torch_acc.append(head_accuracy(old, xt, yt))
        t = time.perf_counter()
        new = fit_linear_head(x, y, ds.num_classes, seed=seed)
        sk_s.append(time.perf_counter() - t)
        sk_acc.append(head_accuracy(new, xt, yt))
        with torch.no_grad():  # same predictions: the kd_logit/tokt teacher's answers barely move
            agree.append(float((old(xt).argmax(-1) == new(xt).argmax(-1)).float().mean()))
        print(f"seed {seed}: torch {torch_s[-1]:.2f}s acc {torch_acc[-1]:.4f} (C={old.c:g})  "
              f"sklearn {sk_s[-1]:.3f}s acc {sk_acc[-1]:.4f} (C={new.c:g})  agreement {agree[-1]:.4f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AFTPIPE_HEAD_CACHE"] = tmp
        fitted_head(feats, (args.store,), plan.train, train_split.labels, ds.num_classes)
        t = time.perf_counter()
        _, origin = fitted_head(feats, (args.store,), plan.train, train_split.labels, ds.num_classes)
        cached_s = time.perf_counter() - t
        assert origin["cached"]

    ratio = statistics.median(torch_s) / statistics.median(sk_s)
    print(f"torch {statistics.mean(torch_s):.2f}s/fit, acc {np.mean(torch_acc):.4f}; sklearn "
          f"{statistics.mean(sk_s):.3f}s/fit, acc {np.mean(sk_acc):.4f}; {ratio:.0f}x faster; cached {cached_s:.3f}s")
    if args.write:
        from _markdown import append_rows

        host = machine()
        accs = lambda a: ", ".join(f"{100 * v:.2f}" for v in a)  # noqa: E731
        append_rows(args.write, "probe_speed", [
            f"| {datetime.date.today()} | {host} | {args.dataset} {len(plan.train):,}×{x.shape[1]} | "
            f"{statistics.median(torch_s):.1f} | {accs(torch_acc)} | {statistics.median(sk_s):.2f} | "
            f"{accs(sk_acc[:1])} | {ratio:.0f}× | {cached_s:.3f} | {100 * min(agree):.1f}% |"])


if __name__ == "__main__":
    main()
