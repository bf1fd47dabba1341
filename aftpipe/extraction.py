"""Stage 1: run feature sources over a dataset once and write every split to a store.

For each (source, split): plan shards, skip the ones the manifest marks done, and for the rest form
batches *within* each shard (rows sorted by length so padding is short), tokenise/decode in DataLoader
workers, run the forward pass, place each row at its shard position, and hand finished shards to a
background writer thread so storage overlaps compute. Batches depend only on the shard, never on what ran
before, so a resumed run writes bit-identical rows.

Several processes (`torchrun ... -m aftpipe extract`, aftpipe/distributed.py) split a store's unfinished
shards between them round robin; each rank computes and writes only its own, and rank 0, which alone plans the
store and writes its manifest, merges the others' done-records once every rank has finished. Since batches
are formed within a shard, the number of processes never changes which rows share a batch: the store is
bit-identical to a one-process run, and a store left half-done by 4 processes is finished by 2 or by 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import platform
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aftpipe import distributed
from aftpipe.config import DatasetOptions, ExtractConfig, SourceOptions, command_line
from aftpipe.data import default_data_dir, load_dataset
from aftpipe.data.base import Dataset, Split
from aftpipe.data.splits import take_rows
from aftpipe.errors import AftpipeError, Interrupted, option_name
from aftpipe.progress import Progress, SilentProgress, default_progress
from aftpipe.sources import FeatureSource, check_source, load_source
from aftpipe.store import SplitPlan, StoreLock, StoreWriter, make_writer, open_features, store_path
from aftpipe.store.location import is_remote, remote_errors
from aftpipe.store.manifest import STORAGE_DTYPES, package_versions

DEFAULT_SHARD_BYTES = 16 << 20  # ~16 MiB shards: a 67k×384 fp16 split is 4 files, a million rows ~50


@dataclass
class SplitResult:
    source: str
    split: str
    path: Path
    rows: int
    dim: int
    shards_done: int
    shards_skipped: int
    wall_s: float
    rows_computed: int = 0  # rows this call ran through the model (0 when every shard was cached)
    recomputed: tuple[int, ...] = ()  # the shard numbers this call wrote
    repaired: tuple[str, ...] = ()  # the damage found in the split and repaired


def default_shard_rows(dim: int, dtype: str) -> int:
    rows = DEFAULT_SHARD_BYTES // (dim * STORAGE_DTYPES[dtype].itemsize)
    return max(2048, rows // 2048 * 2048)


def shard_batches(split: Split, source: FeatureSource, start: int, stop: int, batch_size: int) -> list[np.ndarray]:
    """Batches of rows inside [start, stop), longest first; deterministic for a given shard. Text is sorted
    by its token count, not its characters: on SST-2 a batch of 256 sorted by characters is padded to 1.5×
    its tokens, sorted by tokens to 1.01× (the forward's cost is its padded tokens)."""
    rows = np.arange(start, stop)
    lengths = source.lengths([split.inputs[i] for i in rows])
    order = rows[np.argsort(-lengths, kind="stable")]  # longest first: the biggest batch fails fast on OOM
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class _Batches(torch.utils.data.Dataset):
    """Each item is one whole batch: (shard, rows, collated inputs). Collation runs in the workers."""

    def __init__(self, split: Split, source: FeatureSource, batches: list[tuple[int, np.ndarray]]) -> None:
        self.split, self.source, self.batches = split, source, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, Any]:
        shard, rows = self.batches[i]
        return shard, rows, self.source.collate([self.split.inputs[r] for r in rows])


