"""Random-batch read speed of a feature store vs the same array in RAM (docs/design.md §3).

    python benchmarks/read_speed.py [--store cache/sst2/minilm] [--rows 67349 --dim 384] [--write BENCHMARKS.md]

Without --store it builds zarr and HDF5 stores of random fp16 rows of the given shape in a temp dir
(the shape of SST-2 × MiniLM), with the default shard size. Reads are batches of 128 uniformly random
rows, as a training loop asks for them; the page cache is warm (the store fits in RAM), which is the
steady state of a multi-epoch run.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import numpy as np

from _markdown import append_rows

from aftpipe.extraction import default_shard_rows
from aftpipe.store import SplitPlan, make_writer, open_features


def rows_per_s(read, n: int, batches: int, batch: int = 128, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, n, batch) for _ in range(batches)]
    for b in idx[: batches // 10]:  # warm-up: page cache, allocator
        read(b)
    t = time.perf_counter()
    for b in idx:
        read(b)
    return batch * batches / (time.perf_counter() - t)


def build(path: Path, fmt: str, x: np.ndarray) -> Path:
    w = make_writer(path, fmt, key={"bench": True}, provenance={}, dtype="float16", chunk_rows=256,
                    shard_rows=default_shard_rows(x.shape[1], "float16"), overwrite=True)
    w.open()
    w.plan_split("train", SplitPlan(len(x), x.shape[1], np.arange(len(x)), "bench"))
    w.begin()
    for i, a in enumerate(range(0, len(x), w.shard_rows)):
        w.write_shard("train", i, x[a:a + w.shard_rows])
    w.finish({})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", action="append", help="existing store(s) to read; default: build zarr + hdf5")
    ap.add_argument("--split", default="train")
    ap.add_argument("--rows", type=int, default=67349)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batches", type=int, default=5000)
    ap.add_argument("--write", help="append the results as table rows to this Markdown file")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp())
    if args.store:
        stores = [Path(s) for s in args.store]
    else:
        x = np.random.default_rng(0).standard_normal((args.rows, args.dim)).astype(np.float16)
        stores = [build(tmp / "zarr", "zarr", x), build(tmp / "h.h5", "hdf5", x)]
    lines = []
    for p in stores:
        st = open_features(p)
        arr = st.split(args.split, verify=True)
        ram = arr.to_memory()
        in_ram = np.ascontiguousarray(ram[np.arange(len(arr))])  # a plain ndarray, the fastest baseline
        # alternate the two, twice, so machine noise hits both alike; report the medians
        r_ram, r_map = [], []
        for rep in range(2):
            r_ram.append(rows_per_s(lambda b: in_ram[b], len(arr), args.batches, seed=rep))
            r_map.append(rows_per_s(lambda b: arr[b], len(arr), args.batches, seed=rep))
        ram_rate, map_rate = float(np.median(r_ram)), float(np.median(r_map))
        shards = len(next(iter(st.manifest["splits"].values()))["shards"])
        fmt = st.manifest["key"]["storage"]["format"]
        line = (f"| {datetime.date.today()} | {fmt} | {arr.shape[0]}×{arr.shape[1]} {arr.dtype} | {shards} | "
                f"{ram_rate / 1e6:.2f}M | {map_rate / 1e6:.2f}M | {map_rate / ram_rate:.2f} |")
        print(line, flush=True)
        lines.append(line)
    if args.write:
        append_rows(args.write, "read_speed", lines)


if __name__ == "__main__":
    main()
