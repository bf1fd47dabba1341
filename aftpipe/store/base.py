"""The store protocol shared by both backends: a reader (`FeatureStore`), and a writer in two parts: the
manifest's rules (`StoreWriter`, one for every format) and the bytes (`BytesWriter`, one per format).

A store holds one (dataset, source) pair: per split an (N, D) `features` array and an (N,) `index` array,
plus the manifest. Writers are shard-granular and idempotent: a shard is written whole, hashed, then marked
done in the manifest, so a killed extract resumes by skipping done shards and ends bit-identical.

Nothing on disk is trusted because the manifest says so. Opening a split compares what the arrays are
(dtype, shape, chunk/shard layout, the index's checksum, each shard file's size and index) with what the
manifest binds; `verify` also re-hashes every shard. A writer resuming a store runs the same checks on the
splits it is asked for and recomputes exactly the shards that fail them, which is how `extract` and
`aftpipe verify --repair` repair a store in place.
"""

from __future__ import annotations

import copy
import errno
import functools
import shlex
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from aftpipe.errors import AftpipeError, option_hint, option_name
from aftpipe.progress import human_bytes
from aftpipe.store.array import FeatureArray
from aftpipe.store.journal import ShardJournal
from aftpipe.store.location import is_remote
from aftpipe.store.manifest import (
    FORMAT_VERSION,
    INDEX_DTYPE,
    STORAGE_DTYPES,
    ArrayEntry,
    ManifestError,
    SplitInfo,
    check_manifest,
    clean_entry,
    describe_key_difference,
    features_binding,
    index_binding,
    new_split_entry,
    now,
    sha256_bytes,
    split_complete,
    whole_chunks,
)


@dataclass(frozen=True)
class SplitPlan:
    """What a writer needs to lay out one split before any compute."""

    n: int
    d: int
    index: np.ndarray  # (n,) dataset example index of each row
    fingerprint: str
    limit: int | None = None  # recorded, so a repair re-extracts the same rows


@dataclass(frozen=True)
class Damage:
    """One thing wrong with a split, by name. `kind`: entry (its manifest entry), metadata (the features
    array's dtype/shape/layout), index (the row → example array), shard (one shard's file or bytes), or
    unfinished (shards not yet written)."""

    split: str
    kind: str
    detail: str
    shard: int | None = None

    def __str__(self) -> str:
        return f"{self.split}: {self.detail}"


class Damaged(Exception):
    """Raised inside the checks by a backend that finds an array it cannot read."""


class Unreadable(Exception):
    """Raised by a backend whose manifest cannot be read, saying why; `FeatureStore` names the way out."""


