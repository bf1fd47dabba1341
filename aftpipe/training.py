"""Stage 2: train a small student against cached features with a transfer method (AFT or a baseline).

    cfg = TrainConfig(dataset="sst2", features=("cache/sst2/minilm",), student="textcnn", method="aft",
                      beta=0.3, out="runs/sst2-aft")
    metrics = train(cfg)

The loop: AdamW over the student, the method's own state (AFT's s, KD's W) in a second parameter group
with its own learning rate, linear warm-up then cosine decay, evaluation on a hold-out carved from the
labeled training rows (what β is tuned on) with early stopping, and the test split scored once at the
end with the best hold-out checkpoint. Features are read from the memory-mapped stores by row index, per
batch; the stores are checked against the dataset (fingerprint, N, D) before anything trains.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from aftpipe.data import load_dataset
from aftpipe.data.base import Dataset, DatasetOptions
from aftpipe.errors import AftpipeError
from aftpipe.methods import METHODS, MethodConfig, build_method, fit_linear_head
from aftpipe.store import FeatureArray, open_features
from aftpipe.students import StudentConfig, build_student, rebuild_student

TEST_SPLIT = {"sst2": "dev", "cola": "dev"}  # GLUE's labelled dev sets are the test splits here


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    out: str
    features: tuple[str, ...] = ()  # feature stores; several are concatenated per row (multi-source)
    student: str = "textcnn"
    method: str = "aft"
    method_options: MethodConfig = field(default_factory=MethodConfig)  # β, state lr, τ, ...
    student_options: StudentConfig = field(default_factory=StudentConfig)
    epochs: int = 5
    steps: int | None = None  # overrides epochs when set
    batch_size: int = 128  # the official AFT batch; the kernel is a per-batch statistic, so it matters
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of steps of linear warm-up before the cosine decay
    grad_clip: float = 1.0
    holdout: float = 0.1  # fraction of the labeled rows held out for model selection and β tuning
    labels: int | None = None  # label budget: this many labeled rows; the rest of train is unlabeled
    unlabeled: bool = False  # add a batch of unlabeled rows per step (regulariser / distillation only)
    phi_norm: str = "none"  # none | standardize: per-feature z-score of φ from the training rows
    eval_every: int | None = None  # steps between hold-out evaluations (default: 10 per run, at least 1 per epoch)
    patience: int | None = None  # stop after this many evaluations without hold-out improvement
    seed: int = 0
    data_seed: int = 0  # which rows are labeled / held out: fixed across seeds so seeds vary only the training
    train_split: str = "train"
    test_split: str | None = None  # default: dev for sst2/cola, else test
    num_classes: int | None = None  # default: the dataset's
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    in_memory: bool = False  # load the feature splits into RAM instead of reading the memory map
    threads: int | None = None  # torch CPU threads (default: torch's own choice)
    data_dir: str | None = None
    dataset_options: DatasetOptions = field(default_factory=DatasetOptions)
    overwrite: bool = False
    resume: bool = False


class TrainProgress(Protocol):
    def start(self, label: str, total: int, done: int) -> None: ...
    def advance(self, n: int, **fields: Any) -> None: ...
    def finish(self) -> None: ...
    def log(self, message: str) -> None: ...


class _Silent:
    def start(self, label: str, total: int, done: int) -> None: ...
    def advance(self, n: int, **fields: Any) -> None: ...
    def finish(self) -> None: ...
    def log(self, message: str) -> None: ...


# --- metrics ---------------------------------------------------------------------------------------------
def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")


def matthews_corrcoef(pred: np.ndarray, y: np.ndarray) -> float:
    """Multi-class MCC (Gorodkin 2004), 0 when either side is constant, as scikit-learn defines it."""
    k = int(max(pred.max(initial=0), y.max(initial=0))) + 1
    c = np.zeros((k, k), dtype=np.float64)
    np.add.at(c, (y, pred), 1)
    t, p, n = c.sum(1), c.sum(0), c.sum()
    cov_yp = np.trace(c) * n - t @ p
    denom = math.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float(cov_yp / denom) if denom else 0.0


def score(pred: np.ndarray, y: np.ndarray, metric: str) -> dict[str, float]:
    out = {"accuracy": accuracy(pred, y)}
    if metric == "mcc":
        out["mcc"] = matthews_corrcoef(pred, y)
    return out


# --- data ------------------------------------------------------------------------------------------------
@dataclass
class RowPlan:
    """Which train-split examples are labeled-train, hold-out, unlabeled (dataset example indices)."""

    train: np.ndarray
    holdout: np.ndarray
    unlabeled: np.ndarray


def plan_rows(examples: np.ndarray, labels: np.ndarray, budget: int | None, holdout: float, seed: int,
              origin: np.ndarray | None = None) -> RowPlan:
    """Seeded, independent of the training seed: every seed and method sees the same labeled rows.
    `origin[i]` (augmented views) names the example row i is a copy of; copies of hold-out rows are left
    out of the unlabeled rows, so nothing derived from the hold-out is trained on."""
    rng = np.random.default_rng(seed)
    labeled = examples[labels[examples] >= 0]
    unl = examples[labels[examples] < 0]
    perm = rng.permutation(labeled)
    if budget is not None:
        if budget > len(perm):
            raise AftpipeError(f"--labels {budget} is more than the {len(perm)} labeled training rows; lower it")
        perm, unl = perm[:budget], np.concatenate([unl, perm[budget:]])
    n_hold = int(round(len(perm) * holdout))
    if holdout > 0 and n_hold == 0 and len(perm) > 1:
        n_hold = 1
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    if len(train) == 0:
        raise AftpipeError("no labeled rows are left to train on after the hold-out; lower --holdout or add labels")
    if origin is not None and len(hold):
        unl = unl[~np.isin(origin[unl], hold)]
    return RowPlan(train, hold, np.sort(unl))


class Features:
    """φ for dataset examples of one split: the stores' rows concatenated, optionally standardised."""

    def __init__(self, arrays: list[FeatureArray], example_to_row: np.ndarray, dims: list[int]) -> None:
        self.arrays, self.example_to_row, self.dims = arrays, example_to_row, dims
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def __call__(self, examples: np.ndarray) -> torch.Tensor:
        rows = self.example_to_row[examples]
        phi = np.concatenate([a.read(rows) for a in self.arrays], axis=1)
        if self.mean is not None:
            phi = (phi - self.mean) / self.std
        return torch.from_numpy(phi)

    def fit_standardizer(self, examples: np.ndarray) -> None:
        x = np.concatenate([self(examples[i:i + 8192]).numpy() for i in range(0, len(examples), 8192)])
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6


