"""Where an extraction's time goes: cProfile over one whole `aftpipe.extract` call, torch.profiler over its forward.

    python benchmarks/profile_extract.py [--rows 8192 --batch-size 256 --threads 2] [--write BENCHMARKS.md]

In a fresh process: the imports the command line pays for a transformers source, then one `extract` of the
first `--rows` SST-2 train rows into a temporary zarr store with tokenising in the main process (workers=0,
so cProfile sees it), split into its phases (dataset, model load, weights hash, batching, tokenising,
forward, manifest; shards are written by a background thread, which cProfile does not see). Run with
PYTHONPATH pointing at another checkout, it profiles that version (the "before" rows). Then the same batches' forward again under torch.profiler: the operators with
the most self CPU time. `--write` appends both summaries to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import pstats
import tempfile
import time

t_start = time.perf_counter()
import torch  # noqa: E402
from _markdown import machine

from aftpipe import cli, extraction  # noqa: E402,F401
from aftpipe.sources import hf  # noqa: E402

# what loading a transformers model imports, as the source loads it (older aftpipe versions hid nothing)
with getattr(hf, "hiding", lambda *_: contextlib.nullcontext())(*getattr(hf, "UNUSED_BY_TEXT_MODELS", ())):
    import transformers.modeling_utils  # noqa: E402,F401
    from transformers.models.bert import modeling_bert  # noqa: E402,F401
IMPORTS_S = time.perf_counter() - t_start

# phase → the functions whose cumulative time it is (the first match of each, by file and name)
PHASES = {
    "dataset load + fingerprint": [("aftpipe/data/__init__.py", "load_dataset"), ("aftpipe/data/base.py", "fingerprint")],
    "model + tokenizer load": [("transformers/modeling_utils.py", "from_pretrained"),
                               ("transformers/models/auto/tokenization_auto.py", "from_pretrained")],
    "weights sha256": [("aftpipe/sources/base.py", "weights_sha256")],
    "batching by token count": [("aftpipe/extraction.py", "shard_batches")],
    "tokenising (collate)": [("aftpipe/sources/hf.py", "collate")],
    "forward": [("aftpipe/sources/hf.py", "forward")],
    "manifest (shards: a writer thread)": [("aftpipe/store/base.py", "finish")],
}


def phase_times(stats: pstats.Stats) -> dict[str, float]:
    out = {}
    for phase, funcs in PHASES.items():
        total = 0.0
        for file, name in funcs:
            for (path, _, fn), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
                if fn == name and path.replace("\\", "/").endswith(file):
                    total += cum
                    break
        out[phase] = total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--label", default="")
    ap.add_argument("--write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from torch.profiler import ProfilerActivity, profile

    from aftpipe.config import ExtractConfig
    from aftpipe.data import load_dataset
    from aftpipe.sources import load_source

    prof = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExtractConfig(dataset="sst2", sources=("minilm",), splits=("train",), limit=args.rows, cache_dir=tmp,
                            batch_size=args.batch_size, workers=0)
        t = time.perf_counter()
        prof.runcall(extraction.extract, cfg)
        wall = time.perf_counter() - t
    phases = phase_times(pstats.Stats(prof))
    phases["other"] = wall - sum(phases.values())
    print(f"imports {IMPORTS_S:.1f} s, then extract {wall:.1f} s ({args.rows / wall:,.0f} ex/s):")
    for k, v in phases.items():
        print(f"  {k:40s} {v:6.2f} s  {100 * v / wall:5.1f}%")

    split = load_dataset("sst2").split("train")
    source = load_source("minilm")
    batches = extraction.shard_batches(split, source, 0, args.rows, args.batch_size)[:8]
    with profile(activities=[ProfilerActivity.CPU]) as tp:
        for rows in batches:
            source.forward(source.collate([split.inputs[i] for i in rows]))
    ops = sorted(tp.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    if args.write:
        from _markdown import append_rows

        host = machine()
        share = ", ".join(f"{k} {100 * v / wall:.0f}%" for k, v in phases.items())
        top = ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in ops[: args.top])
        append_rows(args.write, "profile_extract", [
            f"| {datetime.date.today()} | {host} | {args.label or '-'} | sst2/train {args.rows:,} rows, batch "
            f"{args.batch_size}, {args.threads} threads | {IMPORTS_S:.1f} | {wall:.1f} | {share} | {top} |"])


if __name__ == "__main__":
    main()
