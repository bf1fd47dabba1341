"""Source strength → student accuracy (the AFT paper's Fig. 1c), from a finished pipeline's results.

    python benchmarks/source_strength.py --pipeline sources-strength --plot benchmarks/figures/sources-strength.png

Reads `results/<pipeline>/results.csv` (the final runs of `aftpipe run`), takes each source set's linear
probe as its strength and prints one markdown table: a row per source set, weakest first, with the probe
and each method's test mean ± std over seeds (the methods without a source, `none`, in every row). The plot
has the probe's accuracy on x and the student's on y, one line per method with its seed std as bars and
`none` as a band: if a stronger source makes a stronger student, a method's line rises.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

PROBE = "linear_probe"


def load(results: Path) -> dict[tuple[str, str], list[float]]:
    """(method, sources) → test scores of its seeds, from a pipeline's results.csv."""
    if not results.is_file():
        raise SystemExit(f"error: no {results}; run `aftpipe run pipelines/{results.parent.name}.yaml` first")
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    with results.open(newline="") as f:
        for row in csv.DictReader(f):
            scores[row["method"], row["sources"]].append(float(row["test"]))
    return scores


def summarise(scores: dict[tuple[str, str], list[float]]) -> tuple[list[tuple[str, float]], dict[str, dict]]:
    """Source sets ordered by their probe (weakest first), and method → source set → (mean, std, n)."""
    probes = sorted(((s, float(np.mean(v))) for (m, s), v in scores.items() if m == PROBE), key=lambda p: p[1])
    table: dict[str, dict[str, tuple[float, float, int]]] = defaultdict(dict)
    for (method, sources), v in scores.items():
        if method != PROBE:
            table[method][sources] = (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
    return probes, table


def markdown(probes: list[tuple[str, float]], table: dict[str, dict]) -> str:
    methods = list(table)
    lines = ["| φ (weakest first) | probe on φ | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for sources, probe in probes:
        cells = []
        for m in methods:
            # `none` reads no features (it ran once, on the pipeline's first set): the same in every row
            got = next(iter(table[m].values())) if m == "none" else table[m].get(sources)
            cells.append("–" if got is None else f"{100 * got[0]:.2f} ± {100 * got[1]:.2f}")
        lines.append(f"| {sources} | {100 * probe:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(probes: list[tuple[str, float]], table: dict[str, dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = np.array([100 * p for _, p in probes])
    for method, rows in table.items():
        if method == "none":
            mean, std, _ = next(iter(rows.values()))
            ax.axhspan(100 * (mean - std), 100 * (mean + std), color="grey", alpha=0.2)
            ax.axhline(100 * mean, color="grey", lw=1, label=f"{method} (± std)")
            continue
        pts = [(100 * p, rows[s]) for s, p in probes if s in rows]
        ax.errorbar([x for x, _ in pts], [100 * r[0] for _, r in pts], yerr=[100 * r[1] for _, r in pts],
                    marker="o", capsize=3, label=method)
    ax.plot(xs, xs, ls=":", color="black", lw=0.8, label="student = probe")
    for (name, _), x in zip(probes, xs):
        ax.annotate(name, (x, ax.get_ylim()[0]), textcoords="offset points", xytext=(2, 4), fontsize=7, rotation=90)
    ax.set_xlabel("linear probe on φ, test accuracy (%)")
    ax.set_ylabel("student, test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", default="sources-strength", help="a finished pipeline's name (results/<name>)")
    ap.add_argument("--results-dir", type=Path, default=Path("results"))
    ap.add_argument("--plot", type=Path, help="write the figure here (PNG)")
    args = ap.parse_args()
    probes, table = summarise(load(args.results_dir / args.pipeline / "results.csv"))
    print(markdown(probes, table))
    if args.plot:
        plot(probes, table, args.plot, f"{args.pipeline}: source strength → student (mean ± std over seeds)")
        print(f"\n{args.plot}")


if __name__ == "__main__":
    main()