def open_split_features(paths: tuple[str, ...], dataset: Dataset, split: str, in_memory: bool) -> Features:
    """Open `split` of every store, checking each against the dataset's rows; refuse any mismatch."""
    ds_split = dataset.split(split)
    arrays, index, dims = [], None, []
    for p in paths:
        store = open_features(p)
        arr = store.split(split, verify=True)
        entry = store.manifest["splits"][split]
        views = int((store.manifest["dataset"].get("info") or {}).get("views", 1))
        if views != dataset.views:
            raise AftpipeError(f"store {p} was extracted with --views {views}, the dataset is loaded with --views "
                               f"{dataset.views}; pass --views {views} (or use the store of the other)")
        if arr.index.max(initial=-1) >= len(ds_split):
            raise AftpipeError(f"store {p} split `{split}` has {len(arr)} rows indexing up to {arr.index.max()}, but "
                               f"dataset `{dataset.spec}` has only {len(ds_split)}; it was extracted from other data")
        fp = ds_split.fingerprint(arr.index)
        if fp != entry["fingerprint"]:
            raise AftpipeError(
                f"store {p} split `{split}` does not match dataset `{dataset.spec}` (store: "
                f"{store.manifest['dataset']['name']}, {entry['n']}×{entry['d']}, fingerprint {entry['fingerprint'][:12]}; "
                f"dataset now: {len(ds_split)} rows, fingerprint {fp[:12]}); re-extract with "
                f"`aftpipe extract --dataset {dataset.spec} --overwrite`"
            )
        if index is not None and not np.array_equal(index, arr.index):
            raise AftpipeError(f"stores {paths[0]} and {p} hold different rows of `{split}`; extract both "
                               "with the same --limit")
        index = arr.index
        arrays.append(arr.to_memory() if in_memory else arr)
        dims.append(arr.shape[1])
    example_to_row = np.full(len(ds_split), -1, dtype=np.int64)
    example_to_row[index] = np.arange(len(index))
    return Features(arrays, example_to_row, dims)


