"""Reports of a pipeline: run records → results.csv rows, a Markdown table, a bar plot.

Pure functions over `RunRecord`s, so they are tested on synthetic records without training anything:

    rec = record_of(read_result("runs/demo/aft-minilm-textcnn-b0.1-lr0.001-s0"),
                    method="aft", sources="minilm", student="textcnn", beta=0.1, lr=1e-3, seed=0)
    rows = csv_rows([rec, ...])          # one dict per run, columns RESULT_COLUMNS
    text = markdown_report(final, tuning, title="demo")
    png = plot_png(final, title="demo")  # bytes; Agg backend, no display needed

A group is (method, sources, student, β, lr): its seeds are summarised as mean ± sample std (ddof=1, the
spread one expects from a new seed; 0 for a single seed). The tables show a std only over at least
`MIN_SEEDS_FOR_STD` seeds (fewer give a number that says little: "n=2: no std"). Groups keep the order in
which they first appear, which is the order of the pipeline file, so tables read like the YAML that
produced them. The plot (PNG at 200 dpi and SVG) shows each group's mean and std and every seed as a point.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aftpipe.rundir import RunResult

MIN_SEEDS_FOR_STD = 3  # below this a table shows the mean alone

RESULT_COLUMNS = ["method", "sources", "student", "params", "beta", "lr", "seed", "metric", "test", "holdout",
                  "ms_per_step", "wall_s", "steps", "foundation_params", "sigma", "reg_last", "reg_floor", "run"]


@dataclass(frozen=True)
class RunRecord:
    """One finished training run, as the reports need it (everything else stays in its metrics.json)."""

    method: str
    sources: str  # the pipeline's source-set name (`minilm`, `minilm+tfidf`)
    student: str
    beta: float
    lr: float
    seed: int
    metric: str  # accuracy | mcc: which test/holdout score this is
    test: float
    holdout: float
    params: int  # the student's parameters; for the probe, the foundation model's plus the head's
    foundation_params: int = 0
    ms_per_step: float = math.nan
    wall_s: float = math.nan
    steps: int = 0
    sigma: dict[str, float] = field(default_factory=dict)  # AFT: mean σ(s) per source store
    reg_last: float = math.nan  # the transfer term on hold-out batches at the last evaluation
    reg_floor: float = math.nan  # AFT: the same for a student that learned nothing (identity kernel)
    run: str = ""
    is_probe: bool = False  # the linear probe: the reference line, not a bar


def record_of(result: RunResult, *, method: str, sources: str, student: str, beta: float, lr: float, seed: int,
              run: str = "") -> RunRecord:
    """A `RunRecord` from a finished run's result, with the pipeline's names for its setting."""
    reg = result.regulariser or {}
    return RunRecord(
        method=method, sources=sources, student=student, beta=float(beta), lr=float(lr), seed=int(seed),
        metric=result.metric, test=result.score, holdout=result.holdout_score, params=int(result.params or 0),
        foundation_params=int(result.foundation_params or 0), ms_per_step=float(result.ms_per_step),
        wall_s=float(result.wall_s), steps=int(result.steps or 0), sigma=result.sigma, run=run,
        reg_last=float(reg.get("last", math.nan)), reg_floor=float(reg.get("floor_last", math.nan)),
        is_probe=result.is_probe,
    )


# --- CSV ---------------------------------------------------------------------------------------------------
def _num(x: float | int) -> str:
    if isinstance(x, int):
        return str(x)
    return "" if x is None or math.isnan(x) else f"{x:.10g}"


def csv_rows(records: Iterable[RunRecord]) -> list[dict[str, str]]:
    """One row per run, columns `RESULT_COLUMNS`, numbers as text (empty for NaN), in the given order."""
    rows = []
    for r in records:
        rows.append({
            "method": r.method, "sources": r.sources, "student": r.student, "params": _num(r.params),
            "beta": _num(r.beta), "lr": _num(r.lr), "seed": _num(r.seed), "metric": r.metric,
            "test": _num(r.test), "holdout": _num(r.holdout), "ms_per_step": _num(r.ms_per_step),
            "wall_s": _num(r.wall_s), "steps": _num(r.steps), "foundation_params": _num(r.foundation_params),
            "sigma": " ".join(f"{k}={v:.4f}" for k, v in r.sigma.items()), "reg_last": _num(r.reg_last),
            "reg_floor": _num(r.reg_floor), "run": r.run,
        })
    return rows


def csv_text(records: Iterable[RunRecord]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(csv_rows(records))
    return buf.getvalue()


# --- summaries ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """One (method, sources, student, β, lr) over its seeds."""

    method: str
    sources: str
    student: str
    beta: float
    lr: float
    metric: str
    mean: float
    std: float  # sample std over seeds (ddof=1); 0 for one seed
    n: int
    params: int
    ms_per_step: float  # mean over seeds
    wall_s: float  # mean per run
    sigma: dict[str, float]  # mean over seeds, per source
    reg_last: float  # mean over seeds
    reg_floor: float
    is_probe: bool = False


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value); NaN for none."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = sum(values) / n
    if n == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def summarize(records: Iterable[RunRecord]) -> list[Summary]:
    """Group the records by (method, sources, student, β, lr), keeping first-appearance order."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.method, r.sources, r.student, r.beta, r.lr), []).append(r)
    out = []
    for (method, sources, student, beta, lr), rs in groups.items():
        mean, std = mean_std([r.test for r in rs])
        stores = list(dict.fromkeys(k for r in rs for k in r.sigma))
        out.append(Summary(
            method=method, sources=sources, student=student, beta=beta, lr=lr, metric=rs[0].metric,
            mean=mean, std=std, n=len(rs), params=rs[0].params,
            ms_per_step=_nanmean([r.ms_per_step for r in rs]), wall_s=_nanmean([r.wall_s for r in rs]),
            sigma={k: _nanmean([r.sigma[k] for r in rs if k in r.sigma]) for k in stores},
            reg_last=_nanmean([r.reg_last for r in rs]), reg_floor=_nanmean([r.reg_floor for r in rs]),
            is_probe=rs[0].is_probe,
        ))
    return out


