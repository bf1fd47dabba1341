"""`aftpipe distill` on the datasets of its targets, several seeds each, beside model2vec + logistic regression.

    python benchmarks/distill_quality.py [--datasets sst2-2k agnews-6k cola] [--seeds 3] [--threads 2]
                                         [--out models/bench-distill] [--write BENCHMARKS.md]

Each dataset is one `aftpipe distill` (its own process, timed) with three student learning rates, so that every
report lists, per candidate (lr, views) at seed 0, its hold-out score, its agreement with the teacher and its
test score: from them this script tells which criterion would have chosen the better test score. A finished
folder under --out is continued, not redone (distill's stages are cached), so a second call only measures.

The model2vec baseline: a static embedding table distilled from the same MiniLM folder (model2vec's `distill`,
PCA to 256 dimensions) and scikit-learn's logistic regression on the same labeled rows (C chosen on the same
hold-out), one fit per label draw (`--data-seed` 0, 1, 2). model2vec's `distill` pins an older transformers than
aftpipe's, so it runs in a virtualenv of its own, `.venv-m2v`, made here once: it installs `model2vec[distill]`
from PyPI and sees this environment's packages behind its own (torch is not downloaded twice). The table it
writes is read with this environment's model2vec, which needs none of that.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np
from _markdown import machine, replace_block

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"sst2-2k": ["--dataset", "sst2", "--labels", "2000"], "agnews-6k": ["--dataset", "ag_news"],
            "cola": ["--dataset", "cola"]}
LRS = ("3e-3", "1e-2", "3e-2")
M2V_VENV = REPO / ".venv-m2v"
M2V_PACKAGE = "model2vec[distill]==0.10.0"
M2V_DIMS = 256
DRAWS = (0, 1, 2)  # label draws of the model2vec baseline (an LR fit has no seed of its own)
# gap allowed between student and teacher, in the metric's own units: 1.5 points of accuracy, 0.03 MCC
WITHIN = {"accuracy": 0.015, "mcc": 0.03}


def run_distill(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], float, list[str]]:
    out = Path(args.out) / name
    cmd = [sys.executable, "-m", "aftpipe", "distill", *DATASETS[name], "--seeds", str(args.seeds),
           *[a for lr in LRS for a in ("--student-lr", lr)], "--threads", str(args.threads), "--out", str(out), "--quiet"]
    t = time.perf_counter()
    done = subprocess.run(cmd, check=False, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {done.returncode}")
    shown = ["aftpipe", *cmd[3:]]
    return json.loads((out / "report.json").read_text()), time.perf_counter() - t, shown


# --- model2vec + logistic regression ----------------------------------------------------------------------
def m2v_python() -> Path:
    """`.venv-m2v`'s python, the venv made (once) with model2vec's distill extra over this environment."""
    python = M2V_VENV / "bin" / "python"
    if (M2V_VENV / ".installed").exists():
        return python
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(M2V_VENV)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # this environment's packages behind the venv's own: pip finds torch installed and installs only what differs
    Path(site, "aftpipe-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", M2V_PACKAGE], check=True)
    (M2V_VENV / ".installed").touch()
    return python


def m2v_model(folder: Path) -> tuple[Path, float]:
    """model2vec distilled from the installed MiniLM into `folder` (kept: a second call reuses it); seconds."""
    from aftpipe.sources import minilm_dir

    if (folder / "model.safetensors").exists():
        return folder, math.nan
    code = ("import sys; from model2vec.distill import distill; "
            f"distill(model_name=sys.argv[1], pca_dims={M2V_DIMS}).save_pretrained(sys.argv[2])")
    t = time.perf_counter()
    subprocess.run([str(m2v_python()), "-c", code, str(minilm_dir()), str(folder)], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""})
    return folder, time.perf_counter() - t


class StaticClassifier:
    """A model2vec table and a fitted logistic regression, with the `logits` that aftpipe's throughput times."""

    def __init__(self, model: Any, head: Any) -> None:
        self.model, self.head = model, head

    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.head.decision_function(self.model.encode(texts, batch_size=batch_size))


def m2v_baseline(model_dir: Path, spec: list[str], labels: int | None) -> dict[str, Any]:
    """Test metric per label draw, parameters and sentences/s of model2vec + LR on `spec`'s dataset."""
    from model2vec import StaticModel
    from sklearn.linear_model import LogisticRegression

    from aftpipe.config import DatasetOptions
    from aftpipe.data import load_dataset
    from aftpipe.distillation import BENCH_ROWS, throughput
    from aftpipe.features import plan_rows
    from aftpipe.metrics import score

    model = StaticModel.from_pretrained(str(model_dir))
    ds = load_dataset(spec[spec.index("--dataset") + 1], None, DatasetOptions())
    train, test = ds.split("train"), ds.test()
    x_test = model.encode(list(test.inputs))
    values, clf = [], None
    for draw in DRAWS:
        rows = plan_rows(np.arange(len(train)), train.labels, labels, 0.1, draw)
        x_tr, x_ho = (model.encode([train.inputs[int(i)] for i in r]) for r in (rows.train, rows.holdout))
        fits = [LogisticRegression(C=c, max_iter=2000).fit(x_tr, train.labels[rows.train]) for c in (0.1, 1.0, 10.0)]
        clf = max(fits, key=lambda f: score(f.predict(x_ho), train.labels[rows.holdout], ds.metric)[ds.metric])
        values.append(score(clf.predict(x_test), test.labels, ds.metric)[ds.metric])
    inputs = list(test.inputs[:BENCH_ROWS[64]])
    static = StaticClassifier(model, clf)
    params = int(np.prod(model.embedding.shape)) + clf.coef_.size + clf.intercept_.size
    return {"values": values, "params": params,
            **{f"per_s_batch{b}": throughput(static, inputs, b, n) for b, n in BENCH_ROWS.items()}}


