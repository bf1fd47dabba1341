"""The run the stage-2 benchmarks time: the options that pick it and the `Trainer` a pipeline would build."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aftpipe.config import MethodConfig, TrainConfig
from aftpipe.progress import SilentProgress
from aftpipe.training import Trainer, load_run_data


def add_run_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--store", default="cache/sst2/minilm")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--student", default="textcnn")
    ap.add_argument("--method", default="none")
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--labels", type=int, default=None)
    ap.add_argument("--unlabeled", action="store_true")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)


def describe(args: argparse.Namespace) -> str:
    """The run in a table cell: method, student, batch, and the transfer set and label budget when set."""
    return (f"{args.method}, {args.student}, batch {args.batch_size}" + (" + unlabeled" if args.unlabeled else "")
            + (f", {args.labels} labels" if args.labels else ""))


def build_trainer(args: argparse.Namespace, out: str, steps: int) -> Trainer:
    """The run (rows planned with data seed 0, weights from torch seed 0) scheduled for `steps` steps, so that
    the learning rate barely moves over the steps a benchmark takes."""
    cfg = TrainConfig(dataset=args.dataset, features=(args.store,), method=args.method, out=out,
                      student=args.student, labels=args.labels, unlabeled=args.unlabeled, batch_size=args.batch_size,
                      method_options=MethodConfig(beta=args.beta), steps=steps, threads=args.threads)
    torch.manual_seed(0)
    return Trainer(cfg, load_run_data(cfg), torch.device("cpu"), Path(out), SilentProgress())