# --- Markdown ----------------------------------------------------------------------------------------------
METRIC_LABEL = {"accuracy": "accuracy", "mcc": "MCC"}


def _fmt(x: float, spec: str = ".4f") -> str:
    return "–" if x is None or math.isnan(x) else format(x, spec)


def _std(s: Summary) -> str:
    return _fmt(s.std) if s.n >= MIN_SEEDS_FOR_STD else f"– (n={s.n}: no std)"


def gap_closed(s: Summary, summaries: Sequence[Summary], baseline: str | None = None) -> float:
    """The share of the gap from `none` to the linear probe (same sources, else the first probe) that group
    `s` closes: (mean − none) / (probe − none). `none` is the same student's, or with `baseline` the named
    student's (the plain student a quality push starts from). NaN for the probe, for the reference itself,
    or when a reference is missing or the two are equal."""
    student = baseline or s.student
    if s.is_probe or (s.method == "none" and s.student == student):
        return math.nan
    none = next((r for r in summaries if r.method == "none" and r.student == student), None)
    probes = [r for r in summaries if r.is_probe]
    probe = next((r for r in probes if r.sources == s.sources), probes[0] if probes else None)
    if none is None or probe is None or probe.mean == none.mean:
        return math.nan
    return (s.mean - none.mean) / (probe.mean - none.mean)


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.0f}%"