def summary(e: BaseException) -> str:
    """An exception as a short phrase for a damage report."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def repair_hint(path: Path) -> str:
    return f"repair it with `aftpipe verify {path} --repair` (or re-run the extract command)"


@dataclass
class SplitCheck:
    """What opening one split found: the mapped array (None when it cannot be read at all) and the damage."""

    array: FeatureArray | None
    damage: list[Damage] = field(default_factory=list)


class FeatureStore(ABC):
    """A store opened for reading. `split(name)` is a memory-mapped `FeatureArray`, served only when the
    arrays agree with the manifest."""

    manifest: dict[str, Any]  # the JSON document; outside store/, use the accessors below rather than its keys
    where: str  # where the manifest is kept, for messages

    def __init__(self, path: Path, manifest: Any = None) -> None:
        """Open the store at `path`: its manifest read (or the one given), checked and adopted. One that cannot
        be used is a ManifestError that names the command rebuilding the store."""
        self.path = path
        try:
            manifest = self._read_manifest() if manifest is None else manifest
            if (why := check_manifest(manifest)) is not None:
                raise Unreadable(f"{self.where}: {why}")
        except Unreadable as e:
            raise ManifestError(unreadable_message(path, str(e), self._rebuild_command())) from None
        self._adopt(manifest)

    @abstractmethod
    def _read_manifest(self) -> Any:
        """The manifest document as stored; raises Unreadable saying what is wrong with it."""

    def _adopt(self, manifest: dict[str, Any]) -> None:
        """Take `manifest` as this store's, keeping what is wrong with each split's entry."""
        self.manifest = manifest
        self.entry_damage: dict[str, list[Damage]] = {}
        rows = whole_chunks(self.storage["shard_rows"], self.storage["chunk_rows"])
        for name in list(manifest["splits"]):
            entry, problems = clean_entry(manifest["splits"][name], rows)
            self.entry_damage[name] = [Damage(name, "entry", p) for p in problems]
            if entry is None:
                del manifest["splits"][name]
            else:
                manifest["splits"][name] = entry

    def _rebuild_command(self) -> str | None:
        """The extract command that built this store, read from the copy kept beside the arrays (the
        manifest may be the damaged part); None when none is readable."""
        return None

    @property
    def key(self) -> dict[str, Any]:
        """The store's identity: the source, the dataset and the storage it was extracted with."""
        return self.manifest["key"]

    @property
    def extract_options(self) -> dict[str, Any] | None:
        """The options of the extraction that built the store, as a repair re-runs it (None: not recorded)."""
        rec = self.manifest.get("extract")
        return rec if isinstance(rec, dict) else None

    @property
    def planned_splits(self) -> list[str]:
        """Every split the manifest plans, finished or not."""
        return list(self.manifest["splits"])

    @property
    def splits(self) -> list[str]:
        """The finished splits whose manifest entries are intact."""
        return [s for s, e in self.manifest["splits"].items() if split_complete(e) and not self.entry_damage.get(s)]

    def split_infos(self) -> list[SplitInfo]:
        """Every split the manifest plans, finished or not."""
        return [SplitInfo.from_entry(n, e, self.storage) for n, e in self.manifest["splits"].items()]

    def split_info(self, name: str) -> SplitInfo:
        entry = self.manifest["splits"].get(name)
        if entry is None:
            if self.entry_damage.get(name):
                raise AftpipeError(f"store {self.path} split `{name}`: {self.entry_damage[name][0].detail}; "
                                   f"{repair_hint(self.path)}")
            raise AftpipeError(
                f"store {self.path} has no split `{name}` (it has: {', '.join(self.manifest['splits']) or 'none'}); "
                f"extract it with `aftpipe extract ... --splits {name}`"
            )
        return SplitInfo.from_entry(name, entry, self.storage)

    @property
    def source(self) -> dict[str, Any]:
        """The source's provenance (library, model id, weights sha256, pooling, ...): keys vary by library."""
        return self.manifest.get("source", {})

    @property
    def foundation_params(self) -> int:
        return int(self.source.get("params") or 0)

    @property
    def dataset(self) -> dict[str, Any]:
        """name, modality, num_classes, metric, class_names, info."""
        return self.manifest.get("dataset", {})

    @property
    def views(self) -> int:
        return int((self.dataset.get("info") or {}).get("views", 1))

    @property
    def storage(self) -> dict[str, Any]:
        """format, dtype, chunk_rows, shard_rows, compressor."""
        return self.manifest["key"]["storage"]

    @property
    def state(self) -> str:
        return self.manifest.get("state", "in_progress")

    @property
    def built(self) -> dict[str, Any]:
        """When, on what, with which packages: created, updated, device, packages."""
        return {k: self.manifest.get(k) for k in ("created", "updated", "device", "packages")}

    @property
    def command(self) -> str | None:
        """The `aftpipe extract` command that (re)builds this store, as recorded in its manifest."""
        return self.manifest.get("command")

    # -- reading, checked ---------------------------------------------------------------------------------
    def split(self, name: str, verify: bool = False) -> FeatureArray:
        """The split's rows, memory-mapped. Refused when the split is unfinished or its arrays disagree with
        the manifest; `verify=True` also re-hashes every shard (what `train` does before trusting a store)."""
        info = self.split_info(name)
        if not info.complete:
            raise AftpipeError(
                f"split `{name}` of store {self.path} is unfinished; re-run the extract command to resume it"
            )
        check = self.check_split(name, full=verify)
        if check.damage:
            more = f" (and {len(check.damage) - 1} more)" if len(check.damage) > 1 else ""
            raise AftpipeError(f"store {self.path} split `{name}` is damaged: {check.damage[0].detail}{more}; "
                               f"{repair_hint(self.path)}")
        assert check.array is not None
        return check.array

    def check_split(self, name: str, full: bool = False, expected_index: np.ndarray | None = None) -> SplitCheck:
        """Open `name` and compare it with the manifest: the features array's metadata, the index array
        (against `expected_index` when given, else the recorded checksum), each done shard's file and, when
        `full`, each done shard's bytes against its checksum. Never raises for damage: it reports it.

        Shards are located from the manifest's binding, not from the array's own metadata, so a damaged
        metadata file does not hide which shards' bytes are still good (a repair keeps those)."""
        info = self.split_info(name)
        damage = list(self.entry_damage.get(name, []))
        want = info.features
        assert want is not None
        try:
            meta = self._features_meta(name)
            for k, v in want.bound().items():
                if k in ("dtype", "shape", "chunks", "shards", "layout") and meta.get(k) != v:
                    damage.append(Damage(name, "metadata", f"features {k} is {meta.get(k)}, the manifest says {v}"))
        except Damaged as e:
            damage.append(Damage(name, "metadata", f"features array unreadable ({e})"))
        meta_ok = not any(d.kind == "metadata" for d in damage)
        try:
            index = self._index(name)
        except Damaged as e:
            index = None
            damage.append(Damage(name, "index", f"index array unreadable ({e})"))
        if index is not None:
            damage += _index_damage(info, index, expected_index)
        done = [i for i, s in enumerate(info.shards) if s.done]
        try:
            array, shard_damage = self._open_features(info, index if index is not None else
                                                      np.empty(0, INDEX_DTYPE), want, meta_ok)
        except Damaged as e:  # the bytes cannot even be located: no done shard can be trusted
            return SplitCheck(None, damage + [Damage(name, "shard", f"shard {i} unreadable ({e})", i) for i in done])
        damage += [d for d in shard_damage if d.shard in done]
        if full:
            known = {d.shard for d in damage if d.kind == "shard"}
            for i in array.verify([i for i in done if i not in known]):
                damage.append(Damage(name, "shard", f"shard {i} fails its checksum", i))
        return SplitCheck(array, damage)

    def verify(self) -> list[Damage]:
        """Everything wrong with the store: every split checked in full, unfinished splits named."""
        found: list[Damage] = []
        for name, problems in self.entry_damage.items():
            if name not in self.manifest["splits"]:
                found += problems
        for info in self.split_infos():
            if not info.complete:
                found.append(Damage(info.name, "unfinished",
                                    f"unfinished ({info.shards_done}/{len(info.shards)} shards done)"))
            found += self.check_split(info.name, full=True).damage
        return found

    # -- the backend -------------------------------------------------------------------------------------
    @abstractmethod
    def _features_meta(self, name: str) -> dict[str, Any]:
        """{dtype (numpy str), shape, and chunks/shards (zarr) or layout (hdf5)} of the features array;
        raises Damaged when it cannot be read."""

    @abstractmethod
    def _index(self, name: str) -> np.ndarray:
        """The split's index array; raises Damaged when it cannot be read."""

    @abstractmethod
    def _open_features(self, info: SplitInfo, index: np.ndarray, want: ArrayEntry,
                       meta_ok: bool) -> tuple[FeatureArray, list[Damage]]:
        """The features as a FeatureArray laid out as `want` (the binding) says, and the shards whose files are
        missing or malformed; raises Damaged when the bytes cannot be located at all. `meta_ok`: whether
        the array's own metadata agrees with the binding (else it is not used)."""

    @abstractmethod
    def nbytes_on_disk(self) -> int: ...