# --- the run directory -----------------------------------------------------------------------------------
def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["features"] = list(cfg.features)
    return d


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    d = dict(d)
    d["features"] = tuple(d.get("features", ()))
    d["method_options"] = MethodConfig(**d.get("method_options", {}))
    d["student_options"] = StudentConfig(**d.get("student_options", {}))
    d["dataset_options"] = DatasetOptions(**d.get("dataset_options", {}))
    return TrainConfig(**d)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=float))
    os.replace(tmp, path)


def _prepare_out(cfg: TrainConfig) -> Path | None:
    """Create the run dir; return None when it already holds this finished run and --resume was given."""
    out = Path(cfg.out)
    if (out / "metrics.json").exists():
        if cfg.resume and not cfg.overwrite:
            return None
        if not cfg.overwrite:
            raise AftpipeError(f"{out} already holds a finished run; pass --overwrite to replace it or choose another --out")
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()) and not cfg.resume and not cfg.overwrite:
        if (out / "checkpoint.pt").exists():
            raise AftpipeError(f"{out} holds an unfinished run; pass --resume to continue it or --overwrite to restart")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise AftpipeError(f"cannot write the run directory {out} ({e.strerror}); pass a writable --out") from None
    return out


# Changing these does not change what a resumed run computes up to where it stopped
_RESUMABLE_CHANGES = {"resume", "overwrite", "steps", "epochs", "threads", "device", "in_memory", "patience"}


def _check_resumable(saved: dict[str, Any], new: dict[str, Any], out: Path) -> None:
    for k in sorted(set(saved) | set(new)):
        if k not in _RESUMABLE_CHANGES and saved.get(k) != new.get(k):
            raise AftpipeError(f"{out} was started with {k}={saved.get(k)!r}, now {new.get(k)!r}; resume with the "
                               "same options or pass --overwrite to start again")


# --- the loop --------------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    from aftpipe.extraction import resolve_device

    return resolve_device(name)


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


