"""Extraction throughput vs the model's own forward throughput on the same rows (DESIGN.md §4).

    python benchmarks/extract_speed.py [--dataset sst2 --split train --rows 4096] [--write BENCHMARKS.md]

"forward only" tokenises and runs MiniLM over length-sorted batches with nothing else; "aftpipe extract"
is the whole engine (workers, shard planning, writer thread, checksums, manifest) into a fresh zarr store.
The ratio is the engine's overhead; 1.0 would be the model's own speed. `--prestaged` times the forward
alone instead: every batch tokenised/decoded and moved to the device before the clock starts (the GPU target:
extract ≥ 0.9× that).
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time

import numpy as np
import torch

from _markdown import append_rows

from aftpipe.config import ExtractConfig
from aftpipe.data import load_dataset
from aftpipe.extraction import extract, resolve_device
from aftpipe.sources import load_source


def forward_only(source, texts: list[str], batch_size: int) -> float:
    order = np.argsort([-len(t) for t in texts], kind="stable")
    t = time.perf_counter()
    for i in range(0, len(order), batch_size):
        source.forward(source.collate([texts[j] for j in order[i:i + batch_size]]))
    if source.device.type == "cuda":
        torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - t)


def forward_prestaged(source, inputs: list, batch_size: int) -> float:
    """Rows/s of the model's forward alone, on batches collated and moved to its device beforehand."""
    order = np.argsort([-len(t) for t in inputs], kind="stable") if isinstance(inputs[0], str) else np.arange(len(inputs))

    def staged(b):
        return {k: v.to(source.device) for k, v in b.items()} if isinstance(b, dict) else b.to(source.device)

    batches = [staged(source.collate([inputs[j] for j in order[i:i + batch_size]]))
               for i in range(0, len(order), batch_size)]
    if source.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for b in batches:
        source.forward(b)
    if source.device.type == "cuda":
        torch.cuda.synchronize()
    return len(inputs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--split", default="train")
    ap.add_argument("--source", default="minilm")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--prestaged", action="store_true", help="baseline: the forward alone on pre-staged batches")
    ap.add_argument("--write")
    args = ap.parse_args()

    device = resolve_device(args.device)
    texts = list(load_dataset(args.dataset).split(args.split).inputs[: args.rows])
    source = load_source(args.source).to(device)
    baseline = forward_prestaged if args.prestaged else forward_only
    baseline(source, texts[: args.batch_size * 2], args.batch_size)  # warm-up
    raw = baseline(source, texts, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExtractConfig(dataset=args.dataset, sources=(args.source,), splits=(args.split,), limit=args.rows,
                            cache_dir=tmp, batch_size=args.batch_size, device=args.device)
        t = time.perf_counter()
        extract(cfg)
        e2e = args.rows / (time.perf_counter() - t)  # includes loading the model: the honest number
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ×{torch.get_num_threads()} threads"
    name = args.source.rsplit("/", 1)[-1] + (" (vs pre-staged forward)" if args.prestaged else "")
    line = (f"| {datetime.date.today()} | {name} | {args.dataset}/{args.split} {args.rows} rows | {dev} | "
            f"{raw:,.0f} | {e2e:,.0f} | {e2e / raw:.2f} |")
    print(line)
    if args.write:
        append_rows(args.write, "extract_speed", [line])


if __name__ == "__main__":
    main()
