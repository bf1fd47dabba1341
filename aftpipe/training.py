"""Stage 2: train a small student against cached features with a transfer method (AFT or a baseline).

    cfg = TrainConfig(dataset="sst2", features=("cache/sst2/minilm",), student="textcnn", method="aft",
                      method_options=MethodConfig(beta=0.3), out="runs/sst2-aft")
    result = train(cfg)  # a RunResult: result.score, result.holdout_score, result.params, ...

`train` reads as its steps: prepare the run directory, load the data (dataset, row plan, φ checked against
the dataset) (`run_folder`, which the linear probe's recipe, aftpipe.probe, shares), then build the student
and the method, resume from a checkpoint, run the loop and score the test split. The loop: AdamW over the student,
the method's own state (AFT's s, KD's W) in a second parameter group with its own learning rate, linear
warm-up then cosine decay, evaluation on a hold-out carved from the labeled training rows (what β is tuned
on) with early stopping, and the test split scored once at the end with the best hold-out checkpoint.
Features are read from the memory-mapped stores by row index, per batch.

Several processes (`torchrun ... -m aftpipe train`) train one run with DistributedDataParallel: every rank
draws the same global batch of `--batch-size` rows and computes on its own share of them (every world-th
row), and DDP averages the gradients, so a run of N processes follows the one-process run with the same
batch size. The student and the method's state (AFT's s, so σ(s)) are DDP's parameters and stay identical on
every rank. Each rank runs the student on its own rows, then the ranks gather the batch's h, logits, φ and
labels, and every rank computes the loss of the whole batch: AFT's kernel is a per-batch statistic (the
paper computes it on each mini-batch), and it spans the same rows as in one process. Rank 0 alone
evaluates, checkpoints and writes the run directory; the others follow its early-stopping decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aftpipe import distributed, rundir
from aftpipe.config import TrainConfig, dump_yaml
from aftpipe.data import load_dataset
from aftpipe.errors import AftpipeError, Interrupted, option_hint, option_name
from aftpipe.features import (RunData, agreement_split, check_labels, foundation_params, open_split_features, plan_rows,
                               test_rows)
from aftpipe.methods import Method, build_method
from aftpipe.metrics import score
from aftpipe.model import write_model_files
from aftpipe.progress import Progress, SilentProgress, default_progress
from aftpipe.rundir import RunResult
from aftpipe.students import Student, build_student
from aftpipe.students.base import cut_padding
from aftpipe.tracking import RunLog, check_trackers


DEFAULT_EPOCHS = 5
# A run's length when the user sets none: DEFAULT_EPOCHS, but at least MIN_STEPS optimizer steps, the length the
# benchmark pipelines give `none` on 1,800 labelled rows. On 240 labelled SST-2 rows 5 epochs are 10 steps of 128:
# an embedding-initialised TextCNN with AFT scored 0.603 after 10 steps, 0.653 after 300 (3 seeds, 100 dev
# sentences). On SST-2's 60k rows 5 epochs are 2,370 steps and the floor changes nothing.
MIN_STEPS = 300


@dataclass(frozen=True)
class Schedule:
    steps_per_epoch: int
    total: int
    eval_every: int
    short: bool = False  # the user fixed a length below MIN_STEPS (`short_run_warning`)


def schedule(cfg: TrainConfig, n_train: int) -> Schedule:
    """How many steps a run of `cfg` on `n_train` labeled rows takes, and how often it evaluates: --steps, else
    --epochs, else DEFAULT_EPOCHS epochs and at least MIN_STEPS steps."""
    per_epoch = math.ceil(n_train / cfg.batch_size)
    if cfg.steps or cfg.epochs:
        total = cfg.steps or cfg.epochs * per_epoch
    else:
        total = max(DEFAULT_EPOCHS * per_epoch, MIN_STEPS)
    short = bool(cfg.epochs) and not cfg.steps and total < MIN_STEPS
    return Schedule(per_epoch, total, cfg.eval_every or max(1, min(per_epoch, total // 10)), short)


def short_run_warning(cfg: TrainConfig, sched: Schedule) -> str | None:
    """One line for a run whose --epochs give it fewer than MIN_STEPS steps (small data), else None. A run given
    --steps asked for its length in steps and is not warned."""
    if not sched.short:
        return None
    return (f"warning: {option_hint('epochs', cfg.epochs)} is {sched.total} optimizer steps ({sched.steps_per_epoch} "
            f"per epoch of {cfg.batch_size} rows), too few to converge: runs here needed about {MIN_STEPS}; leave "
            f"{option_name('epochs')} unset (at least {MIN_STEPS} steps) or pass {option_hint('steps', MIN_STEPS)}")


# --- setup ------------------------------------------------------------------------------------------------
def load_run_data(cfg: TrainConfig, standardize: bool = True) -> RunData:
    """The dataset, its splits and labels checked, φ of the train split checked against it, the row plan.
    `standardize`: fit `--phi-norm standardize` on the rows (the probe's head standardises φ itself)."""
    dataset = load_dataset(cfg.dataset, cfg.data_dir, cfg.dataset_options)
    train_split = dataset.split(cfg.train_split)
    test = dataset.test(cfg.test_split)
    num_classes = cfg.num_classes or dataset.num_classes
    check_labels(train_split, test, num_classes)
    feats = (open_split_features(cfg.features, dataset, cfg.train_split, cfg.in_memory, cfg.stored_rows_only)
             if cfg.features else None)
    if feats is not None:
        feats.apply_control(cfg.phi_control)
    examples = np.arange(len(train_split)) if feats is None else feats.examples
    plan = plan_rows(examples, train_split.labels, cfg.labels, cfg.holdout, cfg.data_seed, train_split.origin)
    if cfg.agreement_rows:
        plan.unlabeled = agreement_split(plan.unlabeled, cfg.agreement_rows, cfg.data_seed, train_split.origin)[0]
    if feats is not None and cfg.phi_norm == "standardize" and standardize:
        feats.fit_standardizer(np.concatenate([plan.train, plan.unlabeled]))
    rows = test_rows(cfg, dataset, test)
    coverage = ({train_split.name: [len(examples), len(train_split)], test.name: [len(rows), len(test)]}
                if cfg.stored_rows_only else None)
    return RunData(dataset, train_split, test, plan, num_classes, feats, rows, coverage)


# How a recipe fits a run inside `run_folder`: (the data, the work folder) → its result, and the student to
# save as the model (None: the recipe saved its own weights, as the probe its head)
Fit = Callable[[RunData, Path], tuple[RunResult, Student | None]]


def run_folder(cfg: TrainConfig, progress: Progress, fit: Fit, standardize: bool = True,
               ctx: distributed.Context = distributed.SINGLE) -> RunResult:
    """What every run shares around its fit: the run folder claimed (a finished one is read back), the seeds,
    the data loaded, config.yaml; then `fit`, and on rank 0 the provenance, the model files and metrics.json.

    The run is built in `<out>.partial` under a lock and renamed to `<out>` only when it finishes (rundir.py),
    so a second train on the same --out is refused and a failed one leaves nothing half-made."""
    from aftpipe.provenance import run_record

    with contextlib.ExitStack() as held:
        # rank 0 alone owns the run directory; the others learn where it is (to resume from its checkpoint)
        work = ctx.from_main(f"preparing the run directory {cfg.out}", lambda: held.enter_context(
            rundir.writing(cfg.out, cfg.resume, cfg.overwrite)))
        if work is None:
            progress.log(f"{cfg.out} is already finished; nothing to do")
            return rundir.read_result(cfg.out)
        t_start = time.perf_counter()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        with ctx.together("loading the data"):
            data = load_run_data(cfg, standardize)
            if cfg.resume and ctx.is_main:
                rundir.check_resumable(work, cfg.to_dict())
        if ctx.is_main:
            rundir.write_config(work, dump_yaml(cfg))
        result, student = fit(data, work)
        if not ctx.is_main:
            return result  # rank 0's, which alone writes the run directory
        record = run_record(cfg.features, [cfg.train_split, data.test.name])
        if "test_split" in data.dataset.info:  # a test split held out of train: which rows, by what rule
            record["test_split"] = data.dataset.info["test_split"]
        result = dataclasses.replace(result, wall_s=time.perf_counter() - t_start, record=record)
        write_model_files(work, cfg, data, result, student)  # the run directory becomes a loadable model folder
        rundir.finish(work, result)
    return result


def train(cfg: TrainConfig, progress: Progress | None = None) -> RunResult:
    """Train one student; writes config.yaml, metrics.json and the weights into `cfg.out` (`run_folder`);
    returns the result. Launched as several processes (WORLD_SIZE set, e.g. by torchrun), they train the run
    together (DDP); each returns rank 0's result. `aftpipe.api.train` sends the linear probe to aftpipe.probe."""
    progress = default_progress(progress, "step")
    check_trackers(cfg.report_to)
    with distributed.launch(cfg.device, cfg.dist_timeout) as ctx:
        if not ctx.is_main:
            progress = SilentProgress()  # one display for the job: rank 0's

        def fit(data: RunData, work: Path) -> tuple[RunResult, Student]:
            device = distributed.resolve_device(distributed.device_for(cfg.device, ctx))
            with ctx.collective("training"):  # a rank lost inside DDP's all-reduce: one line, not a traceback
                trainer = Trainer(cfg, data, device, work, progress, ctx)
                return trainer.run(), trainer.student

        return run_folder(cfg, progress, fit, ctx=ctx)


class _Step(torch.nn.Module):
    """The student and the method as one module: what DistributedDataParallel wraps, so the gradients of
    both (the student's weights, AFT's s) are averaged over the ranks. With several processes each rank runs
    the student on its own rows, then computes the loss of the whole batch (`Context.gather_batch`): AFT's
    kernel spans the batch, as in one process."""

    def __init__(self, student: torch.nn.Module, method: Method, ctx: distributed.Context = distributed.SINGLE) -> None:
        super().__init__()
        self.student, self.method, self.ctx = student, method, ctx

    def forward(self, batch: dict[str, torch.Tensor], phi: torch.Tensor | None, y: torch.Tensor, progress: float,
                amp: bool) -> tuple[torch.Tensor, Any]:
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=amp):
            h = self.student.features(batch)
            logits = self.student.head(h)
        h, logits, phi, y = self.ctx.gather_batch(h.float(), logits.float(), phi, y)
        terms = self.method(h, logits, phi, y, progress)
        return terms.total, terms