def _libc_malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_heap() -> None:
    """Give the heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing).

    Batches of every length leave freed activation blocks of every size in glibc's heap, which keeps them: without
    this the peak RSS of a long extraction creeps up with the number of batches (BENCHMARKS.md, "Memory").
    Called after every batch: a walk over the heap, microseconds beside a forward pass.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class _ShardWriter:
    """A background thread that writes finished shards; errors surface on the next put or on close."""

    def __init__(self, writer: StoreWriter, split: str) -> None:
        self.writer, self.split = writer, split
        self.q: queue.Queue[tuple[int, np.ndarray] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_shard(self.split, *item)
                except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                    self.error = e

    def put(self, shard: int, rows: np.ndarray) -> None:
        if self.error:
            raise self.error
        self.q.put((shard, rows))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error:
            raise self.error


def _device_name(device: torch.device, ctx: distributed.Context = distributed.SINGLE) -> str:
    ranks = f" × {ctx.world} processes" if ctx.active else ""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device) + ranks
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads){ranks}"


def _check_writable(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AftpipeError(f"cannot create {path.parent} ({e.strerror}); pass a writable "
                           f"{option_name('cache_dir')}") from None
    if not os.access(path.parent, os.W_OK):
        raise AftpipeError(f"{path.parent} is not writable; pass a writable {option_name('cache_dir')}")


def extract(config: ExtractConfig, progress: Progress | None = None,
            rows: Mapping[str, np.ndarray] | None = None) -> list[SplitResult]:
    """Extract every (source, split) of `config` into `<cache_dir>/<name>/<source>`; resumable. Launched as
    several processes (WORLD_SIZE set, e.g. by torchrun), the processes share the work; each returns the
    results of the whole job. `rows` (Python only): for a split named there, only those rows of it (a linear
    probe needs the labeled and test rows, not the unlabeled pool); the store's index records which."""
    progress = default_progress(progress, "ex")
    rows = {name: np.unique(np.asarray(r, dtype=np.int64)) for name, r in (rows or {}).items()}
    if rows and config.limit is not None:
        raise ValueError("extract: `limit` and `rows` choose the rows two ways; pass one of them")
    if distributed.env_world() > 1 and config.cache_dir.startswith("memory://"):  # refused before the ranks meet
        raise AftpipeError(f"{config.cache_dir} lives in one process's memory; several processes need a location "
                           f"they all see (a shared folder, s3://, gs://) as {option_name('cache_dir')}")
    with distributed.launch(config.device, config.dist_timeout) as ctx:
        if not ctx.is_main:
            progress = SilentProgress()  # one display for the job: rank 0's
        with ctx.together("loading the dataset"):
            device = distributed.resolve_device(distributed.device_for(config.device, ctx))
            dataset = load_dataset(config.dataset, config.data_dir, config.dataset_options)
            split_names = list(config.splits) if config.splits else list(dataset.splits)
            splits = {name: dataset.split(name) for name in split_names}  # unknown split fails before any compute
            for spec in config.sources:
                check_source(spec, config.source_options)  # every model path checked before the first one loads
        results = []
        for spec in config.sources:
            with ctx.together(f"loading source `{spec}`"):
                source = load_source(spec, config.source_options)
                if source.modality != dataset.modality:
                    raise AftpipeError(f"source `{spec}` reads {source.modality} but dataset `{config.dataset}` is "
                                       f"{dataset.modality}; pick a {dataset.modality} source (`aftpipe sources`)")
            results += _extract_source(config, dataset, splits, source, device, progress, spec, ctx, rows)
    return results


