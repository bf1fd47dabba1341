"""Running a pipeline: its training runs one after another, or `jobs` at a time in worker processes.

    run_pipeline("pipelines/demo.yaml", jobs=2)            # `aftpipe run --jobs 2`: extract, sweep, write results
    tuning, final = Sweep(plan, progress, jobs=2).run()     # the sweep alone, over a `PipelinePlan`

A group (method × sources × student) trains its tuning grid with `tune_seed`, picks the setting with the best
hold-out score, then trains that setting for every seed; groups are independent. The sweep keeps `jobs` runs
going, always starting the first run that may start in the pipeline's order (a group's tuning runs; its final
runs once every tuning run has finished; then the next group's). With one job that is the pipeline's order;
with more, other groups fill the cores while a group waits for its last tuning run.

Every run uses one CPU thread — for torch and for the BLAS under numpy/scikit-learn — unless the pipeline's
`train:` says `threads`, and that does not depend on `jobs`: torch's CPU reductions may round differently with
another thread count, and a run's numbers must not depend on how many ran beside it. So a sweep gives the same
numbers with any `--jobs`, and the parallelism is across runs, which suits small students (two one-thread runs
do about twice the work of one two-thread run on two cores, and far more when the machine is shared).

Workers are separate processes (spawned: each imports torch once, then trains run after run), so the runs do
not share Python's lock; each remembers the splits it has tokenised, as a sweep run in one process does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aftpipe import extraction, model, pipeline, report, rundir
from aftpipe.config import TrainConfig, flag_of
from aftpipe.errors import AftpipeError, Interrupted, option_hint, option_name, speaking_cli, speaking_to_cli
from aftpipe.fileio import write_if_changed
from aftpipe.progress import ETA_FIELD, LogProgress, Progress, SilentProgress, counting, default_progress, duration
from aftpipe.provenance import command, running_command
from aftpipe.recipes import train
from aftpipe.report import RunRecord, record_of
from aftpipe.rundir import RunResult
from aftpipe.tracking import check_trackers

MAX_DEFAULT_JOBS = 8  # a worker holds its own copy of torch and the dataset (~0.5-1 GB)


def default_jobs(device: str = "auto") -> int:
    """One job per usable CPU core (at most MAX_DEFAULT_JOBS); 1 when runs go to a GPU, which they would share."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_DEFAULT_JOBS))