def results_table(final: Iterable[RunRecord]) -> str:
    """The main table: mean ± std of the test metric per group, transfer methods first, the probe last;
    "gap closed" is how far each student got from its own `none` towards the probe (`gap_closed`), and,
    when there are several students, "vs <first>" from the first student's `none`."""
    summaries = summarize(final)
    summaries = [s for s in summaries if not s.is_probe] + [s for s in summaries if s.is_probe]
    metric = METRIC_LABEL.get(summaries[0].metric, summaries[0].metric) if summaries else "metric"
    students = list(dict.fromkeys(s.student for s in summaries if not s.is_probe))
    first = students[0] if len(students) > 1 else None
    extra = f" gap vs {first} none |" if first else ""
    lines = [f"| method | sources | student | test {metric} (mean ± std) | gap closed |{extra} seeds | β | lr | params "
             "| ms/step | wall s/run | mean σ(s) per source | R / floor |",
             "|---|---|---|---|---|" + ("---|" if first else "") + "---|---|---|---|---|---|---|---|"]
    for s in summaries:
        sigma = ", ".join(f"{k} {v:.3f}" for k, v in s.sigma.items()) or "–"
        vs_first = f" {_pct(gap_closed(s, summaries, first))} |" if first else ""
        lines.append(
            f"| {s.method} | {s.sources} | {s.student} | {_fmt(s.mean)} ± {_std(s)} "
            f"| {_pct(gap_closed(s, summaries))} |{vs_first} {s.n} "
            f"| {'–' if s.is_probe else f'{s.beta:g}'} | {'–' if s.is_probe else f'{s.lr:g}'} | {s.params:,} "
            f"| {_fmt(s.ms_per_step, '.1f')} | {_fmt(s.wall_s, '.1f')} | {sigma} | {_reg(s)} |"
        )
    return "\n".join(lines)


def _reg(s: Summary) -> str:
    """The hold-out transfer term at the end of training, beside AFT's learned-nothing floor."""
    if math.isnan(s.reg_last):
        return "–"
    return f"{s.reg_last:.3f}" + ("" if math.isnan(s.reg_floor) else f" / {s.reg_floor:.3f}")


def tuning_table(tuning: Iterable[RunRecord], chosen: set[tuple[str, str, str, float, float]]) -> str:
    """Every tuning run's hold-out score; `chosen` holds the (method, sources, student, β, lr) kept."""
    lines = ["| method | sources | student | β | lr | hold-out | test | chosen |", "|---|---|---|---|---|---|---|---|"]
    for r in tuning:
        mark = "✓" if (r.method, r.sources, r.student, r.beta, r.lr) in chosen else ""
        lines.append(f"| {r.method} | {r.sources} | {r.student} | {r.beta:g} | {r.lr:g} | {_fmt(r.holdout)} "
                     f"| {_fmt(r.test)} | {mark} |")
    return "\n".join(lines)


def markdown_report(final: Sequence[RunRecord], tuning: Sequence[RunRecord], *, title: str,
                    intro: str = "") -> str:
    """results.md: the results table, then the tuning runs behind each chosen (β, lr)."""
    chosen = {(r.method, r.sources, r.student, r.beta, r.lr) for r in final}
    parts = [f"# {title}", ""]
    if intro:
        parts += [intro.strip(), ""]
    parts += ["## Results (test split, final runs)", "", results_table(final), ""]
    parts += ["`linear_probe` is the reference: a linear head on the cached features, so it needs the foundation "
              "model at inference (its params count that model). ms/step is the student's training step; "
              "wall s/run includes loading and evaluation.", ""]
    if tuning:
        parts += ["## Tuning (hold-out of the labeled rows, tuning seed)", "",
                  "The setting with the best hold-out score is kept (ties: the first in grid order); the test "
                  "column is shown for transparency and played no part in the choice.", "",
                  tuning_table(tuning, chosen), ""]
    return "\n".join(parts)


# --- plot ----------------------------------------------------------------------------------------------------
PLOT_DPI = 200  # ~1,100×840 px for a few bars: sharp in a README or a slide