def _index_damage(info: SplitInfo, index: np.ndarray, expected: np.ndarray | None) -> list[Damage]:
    if index.dtype != INDEX_DTYPE or index.shape != (info.n,):
        return [Damage(info.name, "index", f"index array is {index.dtype}{list(index.shape)}, the manifest says "
                                           f"{INDEX_DTYPE}[{info.n}]")]
    if expected is not None:
        if not np.array_equal(index, expected):
            return [Damage(info.name, "index", f"index array differs from the rows extracted "
                                               f"({int((index != expected).sum())} of {len(index)} entries)")]
    elif info.index is not None and sha256_bytes(index) != info.index.sha256:
        return [Damage(info.name, "index", "index array fails its checksum")]
    return []


def unreadable_message(path: Path, why: str, command: str | None) -> str:
    if command:  # recorded without --cache-dir: the store may have moved since
        how = f"`{command} --cache-dir {shlex.quote(str(path.parent.parent))}`"
    else:
        how = f"the `aftpipe extract` command that made it, with {option_hint('overwrite')}"
    return (f"store {path} has an unreadable manifest ({why}), so none of it can be checked or repaired in place; "
            f"rebuild it with {how}")


# --- writing ------------------------------------------------------------------------------------------------
F = TypeVar("F", bound=Callable[..., Any])


