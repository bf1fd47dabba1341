"""Extraction throughput vs the model's own forward throughput on the same rows, in one process (docs/design.md §4).

    python benchmarks/extract_speed.py [--dataset sst2 --split train --rows 8192 --batch-size 256]
                                       [--threads 2] [--rounds 3] [--write BENCHMARKS.md]

"forward" tokenises and runs the model over the rows in the batches `aftpipe extract` forms (each shard's
rows sorted by token count, longest first) and nothing else; "forward, sorted by characters" is the same
with the rows sorted by character length, as sentence-transformers' `encode` sorts them; "extract" is the
whole `aftpipe.extract` call into a fresh zarr store (dataset, model load, weights hash, shard planning,
DataLoader, writer thread, checksums, manifest). The three alternate `--rounds` times in one process and the
medians are compared: extract / forward is the engine's overhead (1.0: the model's own speed).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time

import numpy as np
import torch

from _markdown import append_rows, machine

from aftpipe.config import ExtractConfig
from aftpipe.data import load_dataset
from aftpipe.extraction import default_shard_rows, extract, resolve_device, shard_batches
from aftpipe.sources import load_source


def forward(source, texts: list[str], batches: list[np.ndarray]) -> float:
    t = time.perf_counter()
    for rows in batches:
        source.forward(source.collate([texts[j] for j in rows]))
    if source.device.type == "cuda":
        torch.cuda.synchronize()
    return sum(len(b) for b in batches) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--split", default="train")
    ap.add_argument("--source", default="minilm")
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="extract's DataLoader workers (default: its own)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    split = load_dataset(args.dataset).split(args.split)
    texts = list(split.inputs[: args.rows])
    source = load_source(args.source).to(device)
    shard = default_shard_rows(source.dim, "float16")
    by_tokens = [b for a in range(0, args.rows, shard)
                 for b in shard_batches(split, source, a, min(a + shard, args.rows), args.batch_size)]
    order = np.argsort([-len(t) for t in texts], kind="stable")
    by_chars = [order[i:i + args.batch_size] for i in range(0, args.rows, args.batch_size)]
    forward(source, texts, by_tokens[:2])  # warm-up
    rates: dict[str, list[float]] = {"forward": [], "chars": [], "extract": []}
    for _ in range(args.rounds):
        rates["forward"].append(forward(source, texts, by_tokens))
        rates["chars"].append(forward(source, texts, by_chars))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = ExtractConfig(dataset=args.dataset, sources=(args.source,), splits=(args.split,), limit=args.rows,
                                cache_dir=tmp, batch_size=args.batch_size, device=args.device, workers=args.workers)
            t = time.perf_counter()
            extract(cfg)
            rates["extract"].append(args.rows / (time.perf_counter() - t))  # model load included: the honest number
        print({k: round(v[-1]) for k, v in rates.items()}, flush=True)
    fwd, chars, e2e = (statistics.median(rates[k]) for k in ("forward", "chars", "extract"))
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ×{args.threads} threads"
    line = (f"| {datetime.date.today()} | {machine()} | {args.source} | "
            f"{args.dataset}/{args.split} {args.rows} rows, batch {args.batch_size} | {dev} | {fwd:,.0f} | {chars:,.0f} | "
            f"{e2e:,.0f} | **{e2e / fwd:.2f}** |")
    print(line)
    if args.write:
        append_rows(args.write, "extract_speed", [line])


if __name__ == "__main__":
    main()