def _figure(final: Sequence[RunRecord], title: str) -> Any:
    """A bar per group (mean test metric, std error bars, each seed a point); each linear probe is a dashed
    reference line."""
    # a bare Figure on the Agg canvas: no display, and no pyplot state to disturb in a notebook
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summaries = summarize(final)
    bars = [s for s in summaries if not s.is_probe]
    probes = [s for s in summaries if s.is_probe]
    # label each bar only by what varies between bars; what is constant goes into the title
    parts = [[s.method for s in bars], [s.sources for s in bars], [s.student for s in bars]]
    varying = [p for p in parts if len(set(p)) > 1] or [parts[0]]
    labels = ["\n".join(p[i] for p in varying) for i in range(len(bars))]
    metric = METRIC_LABEL.get(summaries[0].metric, summaries[0].metric) if summaries else "metric"

    fig = Figure(figsize=(max(5.0, 1.1 * len(bars) + 2), 4.2), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    xs = list(range(len(bars)))
    means = [s.mean for s in bars]
    stds = [s.std if s.n >= MIN_SEEDS_FOR_STD else math.nan for s in bars]
    ax.bar(xs, means, yerr=[0 if math.isnan(sd) else sd for sd in stds], capsize=4, color="#4C72B0",
           edgecolor="black", linewidth=0.6, alpha=0.85)
    per_seed = [[r.test for r in final if (r.method, r.sources, r.student, r.beta, r.lr) ==
                 (s.method, s.sources, s.student, s.beta, s.lr)] for s in bars]
    for x, values in zip(xs, per_seed):  # every seed a point, spread evenly across the middle of its bar
        offsets = [0.0] if len(values) == 1 else [-0.2 + 0.4 * i / (len(values) - 1) for i in range(len(values))]
        ax.scatter([x + o for o in offsets], values, s=14, color="black", zorder=3,
                   label="each seed" if x == 0 else None)
    for x, m, sd, values in zip(xs, means, stds, per_seed):  # the mean, above its error bar and its points
        top = max([m + (0 if math.isnan(sd) else sd), *values])
        ax.annotate(f"{m:.3f}", (x, top), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    fontsize=8)
    for i, p in enumerate(probes):
        ax.axhline(p.mean, linestyle="--", linewidth=1.2, color=f"C{(i + 1) % 10}",
                   label=f"linear probe ({p.sources}): {p.mean:.3f}")
    # zoom on the range the numbers live in: accuracy differences of a point are invisible from 0
    values = [m - (0 if math.isnan(sd) else sd) for m, sd in zip(means, stds)]
    values += [m + (0 if math.isnan(sd) else sd) for m, sd in zip(means, stds)] + [p.mean for p in probes]
    values += [v for vs in per_seed for v in vs]
    values = [v for v in values if not math.isnan(v)]
    if values:
        lo, hi = min(values), max(values)
        pad = 0.2 * (hi - lo) + 0.02
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel(f"test {metric} (mean ± std over seeds)")
    const = [p[0] for p in parts if p not in varying and p]
    ax.set_title(" · ".join([title] + const) if title else " · ".join(const), fontsize=10)
    if bars or probes:
        ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_png(final: Sequence[RunRecord], *, title: str = "") -> bytes:
    """The results plot as PNG bytes (Agg PNGs carry no timestamp: the same results give the same bytes)."""
    buf = io.BytesIO()
    _figure(final, title).savefig(buf, format="png")
    return buf.getvalue()


def plot_svg(final: Sequence[RunRecord], *, title: str = "") -> bytes:
    """The results plot as SVG: no date, and element ids salted by a constant, so it is deterministic too."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "aftpipe"}):
        _figure(final, title).savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


__all__ = ["MIN_SEEDS_FOR_STD", "RESULT_COLUMNS", "RunRecord", "Summary", "csv_rows", "csv_text", "markdown_report",
           "mean_std", "plot_png", "plot_svg", "record_of", "results_table", "summarize", "tuning_table"]
