"""A smaller SST-2 for the source-strength experiment: a seeded sample of the training sentences, the dev set whole.

    python benchmarks/sst2_pool.py --rows 3000 --out cache/sst2-3k    # → cache/sst2-3k/{train,test}.tsv

all-mpnet-base-v2 (110M parameters) embeds ~15 SST-2 sentences a second on 2 CPU cores, so all 67,349 training
sentences would take 75 minutes. Every source of `pipelines/sources-strength.yaml` reads this one folder
(`dataset: tsv:cache/sst2-3k`) instead, so each is compared on the same rows: the labeled budget and the
unlabeled transfer set both come from the sample, and the test split is SST-2's dev set (872 sentences), as
everywhere else in the benchmarks. The rows are drawn with a fixed seed and kept in the file's order, and a
file is rewritten only when its bytes would change, so stores built from the folder stay valid across reruns.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

SEED = 0


def sample_lines(lines: list[str], rows: int, seed: int = SEED) -> list[str]:
    """The header and `rows` data lines drawn without replacement, in the file's order."""
    header, data = lines[0], lines[1:]
    if not 0 < rows <= len(data):
        raise SystemExit(f"error: --rows {rows} is not between 1 and the {len(data)} training sentences; pick a "
                         "size in that range")
    keep = np.sort(np.random.default_rng(seed).choice(len(data), rows, replace=False))
    return [header, *(data[i] for i in keep)]


def write_if_changed(path: Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=3000, help="training sentences to keep (default 3000)")
    ap.add_argument("--out", type=Path, default=Path("cache/sst2-3k"), help="folder for train.tsv and test.tsv")
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("AFTPIPE_DATA_DIR", "../shared/data")),
                    help="folder holding sst2/train.tsv and sst2/dev.tsv (default: $AFTPIPE_DATA_DIR, else ../shared/data)")
    args = ap.parse_args()
    source = args.data_dir / "sst2"
    if not (source / "train.tsv").is_file() or not (source / "dev.tsv").is_file():
        raise SystemExit(f"error: no SST-2 at {source} (train.tsv, dev.tsv); pass --data-dir with the folder that "
                         "holds sst2/")
    args.out.mkdir(parents=True, exist_ok=True)
    train = (source / "train.tsv").read_text(encoding="utf-8").splitlines()
    write_if_changed(args.out / "train.tsv", sample_lines(train, args.rows))
    write_if_changed(args.out / "test.tsv", (source / "dev.tsv").read_text(encoding="utf-8").splitlines())
    print(f"{args.out}: {args.rows} of SST-2's {len(train) - 1} training sentences (seed {SEED}), its dev set as test")


if __name__ == "__main__":
    main()