def _batch(encoded: dict[str, torch.Tensor], idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    t = torch.from_numpy(idx)
    return {k: v[t].to(device, non_blocking=True) for k, v in encoded.items()}


@torch.no_grad()
def predict(student, encoded: dict[str, torch.Tensor], examples: np.ndarray, device: torch.device,
            batch_size: int = 512) -> np.ndarray:
    student.eval()
    out = [student(_batch(encoded, examples[i:i + batch_size], device)).argmax(-1).cpu().numpy()
           for i in range(0, len(examples), batch_size)]
    student.train()
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def _check_labels(dataset: Dataset, splits: list[str], num_classes: int) -> None:
    for name in splits:
        y = dataset.split(name).labels
        bad = np.flatnonzero(y >= num_classes)
        if len(bad):
            raise AftpipeError(f"split `{name}` row {int(bad[0])} ({dataset.split(name).ids[bad[0]]}) has label "
                               f"{int(y[bad[0]])}, outside 0..{num_classes - 1}; fix the label or raise --num-classes")


def train(cfg: TrainConfig, progress: TrainProgress | None = None) -> dict[str, Any]:
    """Train one run; writes config.yaml, metrics.json and the checkpoint into `cfg.out`; returns the metrics."""
    progress = progress or _Silent()
    method_cls = METHODS.get(cfg.method)  # an unknown name raises "no method `x`; known: ..."
    cfg.method_options.check()
    uses_features = getattr(method_cls, "uses_features", True)
    if uses_features and not cfg.features:
        raise AftpipeError(f"method `{cfg.method}` needs cached features; pass --features cache/<dataset>/<source>")
    for name, v, lo in (("--epochs", cfg.epochs, 1), ("--batch-size", cfg.batch_size, 1)):
        if v < lo:
            raise AftpipeError(f"{name} must be ≥ {lo}, got {v}")
    if cfg.steps is not None and cfg.steps < 1:
        raise AftpipeError(f"--steps must be ≥ 1, got {cfg.steps}")
    if not 0 <= cfg.holdout < 1:
        raise AftpipeError(f"--holdout must be in [0, 1), got {cfg.holdout}")
    if cfg.phi_norm not in ("none", "standardize"):
        raise AftpipeError(f"unknown --phi-norm {cfg.phi_norm}; use none or standardize")
    if cfg.lr <= 0:
        raise AftpipeError(f"--lr must be > 0, got {cfg.lr}")
    out = _prepare_out(cfg)
    if out is None:
        progress.log(f"{cfg.out} is already finished; nothing to do")
        return json.loads((Path(cfg.out) / "metrics.json").read_text())
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    dataset = load_dataset(cfg.dataset, cfg.data_dir, cfg.dataset_options)
    test_split = cfg.test_split or TEST_SPLIT.get(dataset.name, "test")
    train_split = dataset.split(cfg.train_split)
    if test_split not in dataset.splits:
        raise AftpipeError(f"dataset `{dataset.spec}` has no split `{test_split}` to test on (it has: "
                           f"{', '.join(dataset.splits)}); pass --test-split NAME")
    test = dataset.split(test_split)
    num_classes = cfg.num_classes or dataset.num_classes
    _check_labels(dataset, [cfg.train_split, test_split], num_classes)

    feats = open_split_features(cfg.features, dataset, cfg.train_split, cfg.in_memory) if cfg.features else None
    examples = np.arange(len(train_split)) if feats is None else np.flatnonzero(feats.example_to_row >= 0)
    plan = plan_rows(examples, train_split.labels, cfg.labels, cfg.holdout, cfg.data_seed, train_split.origin)
    if feats is not None and cfg.phi_norm == "standardize":
        feats.fit_standardizer(np.concatenate([plan.train, plan.unlabeled]))

    import yaml

    saved_cfg = out / "config.yaml"
    if cfg.resume and saved_cfg.exists() and (out / "checkpoint.pt").exists():
        _check_resumable(yaml.safe_load(saved_cfg.read_text()), config_dict(cfg), out)
    saved_cfg.write_text(yaml.safe_dump(config_dict(cfg), sort_keys=False))
    if cfg.method == "linear_probe":
        return _linear_probe(cfg, dataset, feats, plan, test_split, num_classes, out, t_start, progress)

    student = build_student(cfg.student, num_classes, list(train_split.inputs), cfg.student_options,
                            modality=dataset.modality).to(device)
    params = student.num_params()
    progress.log(f"student {cfg.student}: {params:,} parameters, {student.num_features} features")
    enc_train = student.encode(train_split.inputs)
    enc_test = student.encode(test.inputs)
    dims = feats.dims if feats is not None else [0]
    method = build_method(cfg.method, cfg.method_options, student.num_features, dims, num_classes).to(device)
    if method.needs_teacher:
        rows = plan.train
        method.fit_teacher(feats(rows).to(device), torch.from_numpy(train_split.labels[rows]).to(device), seed=cfg.seed)
    use_unlabeled = (cfg.unlabeled or cfg.method == "tokt") and method.uses_unlabeled and len(plan.unlabeled) > 0

    steps_per_epoch = math.ceil(len(plan.train) / cfg.batch_size)
    total = cfg.steps or cfg.epochs * steps_per_epoch
    eval_every = cfg.eval_every or max(1, min(steps_per_epoch, total // 10))
    opt = torch.optim.AdamW([
        {"params": list(student.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": [p for p in method.parameters() if p.requires_grad], "lr": cfg.method_options.state_lr,
         "weight_decay": 0.0},
    ])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, int(cfg.warmup * total)))
    state = {"step": 0, "best": -1.0, "best_step": 0, "bad_evals": 0, "history": [], "train_time": 0.0}
    best_weights = None
    ckpt = out / "checkpoint.pt"
    if cfg.resume and ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        student.load_state_dict(saved["student"])
        method.load_state_dict(saved["method"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        state = saved["state"]
        best_weights = saved["best_weights"]
        torch.set_rng_state(saved["rng"])
        progress.log(f"resuming {out} at step {state['step']} of {total}")

    def holdout_metric() -> dict[str, float]:
        if len(plan.holdout) == 0:
            return {}
        return score(predict(student, enc_train, plan.holdout, device), train_split.labels[plan.holdout],
                     dataset.metric)

    def save_checkpoint() -> None:
        tmp = ckpt.with_name(".checkpoint.pt.tmp")
        torch.save({"student": student.state_dict(), "method": method.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "state": state, "best_weights": best_weights,
                    "rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, ckpt)  # a kill mid-save leaves the previous checkpoint intact

    amp = cfg.amp and device.type == "cuda"
    main_metric = dataset.metric  # accuracy, or mcc for CoLA
    progress.start(f"{cfg.method} · {cfg.student}", total=total, done=state["step"])
    student.train()
    is_train = np.zeros(len(train_split), dtype=bool)
    is_train[plan.train] = True
    u_steps = max(1, math.ceil(len(plan.unlabeled) / cfg.batch_size))
    perms: dict[tuple[int, int], np.ndarray] = {}

    def permutation(stream: int, epoch: int, rows: np.ndarray) -> np.ndarray:
        """The epoch's row order depends only on (seed, stream, epoch): a resumed run draws the same
        batches. Computed once per epoch, not per step (a 60k-row shuffle costs about a step's data time)."""
        if (stream, epoch) not in perms:
            if len(perms) > 2:  # only the current epoch of each stream is ever needed again
                perms.clear()
            perms[(stream, epoch)] = np.random.default_rng([cfg.seed, stream, epoch] if stream else
                                                           [cfg.seed, epoch]).permutation(rows)
        return perms[(stream, epoch)]

    while state["step"] < total:
        step = state["step"]
        epoch, pos = divmod(step, steps_per_epoch)
        idx = permutation(0, epoch, plan.train)[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
        if use_unlabeled:
            u_epoch, upos = divmod(step, u_steps)
            uperm = permutation(1, u_epoch, plan.unlabeled)
            idx = np.concatenate([idx, uperm[upos * cfg.batch_size:(upos + 1) * cfg.batch_size]])
        y = torch.from_numpy(np.where(is_train[idx], train_split.labels[idx], -1)).to(device)
        t0 = time.perf_counter()
        batch = _batch(enc_train, idx, device)
        phi = feats(idx).to(device, non_blocking=True) if (feats is not None and uses_features) else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            h = student.features(batch)
            logits = student.head(h)
        terms = method(h.float(), logits.float(), phi, y, step / total)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        state["train_time"] += time.perf_counter() - t0
        state["step"] = step + 1
        logs = terms.floats()
        if not math.isfinite(logs["loss"]):
            raise AftpipeError(f"the loss became {logs['loss']} at step {step + 1}; lower --lr or --beta")
        fields = {k: f"{v:.3f}" for k, v in logs.items()}
        if state["step"] % eval_every == 0 or state["step"] == total:
            hm = holdout_metric()
            cur = hm.get(main_metric, -state["step"])  # no hold-out: the last step is the best
            state["history"].append({"step": state["step"], "epoch": round(state["step"] / steps_per_epoch, 3),
                                     **logs, "lr": sched.get_last_lr()[0], **{f"holdout_{k}": v for k, v in hm.items()}})
            if cur > state["best"] or not hm:
                state["best"], state["best_step"], state["bad_evals"] = cur, state["step"], 0
                best_weights = {k: v.detach().clone() for k, v in student.state_dict().items()}
            else:
                state["bad_evals"] += 1
            fields["holdout"] = f"{hm.get(main_metric, float('nan')):.3f}"
            save_checkpoint()
            if cfg.patience is not None and state["bad_evals"] >= cfg.patience:
                progress.log(f"early stop at step {state['step']}: no hold-out gain for {cfg.patience} evaluations")
                break
        progress.advance(1, **fields)
    progress.finish()

    if best_weights is not None:
        student.load_state_dict(best_weights)
    test_rows = np.arange(len(test))
    test_scores = score(predict(student, enc_test, test_rows, device), test.labels, dataset.metric)
    hold_scores = holdout_metric()
    from safetensors.torch import save_file

    save_file({k: v.contiguous().cpu() for k, v in student.state_dict().items()}, str(out / "student.safetensors"))
    (out / "student.json").write_text(json.dumps(student.spec(), sort_keys=True))
    metrics = {
        "test": test_scores, "holdout": hold_scores, "metric": main_metric,
        "params": params, "foundation_params": _foundation_params(cfg.features),
        "ms_per_step": 1000 * state["train_time"] / max(1, state["step"]),
        "steps": state["step"], "best_step": state["best_step"],
        "wall_s": time.perf_counter() - t_start, "history": state["history"],
        "rows": {"train": len(plan.train), "holdout": len(plan.holdout), "unlabeled": len(plan.unlabeled),
                 "test": len(test), "unlabeled_used": bool(use_unlabeled)},
        "method": {"name": cfg.method, "beta": cfg.method_options.beta, **_summary(method, cfg.features)},
        "device": str(device), "test_split": test_split,
    }
    _atomic_json(out / "metrics.json", metrics)  # written last: its presence means the run finished
    ckpt.unlink(missing_ok=True)
    progress.log(f"test {main_metric} {test_scores[main_metric]:.4f}  hold-out "
                 f"{hold_scores.get(main_metric, float('nan')):.4f}  → {out}")
    return metrics


def _summary(method, features: tuple[str, ...]) -> dict[str, Any]:
    s = method.summary() if hasattr(method, "summary") else {}
    for i, src in enumerate(s.get("sources", [])):  # name the sources by their store paths
        if isinstance(src, dict) and i < len(features):
            src["store"] = features[i]
    return s


def _foundation_params(features: tuple[str, ...]) -> int:
    total = 0
    for p in features:
        try:
            total += int(open_features(p).manifest["source"].get("params") or 0)
        except AftpipeError:
            pass
    return total


def _linear_probe(cfg: TrainConfig, dataset: Dataset, feats: Features, plan: RowPlan, test_split: str,
                  num_classes: int, out: Path, t_start: float, progress: TrainProgress) -> dict[str, Any]:
    """The reference: a linear head on φ itself (needs the foundation model at inference)."""
    train_split = dataset.split(cfg.train_split)
    feats.mean = feats.std = None  # the head standardises φ itself (and must, at inference)
    t0 = time.perf_counter()
    head = fit_linear_head(feats(plan.train), torch.from_numpy(train_split.labels[plan.train]), num_classes,
                           seed=cfg.seed)
    fit_s = time.perf_counter() - t0
    test_feats = open_split_features(cfg.features, dataset, test_split, cfg.in_memory)
    test = dataset.split(test_split)
    rows = np.flatnonzero(test_feats.example_to_row >= 0)

    def pred(f: Features, ex: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return head(f(ex)).argmax(-1).numpy()

    test_scores = score(pred(test_feats, rows), test.labels[rows], dataset.metric)
    hold = score(pred(feats, plan.holdout), train_split.labels[plan.holdout], dataset.metric) if len(plan.holdout) else {}
    head_params = sum(p.numel() for p in head.parameters())
    main_metric = dataset.metric  # accuracy, or mcc for CoLA
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / "head.safetensors"))
    metrics = {"test": test_scores, "holdout": hold, "metric": main_metric,
               "params": _foundation_params(cfg.features) + head_params, "head_params": head_params,
               "foundation_params": _foundation_params(cfg.features), "ms_per_step": float("nan"),
               "wall_s": time.perf_counter() - t_start, "fit_s": fit_s, "history": [],
               "rows": {"train": len(plan.train), "holdout": len(plan.holdout), "test": len(rows)},
               "method": {"name": "linear_probe", "c": head.c, "cv_accuracy": {f"{c:g}": a for c, a in head.cv.items()}},
               "device": "cpu", "test_split": test_split}
    _atomic_json(out / "metrics.json", metrics)
    chosen = "cross-validated" if head.cv else "given"
    progress.log(f"linear probe (C={head.c:g}, {chosen}): test {main_metric} "
                 f"{test_scores[main_metric]:.4f} → {out}")
    return metrics


def evaluate(run_dir: str | Path) -> dict[str, float]:
    """Reload a finished run's student and score it on its test split again."""
    run = Path(run_dir)
    if not (run / "metrics.json").exists():
        raise AftpipeError(f"{run} holds no finished run (no metrics.json); train one with `aftpipe train --out {run}`")
    import yaml

    cfg = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    metrics = json.loads((run / "metrics.json").read_text())
    dataset = load_dataset(cfg.dataset, cfg.data_dir, cfg.dataset_options)
    test = dataset.split(metrics["test_split"])
    if cfg.method == "linear_probe":
        from safetensors.torch import load_file

        from aftpipe.methods import FeatureHead

        sd = load_file(str(run / "head.safetensors"))
        feats = open_split_features(cfg.features, dataset, metrics["test_split"], False)
        hidden = sd["net.0.weight"].shape[0] if "net.0.weight" in sd else 0
        head = FeatureHead(sum(feats.dims), cfg.num_classes or dataset.num_classes, hidden)
        head.load_state_dict(sd)
        rows = np.flatnonzero(feats.example_to_row >= 0)
        with torch.no_grad():
            pred = head(feats(rows)).argmax(-1).numpy()
        return score(pred, test.labels[rows], dataset.metric)
    from safetensors.torch import load_file

    student = rebuild_student(json.loads((run / "student.json").read_text()))
    student.load_state_dict(load_file(str(run / "student.safetensors")))
    pred = predict(student, student.encode(test.inputs), np.arange(len(test)), torch.device("cpu"))
    return score(pred, test.labels, dataset.metric)


__all__ = ["TrainConfig", "evaluate", "matthews_corrcoef", "plan_rows", "train"]
