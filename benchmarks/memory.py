"""Peak memory of `aftpipe extract` and `aftpipe train` on SST-2, and whether extraction's grows with the rows.

    python benchmarks/memory.py --store cache/sst2/minilm [--small 8192] [--threads 1] [--write BENCHMARKS.md]

Each command runs as its own process; its peak resident set size comes from wait4 (the process and the
DataLoader workers it waited for, whichever was largest). "extract, N rows" is `aftpipe extract --splits
train,dev --limit N` into a fresh store (every dev row, and the first N train rows: the whole split without a
limit); "train" is one epoch of `aftpipe train --method aft` on every labeled SST-2 row against `--store`.
Extraction streams its rows shard by shard, so its peak must not grow with the dataset: the benchmark prints
the ratio of the two extraction peaks (goal: within ±10%).

The growth check runs all-MiniLM-L6-v2 cut to its first layer (its real tokenizer, embeddings and layer 1,
saved to a temporary folder): the same 384-wide rows through the same dataset, tokenising, shards and writer,
at a sixth of the forward's cost, so that 67k rows take minutes on one CPU core. The full model's peak at
`--small` rows is measured too, for the absolute figure (`--full-model-large` adds it at all 67,349 rows).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _markdown import machine

REPO = Path(__file__).resolve().parents[1]


def peak(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of `cmd`."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd[2:6])} failed:\n{err[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t


def one_layer_minilm(out: Path) -> Path:
    """all-MiniLM-L6-v2 with its encoder cut to the first layer, saved as a model folder."""
    from transformers import AutoModel, AutoTokenizer

    from aftpipe.sources import minilm_dir

    model = AutoModel.from_pretrained(minilm_dir())
    model.encoder.layer = model.encoder.layer[:1]
    model.config.num_hidden_layers = 1
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="cache/sst2/minilm", help="an SST-2 MiniLM store for the train run")
    ap.add_argument("--small", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full-model-large", action="store_true", help="also extract all rows with the full model")
    ap.add_argument("--write")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    aft = [sys.executable, "-m", "aftpipe.cli"]
    rows: list[tuple[str, float, float]] = []

    def extract(source: str, label: str, limit: int | None, tmp: str) -> float:
        cmd = [*aft, "extract", "--dataset", "sst2", "--source", source, "--splits", "train,dev", "--quiet",
               "--cache-dir", str(Path(tmp) / f"cache-{label}-{limit}"), *(["--limit", str(limit)] if limit else [])]
        mib, wall = peak(cmd, env)
        rows.append((f"extract, {label}, {limit or 67349:,} train + 872 dev rows", mib, wall))
        print(rows[-1], flush=True)
        return mib

    with tempfile.TemporaryDirectory() as tmp:
        cut = f"hf:{one_layer_minilm(Path(tmp) / 'minilm-1-layer')}"
        small, large = (extract(cut, "MiniLM cut to 1 layer", limit, tmp) for limit in (args.small, None))
        for limit in (args.small, None) if args.full_model_large else (args.small,):
            extract("minilm", "MiniLM", limit, tmp)
        cmd = [*aft, "train", "--dataset", "sst2", "--features", args.store, "--method", "aft", "--beta", "0.3",
               "--epochs", "1", "--threads", str(args.threads), "--out", str(Path(tmp) / "run"), "--quiet"]
        mib, wall = peak(cmd, env)
        rows.append(("train, aft, 1 epoch over 60,614 train rows", mib, wall))
        print(rows[-1], flush=True)
    growth = large / small - 1
    print(f"extraction peak: {small:.0f} MiB at {args.small:,} rows, {large:.0f} MiB at 67,349 ({growth:+.1%})")
    if args.write:
        from _markdown import append_rows

        host = machine()
        append_rows(args.write, "memory", [
            f"| {datetime.date.today()} | {host} | {args.threads} | {what} | {mib:,.0f} | {wall:.0f} |"
            for what, mib, wall in rows]
            + [f"| {datetime.date.today()} | {host} | {args.threads} | extraction peak, 67,349 vs {args.small:,} "
               f"train rows (MiniLM cut to 1 layer) | **{growth:+.1%}** | – |"])


if __name__ == "__main__":
    main()