def free_bytes(path: Path) -> int:
    """Free space on the filesystem that holds `path` (its nearest existing parent)."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def disk_errors(fn: F) -> F:
    """A writer method whose OSErrors (disk full, read-only, permissions) become one-line AftpipeErrors:
    they are the user's environment, not a bug, and what is already done stays done."""

    @functools.wraps(fn)
    def wrapper(self: StoreWriter, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except OSError as e:
            if e.errno is None and "No space left" not in str(e):
                raise  # an OSError subclass without an errno (zarr's "array not found"): a bug, not the disk
            if e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e):
                raise AftpipeError(f"no space left on the device holding {self.path} ({human_bytes(free_bytes(self.path))} "
                                   "free); free some space and re-run the same command: finished shards are kept") from None
            raise AftpipeError(f"cannot write the store {self.path} ({e.strerror or summary(e)}); check that "
                               f"{option_name('cache_dir')} is writable, then re-run the same command") from None

    return wrapper  # type: ignore[return-value]


class BytesWriter(ABC):
    """Writes the bytes of one store in one format: what is at the path opened or cleared, arrays laid out and
    repaired, a shard's rows written at their place, the manifest document stored. It decides nothing about
    what is done or published: `StoreWriter` tells it what to write."""

    format: str

    def __init__(self, path: Path, dtype: str, chunk_rows: int, shard_rows: int, command: str | None,
                 log: Callable[[str], None]) -> None:
        self.path = path
        self.dtype = dtype
        self.np_dtype = STORAGE_DTYPES[dtype]
        self.chunk_rows = chunk_rows
        self.shard_rows = shard_rows  # whole chunks
        self.command = command  # kept beside the arrays too, for when the manifest is the damaged part
        self.log = log

    @abstractmethod
    def open(self, overwrite: bool) -> FeatureStore | None:
        """Clear what a killed write left behind and open the store already at the path for reading: None when
        there is none, or `overwrite` discards it. Refuses a path that holds something else."""

    def start(self, manifest: dict[str, Any], new: bool) -> None:
        """Begin writing the store whose manifest is `manifest` (`new`: nothing was adopted from the path)."""

    @abstractmethod
    def create_split(self, name: str, plan: SplitPlan, manifest: dict[str, Any]) -> None:
        """Lay out a new split's arrays; whatever was at their place goes."""

    @abstractmethod
    def repair_features(self, name: str, plan: SplitPlan) -> None:
        """Make the split's features array match its binding again, keeping the shard bytes that passed."""

    @abstractmethod
    def repair_index(self, name: str, plan: SplitPlan) -> None: ...

    def drop_shard(self, name: str, shard: int) -> None:
        """Forget a damaged shard's bytes before it is written again (a no-op where writes never read)."""

    def space_needed(self, splits: dict[str, Any]) -> int:
        """Bytes still to write for the manifest's `splits`: their unfinished shards, and room for metadata."""
        rows = sum((s["rows"][1] - s["rows"][0]) * e["d"] * self.np_dtype.itemsize
                   for e in splits.values() for s in e["shards"] if not s["done"])
        return rows + (1 << 20) if rows else 0

    def prepare(self, splits: dict[str, Any], plans: dict[str, SplitPlan]) -> Carried | None:
        """Make ready what the rows of the manifest's `splits` are written into, once the planned changes are
        made. A format that rewrites the store to do so says what it carried over (None: nothing rewritten)."""
        return None

    def shared_state(self) -> dict[str, Any]:
        """What the byte writers of the other ranks need to write into this store (JSON-able)."""
        return {}

    def follow(self, state: dict[str, Any]) -> None:
        """Write into the store rank 0 prepared (`state` from its `shared_state`)."""

    def write_rows(self, name: str, start: int, rows: np.ndarray) -> None:
        """Write the rows of split `name` from row `start` on (a whole shard), in the storage dtype."""
        self._write_rows(name, start, np.ascontiguousarray(rows, dtype=self.np_dtype))

    @abstractmethod
    def _write_rows(self, name: str, start: int, rows: np.ndarray) -> None: ...

    @abstractmethod
    def save_manifest(self, manifest: dict[str, Any], final: bool) -> None:
        """Store the manifest: progress while writing, or (`final`) the store published under its name."""

    @abstractmethod
    def discard(self) -> None:
        """Remove what this store's writing made (`--overwrite`, or a new store that never got a shard)."""

    def close(self) -> None:
        """Release resources; called on success and on error."""