@contextlib.contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """torch and the BLAS/OpenMP pools of numpy and scikit-learn use `threads` threads within this block."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def train_run(tc: TrainConfig, progress: Progress) -> RunResult:
    """Train one run of a sweep under its thread limit (see the module docstring); returns its result."""
    with thread_limit(tc.threads or 1):
        return train(tc, progress)


# --- worker processes ---------------------------------------------------------------------------------------
class _Prefixed:
    """A worker's progress lines, each led by its run's `[k/N]`, so concurrent runs' lines can be told apart."""

    def __init__(self, inner: Progress, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def start(self, label: str, total: int, done: int) -> None:
        self.inner.start(f"{self.prefix} {label}", total, done)

    def advance(self, n: int, **fields: Any) -> None:
        self.inner.advance(n, **fields)

    def finish(self) -> None:
        self.inner.finish()

    def log(self, message: str) -> None:
        self.inner.log(f"{self.prefix} {message}")


def _worker_init(command: str | None, cli: bool) -> None:
    """Each worker: Ctrl-C is the parent's to handle (it stops the workers); runs record the parent's command
    and name options as the parent's caller spells them."""
    import shlex
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    stack = contextlib.ExitStack()
    if command is not None:
        stack.enter_context(running_command(shlex.split(command)))
    if cli:
        stack.enter_context(speaking_to_cli(flag_of))
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = stack  # held for the worker's life: the context variables stay set


_WORKER_CONTEXT: contextlib.ExitStack | None = None


def _worker_train(tc: TrainConfig, prefix: str, log_every: float | None) -> RunResult:
    progress: Progress = SilentProgress() if log_every is None else _Prefixed(LogProgress(log_every, "step"), prefix)
    try:
        return train_run(tc, progress)
    except AftpipeError as e:  # as a plain AftpipeError: its subclasses need not survive pickling
        raise AftpipeError(f"{Path(tc.out).name}: {e}") from None


# --- the sweep ----------------------------------------------------------------------------------------------
@dataclass
class RunTimes:
    """The sweep's ETA from what its runs took: the mean measured time of the runs trained so far × the runs
    left, `jobs` at a time. Runs finished by an earlier sweep take no time and are not in the mean (counted by
    rate, they would make a sweep look nearly done); before any run has finished there is no estimate."""

    left: int
    jobs: int = 1
    seconds: list[float] = field(default_factory=list)

    def trained(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.left -= 1

    def reused(self) -> None:
        self.left -= 1

    def eta(self) -> float:
        """Seconds until the sweep is done; NaN while no run has been measured."""
        if not self.seconds:
            return float("nan")
        return sum(self.seconds) / len(self.seconds) * self.left / max(1, min(self.jobs, self.left))


@dataclass
class _GroupState:
    group: pipeline.Group
    todo: list[tuple[float, float, int]]  # (β, lr, seed) not yet started, in order
    tuning: dict[tuple[float, float], RunRecord] = field(default_factory=dict)
    final: dict[int, RunRecord] = field(default_factory=dict)
    running: int = 0
    started: bool = False
    tuned: bool = False


class Sweep:
    """Trains (or reads, when finished) every run of a `PipelinePlan`; `run()` returns the tuning and final
    records in the pipeline's order. `seen` maps each run met to `trained`, `reused` or `running`."""

    def __init__(self, plan: pipeline.PipelinePlan, progress: Progress, jobs: int = 1,
                 report_to: tuple[str, ...] = (), log_every: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.p, self.progress, self.jobs, self.report_to = plan, progress, max(1, int(jobs)), report_to
        self.log_every = log_every  # workers print plain progress lines at this interval (None: silent)
        self.clock = clock
        self.times = RunTimes(plan.total_runs, self.jobs)
        self.seen: dict[Path, str] = {}
        self.states = [_GroupState(g, self._first_runs(g)) for g in plan.groups]

    def _first_runs(self, g: pipeline.Group) -> list[tuple[float, float, int]]:
        if len(g.grid) > 1:
            return [(b, lr, self.p.cfg.tune_seed) for b, lr in g.grid]
        b, lr = g.grid[0]
        return [(b, lr, s) for s in self.p.cfg.seeds]

    def config(self, g: pipeline.Group, beta: float, lr: float, seed: int) -> TrainConfig:
        """The run's TrainConfig, with the trackers asked for on the command line and its thread count."""
        tc = self.p.train_config(g, beta, lr, seed)
        tc = dataclasses.replace(tc, threads=tc.threads or 1,
                                 report_to=tuple(dict.fromkeys(tc.report_to + self.report_to)))
        pipeline.check_reusable(Path(tc.out), tc)
        return tc

    # -- bookkeeping -----------------------------------------------------------------------------------------
    def _record(self, g: pipeline.Group, beta: float, lr: float, seed: int, result: RunResult,
                out: Path) -> RunRecord:
        return record_of(result, method=g.method, sources=g.sources, student=g.student, beta=beta, lr=lr,
                         seed=seed, run=str(out))

    def _done(self, st: _GroupState, beta: float, lr: float, seed: int, rec: RunRecord) -> None:
        """File a finished run; a group whose tuning has just finished chooses its setting and queues its finals."""
        st.running -= 1
        if len(st.group.grid) > 1 and not st.tuned:
            st.tuning[(beta, lr)] = rec
            if len(st.tuning) == len(st.group.grid):
                tried = [st.tuning[s] for s in st.group.grid]
                best = max(tried, key=lambda r: -math.inf if math.isnan(r.holdout) else r.holdout)  # ties: grid order
                st.tuned = True
                st.todo = [(best.beta, best.lr, s) for s in self.p.cfg.seeds]
                self.progress.log(f"{st.group.label}: chose β={best.beta:g} lr={best.lr:g} (hold-out {best.holdout:.4f})")
        else:
            st.final[seed] = rec
            if len(st.final) == len(self.p.cfg.seeds):  # every seed of the chosen setting: the cards' mean ± std

                runs = [st.final[s] for s in self.p.cfg.seeds]
                model.add_seed_summary([r.run for r in runs], runs[0].metric, [r.test for r in runs], self.p.cfg.seeds)

    def _next(self) -> tuple[_GroupState, float, float, int] | None:
        for st in self.states:
            if st.todo:
                if len(st.group.grid) > 1 and not st.started:
                    self.progress.log(f"tuning {st.group.label}: {len(st.group.grid)} settings")
                st.started = True
                return (st, *st.todo.pop(0))
        return None

    def _announce(self, out: Path) -> str:
        self.seen[out] = "running"
        prefix = f"[{len(self.seen)}/{self.p.total_runs}]"
        eta = self.times.eta()
        self.progress.log(f"{prefix} {out.name}" + ("" if math.isnan(eta) else f"  (sweep ETA {duration(eta)})"))
        return prefix

    # -- running ---------------------------------------------------------------------------------------------
    def run(self) -> tuple[list[RunRecord], list[RunRecord]]:
        if self.jobs == 1:
            self._run_here()
        else:
            self._run_in_workers()
        tuning = [st.tuning[s] for st in self.states if len(st.group.grid) > 1 for s in st.group.grid]
        final = [st.final[s] for st in self.states for s in self.p.cfg.seeds]
        return tuning, final

    def _reuse(self, st: _GroupState, beta: float, lr: float, seed: int, out: Path) -> bool:
        """File a run that finished before (by an earlier sweep, or as the chosen tuning run); False if none."""
        if not rundir.is_finished(out):
            return False
        if out not in self.seen:
            self.seen[out] = "reused"
            self.times.reused()
            self.progress.advance(1, **{ETA_FIELD: self.times.eta()})
        st.running += 1
        self._done(st, beta, lr, seed, self._record(st.group, beta, lr, seed, rundir.read_result(out), out))
        return True

    def _start_next(self) -> tuple[_GroupState, float, float, int, TrainConfig, Path, str] | None:
        """The next run that needs training, announced (runs finished before are filed on the way); None when
        no run is left to start."""
        while (item := self._next()) is not None:
            st, beta, lr, seed = item
            tc = self.config(st.group, beta, lr, seed)
            out = Path(tc.out)
            if self._reuse(st, beta, lr, seed, out):
                continue
            prefix = self._announce(out)
            st.running += 1
            return st, beta, lr, seed, tc, out, prefix
        return None

    def _run_here(self) -> None:
        while (run := self._start_next()) is not None:
            st, beta, lr, seed, tc, out, _ = run
            t0 = self.clock()
            result = train_run(tc, self.progress)
            self.times.trained(self.clock() - t0)
            self.seen[out] = "trained"
            self._done(st, beta, lr, seed, self._record(st.group, beta, lr, seed, result, out))

    def _run_in_workers(self) -> None:
        import multiprocessing

        finished: queue.Queue[tuple[Any, ...]] = queue.Queue()
        ctx = multiprocessing.get_context("spawn")  # not fork: torch's thread pools do not survive a fork
        pool = ctx.Pool(self.jobs, initializer=_worker_init, initargs=(command(), speaking_cli()))
        running = 0
        unit = contextlib.ExitStack()
        unit.enter_context(counting(self.progress, "run"))
        self.progress.start(f"{self.p.cfg.name}: runs", total=self.p.total_runs, done=0)
        try:
            while True:
                while running < self.jobs and (run := self._start_next()) is not None:
                    st, beta, lr, seed, tc, out, prefix = run
                    running += 1
                    key = (st, beta, lr, seed, out, prefix, self.clock())
                    pool.apply_async(_worker_train, (tc, prefix, self.log_every),
                                     callback=lambda m, key=key: finished.put((key, m, None)),
                                     error_callback=lambda e, key=key: finished.put((key, None, e)))
                if running == 0:
                    break
                (st, beta, lr, seed, out, prefix, t0), result, error = finished.get()
                running -= 1
                if error is not None:
                    raise error
                self.seen[out] = "trained"
                took = self.clock() - t0
                self.times.trained(took)
                rec = self._record(st.group, beta, lr, seed, result, out)
                self._done(st, beta, lr, seed, rec)
                self.progress.advance(1, **{ETA_FIELD: self.times.eta()})
                self.progress.log(f"{prefix} {out.name}: hold-out {rec.holdout:.4f}, test {rec.test:.4f} "
                                  f"({took:.0f} s)")
            pool.close()
        except BaseException:
            pool.terminate()  # runs cut short keep their last checkpoint and resume next time
            raise
        finally:
            pool.join()
            self.progress.finish()
            unit.close()



def run_pipeline(path: str | Path, cache_dir: str | Path = "cache", results_dir: str | Path = "results",
                 runs_dir: str | Path = "runs", progress: Progress | None = None,
                 report_to: tuple[str, ...] = (), jobs: int | None = None) -> Path:
    """Run a pipeline end to end (see the module docstring); returns `results/<name>`. `report_to` adds
    trackers (tensorboard, wandb) to every run, on top of the pipeline's own `train.report_to`. `jobs` runs
    train at once in worker processes, one thread each (default: one per CPU core, 1 on a GPU); the numbers
    are the same for any `jobs` (see the module docstring)."""
    progress = default_progress(progress, "step")
    if jobs is not None and jobs < 1:
        raise AftpipeError(f"{option_hint('jobs', jobs)}: must be at least 1")
    in_process = str(cache_dir).startswith("memory://")  # fsspec's memory filesystem: this process's alone
    if in_process and jobs is not None and jobs > 1:
        raise AftpipeError(f"{option_name('cache_dir')} {cache_dir} lives in this process's memory, which the "
                           f"worker processes of {option_hint('jobs', jobs)} cannot see; pass "
                           f"{option_hint('jobs', 1)} or a cache folder")
    p = pipeline.plan_pipeline(path, cache_dir, runs_dir)
    cfg = p.cfg
    report_to = tuple(report_to)
    TrainConfig(dataset=cfg.dataset, out=".", method="none", report_to=report_to)  # names checked like any option
    check_trackers(report_to + cfg.train_template().report_to)
    for warning in cfg.warnings():
        progress.log(f"warning: {warning}")
    missing = tuple(p.missing_stores())  # extract itself skips finished shards
    pipeline.fine_tune_teachers(p, missing, progress)
    if missing:
        progress.log(f"extracting {', '.join(missing)} over {', '.join(p.splits)}")
        with counting(progress, "ex"):
            specs = tuple(cfg.source_spec(s, runs_dir) for s in missing)
            extraction.extract(dataclasses.replace(cfg.extract_config(specs, cache_dir), splits=p.splits), progress)
    jobs = 1 if in_process else jobs or default_jobs(cfg.train_template().device)
    log_every = progress.every_s if isinstance(progress, LogProgress) and not progress.quiet else None
    sweep = Sweep(p, progress, jobs, report_to, log_every)
    try:
        tuning, final = sweep.run()
    except KeyboardInterrupt as e:
        finished = sum(v != "running" for v in sweep.seen.values())
        detail = f"; {e.kept}" if isinstance(e, Interrupted) else ""
        raise Interrupted(f"{finished} of {p.total_runs} runs of `{cfg.name}` are finished and kept{detail}",
                          "re-run the same command to resume") from None
    trained = sum(v == "trained" for v in sweep.seen.values())
    progress.log(f"{len(sweep.seen)} runs finished: {trained} trained now, {len(sweep.seen) - trained} already "
                 f"finished before" + (f" ({jobs} at a time)" if jobs > 1 else ""))

    out = Path(results_dir) / cfg.name
    intro = (f"Pipeline `{cfg.name}` ({Path(path).name}): dataset `{cfg.dataset}`, "
             f"{f'{cfg.labels:,} labels' if cfg.labels else 'every label'}, seeds {', '.join(map(str, cfg.seeds))}. "
             f"Reproduce with `{pipeline.reproduce_command(path, cache_dir, results_dir, runs_dir)}`; runs are in "
             f"`{p.runs_dir}`.")
    if (warning := cfg.seeds_warning()) is not None:
        intro += f"\n\n**Warning — {warning}**"
    write_if_changed(out / "results.csv", report.csv_text(final))
    write_if_changed(out / "tuning.csv", report.csv_text(tuning))
    write_if_changed(out / "results.md",
                     report.markdown_report(final, tuning, title=f"Results: {cfg.name}", intro=intro))
    write_if_changed(out / "plot.png", report.plot_png(final, title=cfg.name))
    write_if_changed(out / "plot.svg", report.plot_svg(final, title=cfg.name))
    progress.log(f"results → {out}")
    return out


__all__ = ["RunTimes", "Sweep", "default_jobs", "run_pipeline", "thread_limit", "train_run"]