# --- the loop ---------------------------------------------------------------------------------------------
def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


def _batch(encoded: dict[str, torch.Tensor], idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """Rows `idx` of the encoded inputs on `device`, without the padding columns none of them uses."""
    t = torch.from_numpy(idx)
    batch = cut_padding({k: v[t] for k, v in encoded.items()})
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(student, encoded: dict[str, torch.Tensor], examples: np.ndarray, device: torch.device,
            batch_size: int = 512) -> np.ndarray:
    student.eval()
    out = [student(_batch(encoded, examples[i:i + batch_size], device)).argmax(-1).cpu().numpy()
           for i in range(0, len(examples), batch_size)]
    student.train()
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


class Trainer:
    """One student run: built from the config and the data, resumed from its checkpoint if there is one,
    trained by `run()`. Every step's batch depends only on (seed, epoch, position), so a resumed run draws
    the batches the uninterrupted one would have."""

    def __init__(self, cfg: TrainConfig, data: RunData, device: torch.device, out: Path, progress: Progress,
                 ctx: distributed.Context = distributed.SINGLE) -> None:
        self.cfg, self.data, self.device, self.out, self.progress, self.ctx = cfg, data, device, out, progress, ctx
        train = data.train
        self.student = build_student(cfg.student, data.num_classes, list(train.inputs), cfg.student_options,
                                     modality=data.dataset.modality).to(device)
        progress.log(f"student {cfg.student}: {self.student.num_params():,} parameters, "
                     f"{self.student.num_features} features")
        self.enc_train = self.student.encode(train.inputs)
        self.enc_test = self.student.encode(data.test.inputs)
        feats = data.features
        dims = feats.dims if feats is not None else [0]
        self.method = build_method(cfg.method, cfg.method_options, self.student.num_features, dims,
                                   data.num_classes).to(device)
        if self.method.needs_teacher:  # fitted once per (stores, rows, options) and kept (aftpipe.heads)
            from aftpipe.heads import fitted_head

            # The teacher belongs to the transfer set-up, not to the student's seed: one teacher (an MLP's init
            # seeded with data_seed) serves every seed of a group, so seeds measure the student's spread alone.
            rows = data.plan.train
            with ctx.main_first("fitting the teacher"):  # the head is cached: rank 0 fits it, the others load it
                head, _ = fitted_head(feats, cfg.features, rows, train.labels, data.num_classes,
                                      hidden=cfg.method_options.teacher_hidden, seed=cfg.data_seed, progress=progress)
            self.method.set_teacher(head, feats(rows).to(device), torch.from_numpy(train.labels[rows]).to(device))
        self.phi = feats if self.method.uses_features else None
        self.use_unlabeled = ((cfg.unlabeled or self.method.always_unlabeled) and self.method.uses_unlabeled
                              and len(data.plan.unlabeled) > 0)
        self.sched_info = schedule(cfg, len(data.plan.train))
        total = self.sched_info.total
        if (warning := short_run_warning(cfg, self.sched_info)) is not None and ctx.is_main:
            progress.log(warning)
        self.model: torch.nn.Module = _Step(self.student, self.method, ctx)
        if ctx.active:
            from torch.nn.parallel import DistributedDataParallel

            if ctx.is_main:
                progress.log(f"{ctx.world} processes: each computes on 1/{ctx.world} of every {cfg.batch_size}-row "
                             "batch; gradients averaged (DistributedDataParallel)")
            self.model = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        # foreach: one kernel per update op over all tensors instead of one per tensor (~25% less optimizer
        # time on a CPU, and bit-identical results; `fused` is slower on a CPU)
        self.opt = torch.optim.AdamW([
            {"params": list(self.student.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": [p for p in self.method.parameters() if p.requires_grad], "lr": cfg.method_options.state_lr,
             "weight_decay": 0.0},
        ], foreach=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(total, int(cfg.warmup * total)))
        self.state = {"step": 0, "best": -1.0, "best_step": 0, "bad_evals": 0, "history": [], "train_time": 0.0}
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.log: RunLog | None = None  # metrics.jsonl and the trackers, open while `run` runs
        self.is_train = np.zeros(len(train), dtype=bool)
        self.is_train[data.plan.train] = True
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    # -- checkpoints ----------------------------------------------------------------------------------------
    def resume(self) -> None:
        saved = rundir.load_checkpoint(self.out)
        if saved is None:
            return
        try:
            self.student.load_state_dict(saved["student"])
            self.method.load_state_dict(saved["method"])
            self.opt.load_state_dict(saved["opt"])
            self.sched.load_state_dict(saved["sched"])
            self.state = saved["state"]
            self.best_weights = saved["best_weights"]
            rng = saved["rng"]
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            if rng.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a checkpoint of another model, or edited
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise AftpipeError(f"the checkpoint in {self.out} does not fit this run ({first}); pass "
                               f"{option_hint('overwrite')} to train it again") from None
        self.progress.log(f"resuming {self.cfg.out} at step {self.state['step']} of {self.sched_info.total}")

    def save(self) -> None:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        rundir.save_checkpoint(self.out, {
            "student": self.student.state_dict(), "method": self.method.state_dict(), "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(), "state": self.state, "best_weights": self.best_weights, "rng": rng})

    # -- one step ------------------------------------------------------------------------------------------
    def _permutation(self, stream: int, epoch: int, rows: np.ndarray) -> np.ndarray:
        """The epoch's row order depends only on (seed, stream, epoch). Computed once per epoch, not per
        step (a 60k-row shuffle costs about a step's data time)."""
        if (stream, epoch) not in self._perms:
            if len(self._perms) > 2:  # only the current epoch of each stream is ever needed again
                self._perms.clear()
            seed = [self.cfg.seed, stream, epoch] if stream else [self.cfg.seed, epoch]
            self._perms[(stream, epoch)] = np.random.default_rng(seed).permutation(rows)
        return self._perms[(stream, epoch)]

    def batch_rows(self, step: int) -> np.ndarray:
        """The labeled rows of `step`, followed by its unlabeled rows when the run uses them; with several
        processes, this rank's share of them."""
        bs, plan = self.cfg.batch_size, self.data.plan
        epoch, pos = divmod(step, self.sched_info.steps_per_epoch)
        idx = self._permutation(0, epoch, plan.train)[pos * bs:(pos + 1) * bs]
        if self.use_unlabeled:
            u_epoch, upos = divmod(step, max(1, math.ceil(len(plan.unlabeled) / bs)))
            idx = np.concatenate([idx, self._permutation(1, u_epoch, plan.unlabeled)[upos * bs:(upos + 1) * bs]])
        if self.ctx.active and len(idx) < self.ctx.world:  # an epoch's last few rows: every rank needs one
            idx = np.resize(idx, self.ctx.world)
        return self.ctx.local_rows(idx)

    def step(self, idx: np.ndarray) -> dict[str, float]:
        """One optimizer step on rows `idx`; returns the loss terms."""
        device, labels = self.device, self.data.train.labels
        y = torch.from_numpy(np.where(self.is_train[idx], labels[idx], -1)).to(device)
        t0 = time.perf_counter()
        batch = _batch(self.enc_train, idx, device)
        phi = self.phi(idx).to(device, non_blocking=True) if self.phi is not None else None
        total, terms = self.model(batch, phi, y, self.state["step"] / self.sched_info.total,
                                  self.cfg.amp and device.type == "cuda")
        self.opt.zero_grad(set_to_none=True)
        total.backward()  # DDP: the gradients are averaged over the ranks here
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        self.state["train_time"] += time.perf_counter() - t0
        self.state["step"] += 1
        logs = terms.floats()
        if self.ctx.active:  # the global batch's loss, so every rank sees a diverging run at the same step
            import torch.distributed as dist

            loss = torch.tensor([logs["loss"]], dtype=torch.float64)
            dist.all_reduce(loss, group=distributed.control_group())
            logs["loss"] = float(loss) / self.ctx.world
        if not math.isfinite(logs["loss"]):
            raise AftpipeError(f"the loss became {logs['loss']} at step {self.state['step']}; lower "
                               f"{option_name('lr')} or {option_name('beta')}")
        return logs

    def holdout_scores(self) -> dict[str, float]:
        hold = self.data.plan.holdout
        if len(hold) == 0:
            return {}
        pred = predict(self.student, self.enc_train, hold, self.device)
        return score(pred, self.data.train.labels[hold], self.data.metric)

    @torch.no_grad()
    def holdout_regulariser(self, max_batches: int = 8) -> dict[str, float]:
        """The transfer term (and, for AFT, its learned-nothing floor) on up to `max_batches` hold-out batches
        (training rows when there is no hold-out): the diagnostic that tells transfer from its absence."""
        if self.phi is None:
            return {}
        plan, bs = self.data.plan, self.cfg.batch_size
        rows = (plan.holdout if len(plan.holdout) else plan.train)[: max_batches * bs]
        regs, floors = [], []
        self.student.eval()
        for i in range(0, len(rows), bs):
            idx = rows[i:i + bs]
            if len(idx) < 3:  # a kernel or an angle needs a few rows
                continue
            h = self.student.features(_batch(self.enc_train, idx, self.device))
            phi = self.phi(idx).to(self.device)
            regs.append(float(self.method.regulariser(h.float(), self.student.head(h).float(), phi)))
            floor = self.method.regulariser_floor(phi)
            if floor is not None:
                floors.append(float(floor))
        self.student.train()
        out = {"reg": float(np.mean(regs))} if regs else {}
        return {**out, "reg_floor": float(np.mean(floors))} if floors else out

    def evaluate(self, logs: dict[str, float]) -> float:
        """Score the hold-out, keep the best weights, checkpoint; returns the hold-out metric (NaN: none)."""
        st, metric = self.state, self.data.metric
        hm = {**self.holdout_scores(), **self.holdout_regulariser()}
        cur = hm.get(metric, -st["step"])  # no hold-out: the last step is the best
        st["history"].append({"step": st["step"], "epoch": round(st["step"] / self.sched_info.steps_per_epoch, 3),
                              **logs, "lr": self.sched.get_last_lr()[0], **{f"holdout_{k}": v for k, v in hm.items()}})
        if self.log is not None:
            self.log.log({**st["history"][-1], "train_s": round(st["train_time"], 3)})
        if cur > st["best"] or metric not in hm:
            st["best"], st["best_step"], st["bad_evals"] = cur, st["step"], 0
            self.best_weights = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        else:
            st["bad_evals"] += 1
        self.save()
        return hm.get(metric, float("nan"))

    # -- the run -------------------------------------------------------------------------------------------
    def loop(self) -> None:
        cfg, st, total = self.cfg, self.state, self.sched_info.total
        self.progress.start(f"{cfg.method} · {cfg.student}", total=total, done=st["step"])
        self.student.train()
        try:
            while st["step"] < total:
                logs = self.step(self.batch_rows(st["step"]))
                fields = {k: f"{v:.3f}" for k, v in logs.items()}
                if st["step"] % self.sched_info.eval_every == 0 or st["step"] == total:
                    # rank 0 evaluates and checkpoints; the others wait for its early-stopping decision
                    if self.ctx.from_main(f"the evaluation at step {st['step']}", lambda: self._evaluate(logs, fields)):
                        break
                self.progress.advance(1, **fields)
        except KeyboardInterrupt:
            saved = st["history"][-1]["step"] if st["history"] else None
            kept = (f"{self.out} keeps its checkpoint at step {saved} of {total}" if saved else
                    f"{self.out} has no checkpoint yet (the first is at step {self.sched_info.eval_every})")
            raise Interrupted(kept, f"re-run with {option_hint('resume')} to continue") from None
        finally:
            self.progress.finish()

    def _evaluate(self, logs: dict[str, float], fields: dict[str, str]) -> bool:
        """Evaluate (adding the progress fields); returns whether to stop early."""
        cfg, st = self.cfg, self.state
        fields["holdout"] = f"{self.evaluate(logs):.3f}"
        last = st["history"][-1]
        if "holdout_reg_floor" in last:  # R next to what a student that learned nothing would score
            fields["R/floor"] = f"{last['holdout_reg']:.3f}/{last['holdout_reg_floor']:.3f}"
        if cfg.patience is not None and st["bad_evals"] >= cfg.patience:
            self.progress.log(f"early stop at step {st['step']}: no hold-out gain for {cfg.patience} evaluations")
            return True
        return False

    def finish(self) -> RunResult:
        """Score the test split with the best hold-out weights, save the student; returns the result."""
        from safetensors.torch import save_file

        cfg, data, st, student = self.cfg, self.data, self.state, self.student
        if cfg.select == "best" and self.best_weights is not None:
            student.load_state_dict(self.best_weights)
        test_scores = score(predict(student, self.enc_test, data.test_rows, self.device),
                            data.test.labels[data.test_rows], data.metric)
        hold_scores = self.holdout_scores()
        save_file({k: v.contiguous().cpu() for k, v in student.state_dict().items()},
                  str(self.out / "student.safetensors"))
        (self.out / "student.json").write_text(json.dumps(student.spec(), sort_keys=True))
        plan = data.plan
        result = RunResult(
            test=test_scores, holdout=hold_scores, metric=data.metric,
            params=student.num_params(), foundation_params=foundation_params(cfg.features),
            ms_per_step=1000 * st["train_time"] / max(1, st["step"]),
            steps=st["step"], best_step=st["best_step"], history=st["history"],
            rows={"train": len(plan.train), "holdout": len(plan.holdout), "unlabeled": len(plan.unlabeled),
                  "test": len(data.test_rows), "unlabeled_used": bool(self.use_unlabeled),
                  **({"stored_rows_only": data.coverage} if data.coverage else {})},
            # β as the run applied it: 0 for a method with no transfer term to weigh
            method={"name": cfg.method, "beta": cfg.method_options.beta if self.method.regularised() else 0.0,
                    **self._summary()},
            regulariser=self._regulariser_trace(), phi_control=cfg.phi_control, select=cfg.select,
            device=str(self.device), test_split=data.test.name,
        )
        self.progress.log(f"test {data.metric} {result.score:.4f}  hold-out {result.holdout_score:.4f}  → {cfg.out}")
        return result

    def _regulariser_trace(self) -> dict[str, float]:
        """The hold-out regulariser (and floor) at the first and the last evaluation."""
        hist = [h for h in self.state["history"] if "holdout_reg" in h]
        if not hist:
            return {}
        out = {"first": hist[0]["holdout_reg"], "last": hist[-1]["holdout_reg"]}
        if "holdout_reg_floor" in hist[-1]:
            out |= {"floor_first": hist[0]["holdout_reg_floor"], "floor_last": hist[-1]["holdout_reg_floor"]}
        return out

    def _summary(self) -> dict[str, Any]:
        s = self.method.summary()
        for i, src in enumerate(s.get("sources", [])):  # name the sources by their store paths
            if isinstance(src, dict) and i < len(self.cfg.features):
                src["store"] = self.cfg.features[i]
        return s

    def run(self) -> RunResult:
        """Train and finish; with several processes every rank returns rank 0's result."""
        if self.cfg.resume:
            self.resume()  # every rank reads rank 0's checkpoint (its run directory is on a shared filesystem)
        ctx = self.ctx
        if not ctx.is_main:
            self.loop()
            return ctx.from_main("the end of training", lambda: None)
        with RunLog(self.out, self.cfg.report_to, self.cfg.to_dict(), resume_step=self.state["step"]) as self.log:
            self.loop()
            result = ctx.from_main("the end of training", self._finish_logged)
        self.log = None
        return result

    def _finish_logged(self) -> RunResult:
        result = self.finish()
        self.log.log({"step": self.state["step"], **{f"test_{k}": v for k, v in result.test.items()}})
        return result


__all__ = ["DEFAULT_EPOCHS", "MIN_STEPS", "Schedule", "TrainConfig", "Trainer", "load_run_data", "predict", "run_folder",
           "schedule", "short_run_warning", "train"]