@dataclass(frozen=True)
class Carried:
    """What a format that rewrites its store carried over from the old one: per split copied, the done shards
    whose bytes passed their checksum (a split absent was not copied); the splits it could not keep at all."""

    kept: dict[str, set[int]]
    dropped: tuple[str, ...] = ()


class StoreWriter:
    """Creates, resumes or repairs a store: the manifest's rules (what is adopted, refused, recomputed and
    published). It writes no byte itself: its `byte_writer` (a `BytesWriter` of the store's format) does.

    Several processes may write one store (a multi-process extract): the writer of rank 0 owns the manifest
    (`open`, `plan_split`, `begin`, `finish`, as alone) and hands `shared_state()` to the others, whose
    writers `follow` it: they write only the shards given to them and record each in the store's journal
    (store/journal.py), which rank 0 merges (`merge_journal`) once every rank is done."""

    def __init__(self, path: Path, format: type[BytesWriter], key: dict[str, Any], provenance: dict[str, Any],
                 dtype: str, chunk_rows: int, shard_rows: int, overwrite: bool,
                 log: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.log = log or (lambda message: None)
        self.shard_rows = whole_chunks(shard_rows, chunk_rows)
        self.byte_writer = format(path, dtype, chunk_rows, self.shard_rows, provenance.get("command"), self.log)
        self.np_dtype = self.byte_writer.np_dtype
        self.journal = ShardJournal(path)
        self.follower = False  # a writer of rank > 0: shards and journal records only, never the manifest
        self.overwrite = overwrite
        storage = {"format": format.format, "dtype": dtype, "chunk_rows": chunk_rows, "shard_rows": shard_rows,
                   "compressor": None}
        self.key = {"format_version": FORMAT_VERSION, **key, "storage": storage}
        self.manifest: dict[str, Any] = {**copy.deepcopy(provenance), "key": self.key, "splits": {},
                                         "state": "in_progress", "created": now()}
        self.existing: FeatureStore | None = None  # the store found at the path and adopted
        self.plans: dict[str, SplitPlan] = {}
        self.repaired: dict[str, list[str]] = {}  # split → what was found damaged and will be recomputed/rewritten
        self.dirty = False  # the manifest changed without any shard being written (bindings recorded, repairs)
        self._todo: list[Callable[[], None]] = []  # changes on disk planned by plan_split, made by begin()
        self._adopted: list[dict[str, Any]] = []  # journal records taken into the manifest, forgotten by begin()

    def needs_publishing(self, wrote: bool) -> bool:
        """Whether `finish` has anything to record: shards written, the manifest changed, a new store, or one
        that was not complete."""
        return wrote or self.dirty or self.existing is None or self.existing.state != "complete"

    # -- the rules --------------------------------------------------------------------------------
    @disk_errors
    def open(self) -> None:
        """Open or create the store: adopt the one at the path if it was built with the same arguments,
        refuse it otherwise. `plan_split` later checks the adopted splits' arrays through it."""
        existing = self.byte_writer.open(self.overwrite)
        if existing is None or self.overwrite:
            self.journal.clear()  # records of a store that is gone, or being replaced
        if existing is not None:
            self._adopt_existing(existing)
        self.byte_writer.start(self.manifest, new=existing is None)

    def _adopt_existing(self, existing: FeatureStore) -> None:
        if existing.manifest.get("key") != self.key:
            diff = describe_key_difference(existing.manifest.get("key", {}), self.key)
            raise AftpipeError(
                f"store {self.path} was built with different arguments ({diff}); "
                f"pass {option_hint('overwrite')} to rebuild it, or choose another {option_name('cache_dir')}"
            )
        for name, problems in existing.entry_damage.items():
            for p in problems:
                self._note(name, p.detail)
        self.existing = existing
        self.manifest["splits"] = copy.deepcopy(existing.manifest["splits"])
        self.manifest["created"] = existing.manifest.get("created", self.manifest["created"])

    def _note(self, split: str, what: str) -> None:
        self.repaired.setdefault(split, []).append(what)
        self.log(f"{self.path} {split}: {what}; repairing it")

    @disk_errors
    def plan_split(self, name: str, plan: SplitPlan) -> None:
        self.plans[name] = plan
        entry = self.manifest["splits"].get(name)
        if entry is not None and (entry["n"], entry["d"], entry["fingerprint"]) != (plan.n, plan.d, plan.fingerprint):
            if not self.overwrite:
                what = "rows" if entry["n"] != plan.n else ("dim" if entry["d"] != plan.d else "dataset fingerprint")
                raise AftpipeError(
                    f"store {self.path} split `{name}` was extracted from other data ({what}: "
                    f"{entry['n']}×{entry['d']} {entry['fingerprint'][:12]} vs now {plan.n}×{plan.d} "
                    f"{plan.fingerprint[:12]}); pass {option_hint('overwrite')} to re-extract it"
                )
            entry = None
        if entry is None:
            self.journal.forget([r for r in self.journal.records() if r["split"] == name])
            entry = new_split_entry(plan.n, plan.d, plan.fingerprint, self.shard_rows)
            self.manifest["splits"][name] = entry
            self._bind(entry, plan)
            self._todo.append(functools.partial(self.byte_writer.create_split, name, plan, self.manifest))
        else:
            self._check_split(name, entry, plan)
        entry["limit"] = plan.limit

    def _bind(self, entry: dict[str, Any], plan: SplitPlan) -> None:
        out = self.byte_writer
        entry["features"] = features_binding(out.format, out.dtype, plan.n, plan.d, out.chunk_rows, self.shard_rows)
        entry["index"] = index_binding(plan.index)

    def _check_split(self, name: str, entry: dict[str, Any], plan: SplitPlan) -> None:
        """Check an adopted split's arrays against the manifest and the plan; mark for recomputation exactly
        the shards that fail, and plan the rewrite of damaged metadata or index arrays (done by `begin`)."""
        had = {k: entry.get(k) for k in ("features", "index")}
        self._bind(entry, plan)
        if had != {k: entry[k] for k in had}:
            self.dirty = True  # a manifest from before bindings, or a damaged binding: record the right one
        if self.existing is None:
            return
        self._adopt_records(name, entry)
        check = self.existing.check_split(name, full=True, expected_index=np.asarray(plan.index, INDEX_DTYPE))
        for d in check.damage:
            if d.kind != "entry":
                self._note(name, d.detail)
        kinds = {d.kind for d in check.damage}
        if "metadata" in kinds:
            self._todo.append(functools.partial(self.byte_writer.repair_features, name, plan))
        if "index" in kinds:
            self._todo.append(functools.partial(self.byte_writer.repair_index, name, plan))
        for i in sorted({d.shard for d in check.damage if d.kind == "shard" and d.shard is not None}):
            if entry["shards"][i]["done"]:
                entry["shards"][i].update(done=False, sha256=None)
                self._todo.append(functools.partial(self.byte_writer.drop_shard, name, i))
        if check.damage:
            entry["complete"] = split_complete(entry)
            self.dirty = True

    def _adopt_records(self, name: str, entry: dict[str, Any]) -> None:
        """Mark done the shards of `name` that the journal says a rank finished (a multi-process run that
        stopped before its manifest was written): they are re-hashed next, like every done shard."""
        assert self.existing is not None
        adopted = []
        for r in self.journal.records():
            if r["split"] != name:
                continue
            adopted.append(r)
            shards = entry["shards"]
            i = r["shard"]
            if (r.get("fingerprint") == entry["fingerprint"] and 0 <= i < len(shards)
                    and list(r["rows"]) == list(shards[i]["rows"]) and not shards[i]["done"]):
                for e in (entry, self.existing.manifest["splits"][name]):  # the check re-hashes what it marks done
                    e["shards"][i].update(done=True, sha256=r["sha256"])
                    e["complete"] = split_complete(e)
        if adopted:
            self._adopted += adopted
            self.dirty = True

    @disk_errors
    def begin(self) -> None:
        """After every split is planned: refuse when the shards still to compute cannot fit, then make the
        planned changes on disk (new splits' arrays, repairs). Nothing is written before the space check."""
        self.check_space()
        for action in self._todo:
            action()
        self._todo.clear()
        carried = self.byte_writer.prepare(self.manifest["splits"], self.plans)
        if carried is not None:
            self._apply(carried)
        if self.dirty or carried is not None:
            self._save(final=False)
        self.journal.forget(self._adopted)  # the manifest on disk holds them now
        self._adopted = []

    def _apply(self, carried: Carried) -> None:
        """Take into the manifest what a rewrite of the store kept: a shard it did not carry over is not done."""
        for name in carried.dropped:
            self.log(f"{self.path} {name}: its index array is unreadable; dropping the split (extract it again)")
            del self.manifest["splits"][name]
        for name, entry in self.manifest["splits"].items():
            kept = carried.kept.get(name)
            for i, s in enumerate(entry["shards"]):
                if s["done"] and (kept is None or i not in kept):
                    if kept is not None:
                        self._note(name, f"shard {i} fails its checksum")
                    s.update(done=False, sha256=None)
            entry["complete"] = split_complete(entry)

    # -- several processes ------------------------------------------------------------------------
    @disk_errors
    def shared_state(self) -> dict[str, Any]:
        """What the writers of the other ranks need after `begin`: the planned splits (JSON-able)."""
        return {"splits": copy.deepcopy(self.manifest["splits"]), **self.byte_writer.shared_state()}

    def follow(self, state: dict[str, Any]) -> None:
        """Become a writer of rank > 0 of the store rank 0 planned (`state` from its `shared_state`)."""
        self.follower = True
        self.manifest["splits"] = copy.deepcopy(state["splits"])
        self.byte_writer.follow(state)

    @disk_errors
    def merge_journal(self) -> int:
        """Rank 0, once every rank has finished: take the other ranks' finished shards into the manifest
        (and save it); returns how many."""
        records = self.journal.records()
        merged = 0
        for r in records:
            entry = self.manifest["splits"].get(r["split"])
            if entry is None or r.get("fingerprint") != entry["fingerprint"] or not 0 <= r["shard"] < len(entry["shards"]):
                continue
            shard = entry["shards"][r["shard"]]
            if list(r["rows"]) == list(shard["rows"]):
                shard.update(done=True, sha256=r["sha256"])
                entry["complete"] = split_complete(entry)
                merged += 1
        if records:
            self._save(final=False)
            self.journal.forget(records)
        return merged

    def split_info(self, name: str) -> SplitInfo:
        return SplitInfo.from_entry(name, self.manifest["splits"][name], self.key["storage"])

    def shards_done(self) -> int:
        return sum(s["done"] for e in self.manifest["splits"].values() for s in e["shards"])

    def check_space(self) -> None:
        """Refuse to start when the shards still to write cannot fit, rather than fail half way."""
        if is_remote(self.path):
            return  # an object store has no free space to read; a full quota is the client's error
        need = self.byte_writer.space_needed(self.manifest["splits"])
        if need and need > (free := free_bytes(self.path)):
            raise AftpipeError(f"not enough space for the store {self.path}: it needs {human_bytes(need)}, the device "
                               f"has {human_bytes(free)} free; free some space or pass another "
                               f"{option_name('cache_dir')}")

    def record_timing(self, name: str, wall_s: float, rows_computed: int) -> None:
        """Add a run's extraction time to the split (saved with the next manifest write)."""
        entry = self.manifest["splits"][name]
        entry["wall_s"] = entry.get("wall_s", 0.0) + wall_s
        if rows_computed:
            entry["examples_per_s"] = round(rows_computed / max(wall_s, 1e-9), 1)

    @disk_errors
    def write_shard(self, name: str, shard: int, rows: np.ndarray) -> None:
        entry = self.manifest["splits"][name]
        a, b = entry["shards"][shard]["rows"]
        rows = np.ascontiguousarray(rows, dtype=self.np_dtype)
        if rows.shape != (b - a, entry["d"]):
            raise ValueError(f"shard {shard} of {name}: expected {(b - a, entry['d'])} rows, got {rows.shape}")
        self.byte_writer.write_rows(name, a, rows)
        sha = sha256_bytes(rows)
        if self.follower:  # rank 0 owns the manifest: say it in the journal, which it merges
            self.journal.record(name, shard, (a, b), sha, entry["fingerprint"])
        entry["shards"][shard].update(sha256=sha, done=True)
        entry["complete"] = split_complete(entry)
        if not self.follower:
            self._save(final=False)

    @disk_errors
    def finish(self, extra: dict[str, Any]) -> None:
        self.manifest.update(extra)
        self.manifest["state"] = "complete" if all(split_complete(e) for e in self.manifest["splits"].values()) \
            else "in_progress"
        self.manifest["updated"] = now()
        self._save(final=True)

    def _save(self, final: bool) -> None:
        self.byte_writer.save_manifest(self.manifest, final)

    def abandon(self) -> None:
        """Remove what this writer created, when it created the store and never finished a shard."""
        self.byte_writer.discard()

    def close(self) -> None:
        """Release resources; called on success and on error."""
        self.byte_writer.close()