# --- the write-up -----------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def picked(candidates: list[dict[str, Any]], by: str) -> dict[str, Any]:
    from aftpipe.distillation import choose

    return choose(candidates, by)


def section(name: str, report: dict[str, Any], wall: float, cmd: list[str], m2v: dict[str, Any]) -> list[str]:
    rows = {r["model"]: r for r in report["rows"]}
    metric = report["metric"]
    lines = [(f"#### {name}: `{' '.join(cmd)}` — {wall / 60:.1f} min (cached stages free), "
             f"{'every label' if report['labels'] == 'every' else str(report['labels']) + ' labels'}, "
             f"views tried {report.get('views_tried', [report['views']])}, chosen {report['views']}"), "",
             f"| model | test {metric}, mean ± std | values | parameters | sentences/s at batch 1 | at batch 64 |",
             "|---|---|---|---|---|---|"]
    for key in ("student", "teacher", "probe", "none"):
        if key in rows:
            r = rows[key]
            lines.append(f"| {r['what']} | {mean_std(r['values'])} | {', '.join(f'{v:.4f}' for v in r['values'])} | "
                         f"{r['params']:,} | {r['per_s_batch1']:,.0f} | {r['per_s_batch64']:,.0f} |")
    lines.append(f"| model2vec (MiniLM, {M2V_DIMS} dims) + logistic regression, label draws {list(DRAWS)} | "
                 f"{mean_std(m2v['values'])} | {', '.join(f'{v:.4f}' for v in m2v['values'])} | {m2v['params']:,} | "
                 f"{m2v['per_s_batch1']:,.0f} | {m2v['per_s_batch64']:,.0f} |")
    student = statistics.mean(rows["student"]["values"])
    teacher, probe = rows["teacher"]["test"], rows["probe"]["test"]
    m2v_mean = statistics.mean(m2v["values"])
    unit, scale = ("points", 100) if metric == "accuracy" else ("MCC", 1)

    def verdict(ok: bool, by: float) -> str:
        return "**met**" if ok else f"missed by {abs(by) * scale:.{1 if scale == 100 else 3}f} {unit}"

    gap = teacher - student
    lines += ["", (f"Targets: (a) ≥ the frozen probe: {verdict(student >= probe, student - probe)}; (b) within "
                  f"{WITHIN[metric] * scale:g} {unit} of the teacher ({gap * scale:.{1 if scale == 100 else 3}f} "
                  f"below): {verdict(gap <= WITHIN[metric], gap - WITHIN[metric])}; (c) ahead of model2vec + LR: "
                  f"{verdict(student > m2v_mean, student - m2v_mean)}.")]
    cands = report["candidates"]
    lines += ["", "| lr | views | hold-out | agreement | test (seed 0) | chosen by hold-out | by agreement |",
              "|---|---|---|---|---|---|---|"]
    by_h, by_a = picked(cands, "holdout"), picked(cands, "agreement")
    for c in cands:
        agreed = "–" if math.isnan(c["agreement"]) else f"{c['agreement']:.4f}"
        lines.append(f"| {c['lr']:g} | {c.get('views', 1)} | {c['holdout']:.4f} | {agreed} | {c['test']:.4f} | "
                     f"{'yes' if c is by_h else ''} | {'yes' if c is by_a else ''} |")
    stages = ", ".join(f"{k} {v.get('wall_s', 0):.0f}s" for k, v in report["stages"].items())
    lines += ["", f"Stage times when first computed: {stages}.", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="models/bench-distill")
    ap.add_argument("--write", help="BENCHMARKS.md: replace its distill-quality block")
    args = ap.parse_args()
    model_dir, m2v_s = m2v_model(Path(args.out) / f"model2vec-minilm-{M2V_DIMS}")
    lines = [f"{datetime.date.today()}, {machine()}, torch threads {args.threads}; "
             f"`python benchmarks/distill_quality.py --datasets {' '.join(args.datasets)} --seeds {args.seeds} "
             f"--threads {args.threads}` (`make bench-distill`). model2vec's distillation from MiniLM: "
             + (f"{m2v_s:.0f} s" if not math.isnan(m2v_s) else "reused") + ".", ""]
    summary = []
    for name in args.datasets:
        report, wall, cmd = run_distill(name, args)
        labels = int(DATASETS[name][DATASETS[name].index("--labels") + 1]) if "--labels" in DATASETS[name] else None
        m2v = m2v_baseline(model_dir, DATASETS[name], labels)
        lines += section(name, report, wall, cmd, m2v)
        cands = report["candidates"]
        summary.append((name, picked(cands, "holdout")["test"], picked(cands, "agreement")["test"]))
    lines += ["Which criterion chose the better test score (seed 0): "
              + "; ".join(f"{n}: hold-out {h:.4f}, agreement {a:.4f}" for n, h, a in summary) + "."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        replace_block(args.write, "distill-quality", text)


if __name__ == "__main__":
    main()