def _recorded(config: ExtractConfig, dataset: Dataset, spec: str,
              rows: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """What a repair needs to run this extraction again: the options, with the data folder made absolute
    (and the working directory, against which a relative dataset path was resolved). A dataset found in the
    default data folder is looked up there again, as the default may differ where the repair runs."""
    given = Path(config.data_dir).expanduser().resolve() if config.data_dir is not None else None
    default = default_data_dir()
    return {"dataset": config.dataset, "data_dir": str(given) if given else None,
            "default_data_dir": str(default.resolve()) if default else None, "cwd": os.getcwd(),
            "source": spec, "source_options": config.source_options.to_dict(),
            "dataset_options": config.dataset_options.to_dict(), "format": config.format, "dtype": config.dtype,
            "chunk_rows": config.chunk_rows, **({"rows": {k: v.tolist() for k, v in rows.items()}} if rows else {})}


def rebuild_command(config: ExtractConfig, spec: str, splits: list[str], limit: int | None, shard_rows: int,
                    name: str | None = None) -> str:
    """The `aftpipe extract` command that rebuilds one source's store from scratch, without its --cache-dir
    (a store may be moved: the message that prints it adds where the store is now). `name` pins the store's
    folder (--name), which for a dataset given by path is derived from where it is."""
    folder = Path(config.data_dir).expanduser().resolve() if config.data_dir is not None else None
    cfg = dataclasses.replace(config, sources=(spec,), splits=tuple(splits), limit=limit, shard_rows=shard_rows,
                              name=name or config.name,
                              overwrite=True, workers=None, device="auto", batch_size=ExtractConfig.batch_size,
                              cache_dir=ExtractConfig.cache_dir, data_dir=str(folder) if folder else None)
    return command_line(cfg, "extract", skip=frozenset())


@dataclass
class _StoreJob:
    """One source's store as the steps of `_extract_source` hand it on. Every rank must agree on its key,
    rows per shard and plans; `created` says whether this run created the store (one it created and never
    finished a shard of is removed again when the run fails: `abandon_if_empty`)."""

    path: Any
    key: dict[str, Any]  # the store's identity: a store built with another key is refused, not resumed
    shard_rows: int
    plans: dict[str, SplitPlan]  # by split, in the order asked for
    writer: StoreWriter
    created: bool = False
    rows: Mapping[str, np.ndarray] = field(default_factory=dict)  # splits extracted in part: their rows

    def abandon_if_empty(self) -> None:
        if self.created and not self.writer.shards_done():
            self.writer.close()
            self.writer.abandon()


def _extract_source(config: ExtractConfig, dataset: Dataset, splits: dict[str, Split], source: FeatureSource,
                    device: torch.device, progress: Progress, spec: str = "",
                    ctx: distributed.Context = distributed.SINGLE,
                    rows: Mapping[str, np.ndarray] | None = None) -> list[SplitResult]:
    """Prepare the store (every rank), plan it (rank 0), compute the shards (every rank its own), publish it
    (rank 0). `rows`: for a split named there, only those rows of it."""
    path = store_path(config.cache_dir, config.name or dataset.name, source.name, config.format)
    # an object store's client fails in its own exception tree anywhere below (listing, reading, writing,
    # cleaning up): one line naming the store, not a traceback
    with remote_errors(path, "write the store"), contextlib.ExitStack() as held:
        with ctx.together(f"preparing the store {path}"):
            job = _prepare_store(config, dataset, splits, source, device, progress, spec, ctx, path, rows or {})
        # every rank must be about to write the same store: same key, storage and rows
        ctx.agree([job.key, str(path), config.format, config.dtype, config.chunk_rows, job.shard_rows,
                   config.overwrite, {n: (p.n, p.d, p.fingerprint) for n, p in job.plans.items()}],
                  f"the store key of {path}")
        shared = ctx.from_main(f"planning the store {path}", lambda: _plan_store(job, held, ctx))
        if not ctx.is_main:
            job.writer.follow(shared)
        results = _compute_shards(job, config, splits, source, device, progress, ctx)
        ctx.from_main(f"publishing the store {path}", lambda: _publish(job, results, device, ctx))
        return results


def _prepare_store(config: ExtractConfig, dataset: Dataset, splits: dict[str, Split], source: FeatureSource,
                   device: torch.device, progress: Progress, spec: str, ctx: distributed.Context,
                   path: Any, rows: Mapping[str, np.ndarray]) -> _StoreJob:
    """Everything decided before the store is touched: the source fitted (if it is fitted), the store's key,
    each split's rows, and the writer with the provenance its manifest records."""
    if not is_remote(path):
        _check_writable(path)
    if type(source).fit is not FeatureSource.fit:
        if "train" not in dataset.splits:
            raise AftpipeError(f"source `{source.name}` is fitted on a split named `train`, which dataset "
                               f"`{dataset.spec}` lacks; name one of its files train")
        progress.log(f"{source.name}: fitting on the train split")
        source.fit(dataset.split("train").inputs)
    source_spec = source.spec()
    # the store's identity: a moved model directory with the same weights is the same source
    identity = {k: v for k, v in source_spec.items()
                if k != "path" and not (k == "model_id" and source_spec.get("weights_sha256"))}
    shard_rows = config.shard_rows or default_shard_rows(source.dim, config.dtype)
    key = {"source": identity, "dataset": {"name": dataset.resolved_spec, "info": dataset.info}}
    plans = {}
    for name, split in splits.items():  # rows 0..limit: every shard then lies in the first `limit` rows
        index = rows.get(name, np.arange(len(split) if config.limit is None else min(config.limit, len(split))))
        if len(index) and (index[0] < 0 or index[-1] >= len(split)):
            raise ValueError(f"extract: rows of split `{name}` must lie in 0..{len(split) - 1}; got "
                             f"{index[0]}..{index[-1]}")
        plans[name] = SplitPlan(len(index), source.dim, index, split.fingerprint(index),
                                config.limit if config.limit is not None and config.limit < len(split) else None)
    dataset_spec = {"name": dataset.spec, "modality": dataset.modality, "num_classes": dataset.num_classes,
                    "metric": dataset.metric, "class_names": dataset.class_names, "info": dataset.info}
    all_splits = list(dict.fromkeys([*(_splits_in(path) if ctx.is_main else []), *splits]))
    writer = make_writer(
        path, config.format, key=key,
        provenance={"source": source_spec, "dataset": dataset_spec, "packages": package_versions(),
                    "device": _device_name(device, ctx), "extract": _recorded(config, dataset, spec, rows),
                    "command": rebuild_command(config, spec, all_splits, config.limit, shard_rows,
                                               None if dataset.location is None else path.parent.name)},
        dtype=config.dtype, chunk_rows=config.chunk_rows, shard_rows=shard_rows, overwrite=config.overwrite,
        log=progress.log,
    )
    return _StoreJob(path, key, shard_rows, plans, writer, rows=rows)


def _plan_store(job: _StoreJob, held: contextlib.ExitStack, ctx: distributed.Context) -> dict[str, Any]:
    """Rank 0 (or the only process): lock, open or create the store, plan every split, make the planned
    changes; returns what the other ranks need to write their shards. The lock and the writer stay held
    (in `held`) until the store is published."""
    if not is_remote(job.path):  # object stores have no advisory locks (README: one extract per store)
        held.enter_context(StoreLock(job.path))
    job.writer.open()
    job.created = job.writer.existing is None
    held.callback(job.writer.close)
    try:
        for name, plan in job.plans.items():
            job.writer.plan_split(name, plan)
        job.writer.begin()
        return job.writer.shared_state() if ctx.active else {}
    except BaseException:
        job.abandon_if_empty()
        raise


def _compute_shards(job: _StoreJob, config: ExtractConfig, splits: dict[str, Split], source: FeatureSource,
                    device: torch.device, progress: Progress, ctx: distributed.Context) -> list[SplitResult]:
    """Every rank computes and writes its share of the unfinished shards; the job's results, on every rank.
    Rank 0 keeps what the other ranks finished (their journal records), even when the job fails."""
    writer = job.writer
    results: list[SplitResult] = []
    try:
        with ctx.together(f"writing the store {job.path}"):
            source.to(device)
            todo = [(name, i) for name in splits for i, s in enumerate(writer.split_info(name).shards)
                    if not s.done and s.rows[1] > s.rows[0]]
            mine = [t for k, t in enumerate(todo) if ctx.owns(k)]  # round robin: shards are of equal size
            for name, split in splits.items():  # a store row is a position in `rows`, so its batches too
                part = take_rows(split, job.rows[name], name) if name in job.rows else split
                results.append(_extract_split(config, writer, name, part, source, progress,
                                              [i for n, i in mine if n == name], ctx))
    except BaseException:
        if ctx.is_main:
            if ctx.active:
                writer.merge_journal()
            job.abandon_if_empty()
        raise
    if ctx.is_main:
        writer.merge_journal()
    every = ctx.gather(results, f"the end of the store {job.path}")
    return _merged(every) if ctx.active else results


def _publish(job: _StoreJob, results: list[SplitResult], device: torch.device, ctx: distributed.Context) -> None:
    """Rank 0: record the job's timings and publish the store, unless this run changed nothing."""
    writer = job.writer
    if ctx.active:  # a single process recorded its timings split by split
        for r in results:
            writer.record_timing(r.split, r.wall_s, r.rows_computed)
    if writer.needs_publishing(wrote=any(r.shards_done for r in results)):
        writer.finish({"packages": package_versions(), "device": _device_name(device, ctx)})


def _merged(every: list[list[SplitResult]]) -> list[SplitResult]:
    """The job's results from each rank's (same splits, in the same order): counts summed, the slowest rank's
    wall time (the job's)."""
    out = []
    for parts in zip(*every):
        first = parts[0]
        out.append(dataclasses.replace(
            first, shards_done=sum(p.shards_done for p in parts), shards_skipped=first.shards_skipped,
            wall_s=max(p.wall_s for p in parts), rows_computed=sum(p.rows_computed for p in parts),
            recomputed=tuple(sorted(i for p in parts for i in p.recomputed)),
            repaired=tuple(dict.fromkeys(x for p in parts for x in p.repaired))))
    return out


def _splits_in(path: Path) -> list[str]:
    """The splits an existing store holds (none when there is no readable store)."""
    try:
        return open_features(path).planned_splits if path.exists() else []
    except AftpipeError:
        return []


def repair(path: str | Path, progress: Progress | None = None) -> list[SplitResult]:
    """Re-run the extraction that built the store at `path`, as its manifest records it: every damaged or
    missing shard is recomputed and every damaged array rewritten, nothing else (`aftpipe verify --repair`)."""
    progress = default_progress(progress, "ex")
    store = open_features(path)
    rec = store.extract_options
    if rec is None or "source" not in rec:
        raise AftpipeError(f"store {store.path} does not record how it was extracted (it predates repairs); re-run the "
                           "extract command that built it: it checks every shard and recomputes the damaged ones")
    data_dir = rec.get("data_dir")
    prefix, sep, arg = rec["dataset"].partition(":")
    if sep and arg and not Path(arg).expanduser().is_absolute() and not Path(arg).exists() and rec.get("cwd"):
        data_dir = rec["cwd"]  # a dataset path typed relative to where the extract ran
    elif not sep and data_dir is None and rec.get("default_data_dir"):
        here = default_data_dir()
        if here is None or str(here.resolve()) != rec["default_data_dir"]:
            data_dir = rec["default_data_dir"]  # the default folder differs where the repair runs
    storage = store.storage
    by_limit: dict[int | None, list[str]] = {}
    for info in store.split_infos():
        by_limit.setdefault(info.limit, []).append(info.name)
    for name in store.entry_damage:  # splits whose manifest entry is lost: extracted again whole
        if name not in store.planned_splits:
            by_limit.setdefault(None, []).append(name)
    results = []
    for limit, names in by_limit.items():
        cfg = ExtractConfig(dataset=rec["dataset"], sources=(rec["source"],), splits=tuple(names), data_dir=data_dir,
                            cache_dir=str(store.path.parent.parent), name=store.path.parent.name,
                            format=storage["format"], dtype=storage["dtype"],
                            chunk_rows=storage["chunk_rows"], shard_rows=storage["shard_rows"], limit=limit,
                            source_options=SourceOptions(**rec.get("source_options", {})),
                            dataset_options=DatasetOptions(**rec.get("dataset_options", {})))
        chosen = {n: np.asarray(r) for n, r in (rec.get("rows") or {}).items() if n in names}
        results += extract(cfg, progress, chosen or None)
    return results


def _extract_split(config: ExtractConfig, writer: StoreWriter, name: str, split: Split, source: FeatureSource,
                   progress: Progress, shards: list[int] | None = None,
                   ctx: distributed.Context = distributed.SINGLE) -> SplitResult:
    """Compute and write the unfinished shards of one split (with several processes: `shards`, this rank's)."""
    info = writer.split_info(name)
    ranges = [s.rows for s in info.shards]
    unfinished = [i for i, s in enumerate(info.shards) if not s.done and s.rows[1] > s.rows[0]]
    todo = unfinished if shards is None else shards
    skipped = len(ranges) - len(unfinished)
    label = f"{source.name} · {name}" + (f" · {ctx.name}" if ctx.active else "")
    if ctx.active and unfinished:
        progress.log(f"{label}: {len(todo)} of the {len(unfinished)} unfinished shards are this rank's")
    if skipped and unfinished:
        progress.log(f"{label}: resuming, {skipped} of {len(ranges)} shards already done (skipped)")
    elif not unfinished:
        progress.log(f"{label}: all {len(ranges)} shards already done, nothing to compute")
    n_todo = sum(ranges[i][1] - ranges[i][0] for i in todo)
    total = info.n if not ctx.active else n_todo  # with several processes: this rank's share
    progress.start(label, total=total, done=total - n_todo)
    t0 = time.perf_counter()
    try:
        if todo:
            batches = [(i, b) for i in todo for b in shard_batches(split, source, *ranges[i], config.batch_size)]
            workers = config.workers if config.workers is not None else (4 if source_device(source) == "cuda" else 1)
            loader = torch.utils.data.DataLoader(
                _Batches(split, source, batches), batch_size=None, shuffle=False, num_workers=workers,
                pin_memory=source_device(source) == "cuda", prefetch_factor=4 if workers else None,
                persistent_workers=False,
            )
            shard_writer = _ShardWriter(writer, name)
            try:
                _run_batches(loader, ranges, info.d, writer.np_dtype, shard_writer, progress)
            finally:
                shard_writer.close()  # shards already queued are written and marked done
    except KeyboardInterrupt:
        progress.finish()
        done = writer.split_info(name).shards_done
        raise Interrupted(f"{writer.path}: {done} of {len(ranges)} shards of `{name}` are written and kept") from None
    wall = time.perf_counter() - t0
    if not ctx.active:  # with several processes rank 0 records the job's timing once every rank is done
        writer.record_timing(name, wall, n_todo)
    progress.finish()
    return SplitResult(source.name, name, writer.path, info.n, info.d, len(todo), skipped, wall, n_todo, tuple(todo),
                       tuple(writer.repaired.get(name, ())))


def source_device(source: FeatureSource) -> str:
    return getattr(getattr(source, "device", None), "type", "cpu")


def _run_batches(loader: Iterator, ranges: list[tuple[int, int]], d: int, dtype: np.dtype,
                 shard_writer: _ShardWriter, progress: Progress) -> None:
    """Run every batch and place its rows in their shard's buffer, in the storage dtype (half the memory of
    float32), and hand each full shard to the writer. On a GPU the next batch is queued before this batch's
    features are waited for, so the device never idles while Python places rows."""
    source = loader.dataset.source
    current, buf, filled = -1, np.empty((0, d), dtype), np.zeros(0, bool)
    pending: tuple[int, np.ndarray, Any] | None = None

    def place(shard: int, rows: np.ndarray, out: Any) -> None:
        nonlocal current, buf, filled
        feats = _host(out)
        if np.isnan(feats).any():
            raise RuntimeError(f"shard {shard}: the model produced NaN features")
        if shard != current:
            if filled.size and not filled.all():
                raise RuntimeError(f"shard {current}: {int((~filled).sum())} rows were never computed")
            a, b = ranges[shard]
            current, buf, filled = shard, np.empty((b - a, d), dtype), np.zeros(b - a, bool)
        local = rows - ranges[shard][0]
        buf[local] = _to_storage(feats, dtype)
        filled[local] = True
        release_free_heap()
        progress.advance(len(rows))
        if filled.all():  # a row written twice and another never cannot pass: `filled` marks rows, not counts
            shard_writer.put(shard, buf)
            buf, filled = np.empty((0, d), dtype), np.zeros(0, bool)

    for shard, rows, batch in loader:
        out = _to_host_async(source.forward(batch))
        if pending is not None:
            place(*pending)
        pending = (shard, rows, out)
    if pending is not None:
        place(*pending)
    if filled.size:
        raise RuntimeError(f"shard {current}: {int((~filled).sum())} rows were never computed")


def _to_host_async(x: torch.Tensor) -> Any:
    """Start copying `x` to the host: on a GPU into pinned memory behind the forward (with an event to wait
    on); on a CPU it is there already."""
    if x.device.type != "cuda":
        return x
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    host.copy_(x, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return host, done


def _host(out: Any) -> np.ndarray:
    if isinstance(out, tuple):
        host, done = out
        done.synchronize()
        return host.numpy()
    return out.numpy()


def _to_storage(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.dtype("<u2"):  # bfloat16 bits, round-to-nearest-even like torch
        return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return x.astype(dtype)


__all__ = ["ExtractConfig", "SplitResult", "extract", "rebuild_command", "repair"]
