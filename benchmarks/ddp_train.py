"""DDP training (torchrun, N processes) next to one process at the same global batch, over seeds.

    python benchmarks/ddp_train.py [--features ../cache/sst2/minilm --procs 2 --seeds 0 1 2] [--write BENCHMARKS.md]
    python benchmarks/ddp_train.py --dataset cola --features cache/cola/minilm --weights 60   # exact? (below)

Each run is a real `aftpipe train` (through torchrun for N processes) of the TextCNN student with AFT on the
given store, every run with the same `--batch-size`: N processes each compute on 1/N of every batch and
average their gradients, and AFT's kernel spans the whole batch (the ranks gather its rows). The table gives
test accuracy, mean ± std over the seeds, for 1 and N processes: the two should agree within seed noise.
`--weights STEPS` trains `none` and `aft` with nothing random between the runs instead and prints the largest
difference between the 1- and N-process students' weights: float rounding when DDP reproduces one process.
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

from _markdown import append_rows


def run(procs: int, seed: int, args: argparse.Namespace, out: Path, method: str = "aft", *extra: str) -> dict:
    train = ["-m", "aftpipe", "train", "--dataset", args.dataset, "--features", args.features, "--student", "textcnn",
             "--method", method, "--beta", str(args.beta), "--labels", str(args.labels), "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--seed", str(seed), "--threads", "1", "--out", str(out), "--quiet", *extra]
    launcher = [] if procs == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    p = subprocess.run([sys.executable, *launcher, *train], env=env, capture_output=True, text=True, check=False)
    if p.returncode:
        raise SystemExit(f"{procs} process(es), seed {seed} failed:\n{p.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def weight_difference(args: argparse.Namespace) -> None:
    """1 vs N processes with nothing random between them (dropout 0, seed 0): the largest difference between
    the two students' weights after `args.weights` steps, per method; float rounding for an exact DDP."""
    from safetensors.numpy import load_file

    with tempfile.TemporaryDirectory() as tmp:
        for method in ("none", "aft"):
            w = {}
            for n in (1, args.procs):
                out = Path(tmp) / f"{method}-n{n}"
                run(n, 0, args, out, method, "--dropout", "0", "--steps", str(args.weights))
                w[n] = load_file(str(out / "student.safetensors"))
            diff = max(float(abs(w[1][k] - w[args.procs][k]).max()) for k in w[1])
            print(f"{args.dataset}, {method}, {args.weights} steps of {args.batch_size}: largest |weight difference| "
                  f"between 1 and {args.procs} processes {diff:.2g}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--features", default="cache/sst2/minilm")
    ap.add_argument("--labels", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--write")
    ap.add_argument("--weights", type=int, metavar="STEPS",
                    help="instead: `none` and `aft` for STEPS steps, dropout 0: the largest weight difference, 1 vs N")
    args = ap.parse_args()
    if args.weights:
        return weight_difference(args)

    acc: dict[int, list[float]] = {1: [], args.procs: []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for n in (1, args.procs):
                m = run(n, seed, args, Path(tmp) / f"n{n}-s{seed}")
                acc[n].append(100 * m["test"][m["metric"]])
                print(f"seed {seed}, {n} process(es): test {acc[n][-1]:.2f}, {m['steps']} steps", flush=True)

    def ms(v: list[float]) -> str:
        return f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"

    line = (f"| {datetime.date.today()} | {args.dataset}, {args.labels} labels, textcnn + aft β={args.beta:g}, "
            f"{args.epochs} epochs of {args.batch_size} | {len(args.seeds)} | {ms(acc[1])} | {args.procs}: {ms(acc[args.procs])} |")
    print(line)
    if args.write:
        append_rows(args.write, "ddp_train", [line])


if __name__ == "__main__":
    main()
