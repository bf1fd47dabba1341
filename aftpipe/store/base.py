"""The store protocol shared by both backends: a reader (`FeatureStore`) and a shard writer.

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
    ManifestError,
    check_manifest,
    clean_entry,
    describe_key_difference,
    expected_features,
    features_binding,
    index_binding,
    new_split_entry,
    now,
    sha256_bytes,
    split_complete,
    whole_chunks,
)


@dataclass(frozen=True)
class ShardStatus:
    rows: tuple[int, int]  # [start, stop) rows of the split
    sha256: str | None
    done: bool


@dataclass(frozen=True)
class SplitInfo:
    """What the manifest says of one split, typed: readers never walk the manifest dict themselves."""

    name: str
    n: int
    d: int
    fingerprint: str
    shards: tuple[ShardStatus, ...]
    wall_s: float  # extraction time spent on it, over every run that wrote to it
    examples_per_s: float | None  # of the last run that computed rows
    limit: int | None = None  # the extract's --limit, when one cut the split short

    @property
    def shards_done(self) -> int:
        return sum(s.done for s in self.shards)

    @property
    def complete(self) -> bool:
        return self.shards_done == len(self.shards)

    @classmethod
    def from_entry(cls, name: str, e: dict[str, Any]) -> SplitInfo:
        shards = tuple(ShardStatus(tuple(s["rows"]), s["sha256"], bool(s["done"])) for s in e["shards"])
        return cls(name, e["n"], e["d"], e["fingerprint"], shards, float(e.get("wall_s", 0.0)), e.get("examples_per_s"),
                   e.get("limit"))


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

    path: Path
    manifest: dict[str, Any]  # the JSON document; use the accessors below rather than its keys

    def _adopt(self, manifest: Any, where: str) -> None:
        """Take `manifest` as this store's, keeping what is wrong with each split's entry."""
        if (why := check_manifest(manifest)) is not None:
            raise ManifestError(unreadable_message(self.path, f"{where}: {why}", self._rebuild_command()))
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
    def splits(self) -> list[str]:
        """The finished splits whose manifest entries are intact."""
        return [s for s, e in self.manifest["splits"].items() if split_complete(e) and not self.entry_damage.get(s)]

    def split_infos(self) -> list[SplitInfo]:
        """Every split the manifest plans, finished or not."""
        return [SplitInfo.from_entry(n, e) for n, e in self.manifest["splits"].items()]

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
        return SplitInfo.from_entry(name, entry)

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
        entry = self.manifest["splits"][name]
        damage = list(self.entry_damage.get(name, []))
        want = expected_features(entry, self.storage)
        try:
            meta = self._features_meta(name)
            for k in ("dtype", "shape", "chunks", "shards", "layout"):
                if k in want and meta.get(k) != want[k]:
                    damage.append(Damage(name, "metadata", f"features {k} is {meta.get(k)}, the manifest says "
                                                           f"{want[k]}"))
        except Damaged as e:
            damage.append(Damage(name, "metadata", f"features array unreadable ({e})"))
        meta_ok = not any(d.kind == "metadata" for d in damage)
        try:
            index = self._index(name)
        except Damaged as e:
            index = None
            damage.append(Damage(name, "index", f"index array unreadable ({e})"))
        if index is not None:
            damage += _index_damage(name, index, entry, expected_index)
        done = [i for i, s in enumerate(entry["shards"]) if s["done"]]
        try:
            array, shard_damage = self._open_features(name, entry, index if index is not None else
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
        for name, entry in self.manifest["splits"].items():
            if not split_complete(entry):
                done = sum(s["done"] for s in entry["shards"])
                found.append(Damage(name, "unfinished", f"unfinished ({done}/{len(entry['shards'])} shards done)"))
            found += self.check_split(name, full=True).damage
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
    def _open_features(self, name: str, entry: dict[str, Any], index: np.ndarray, want: dict[str, Any],
                       meta_ok: bool) -> tuple[FeatureArray, list[Damage]]:
        """The features as a FeatureArray laid out as `want` (the binding) says, and the shards whose files are
        missing or malformed; raises Damaged when the bytes cannot be located at all. `meta_ok`: whether
        the array's own metadata agrees with the binding (else it is not used)."""

    @abstractmethod
    def nbytes_on_disk(self) -> int: ...


def _index_damage(name: str, index: np.ndarray, entry: dict[str, Any], expected: np.ndarray | None) -> list[Damage]:
    if index.dtype != INDEX_DTYPE or index.shape != (entry["n"],):
        return [Damage(name, "index", f"index array is {index.dtype}{list(index.shape)}, the manifest says "
                                      f"{INDEX_DTYPE}[{entry['n']}]")]
    if expected is not None:
        if not np.array_equal(index, expected):
            return [Damage(name, "index", f"index array differs from the rows extracted "
                                          f"({int((index != expected).sum())} of {len(index)} entries)")]
    elif "index" in entry and sha256_bytes(index) != entry["index"]["sha256"]:
        return [Damage(name, "index", "index array fails its checksum")]
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


class StoreWriter(ABC):
    """Creates, resumes or repairs a store. Subclasses own the bytes; this class owns the manifest's rules.

    Several processes may write one store (a multi-process extract): the writer of rank 0 owns the manifest
    (`open`, `plan_split`, `begin`, `finish`, as alone) and hands `shared_state()` to the others, whose
    writers `follow` it: they write only the shards given to them and record each in the store's journal
    (store/journal.py), which rank 0 merges (`merge_journal`) once every rank is done."""

    format: str

    def __init__(self, path: Path, key: dict[str, Any], provenance: dict[str, Any], dtype: str,
                 chunk_rows: int, shard_rows: int, overwrite: bool, log: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.journal = ShardJournal(path)
        self.follower = False  # a writer of rank > 0: shards and journal records only, never the manifest
        self.dtype = dtype
        self.np_dtype = STORAGE_DTYPES[dtype]
        self.chunk_rows = chunk_rows
        self.shard_rows = whole_chunks(shard_rows, chunk_rows)
        self.overwrite = overwrite
        self.log = log or (lambda message: None)
        storage = {"format": self.format, "dtype": dtype, "chunk_rows": chunk_rows, "shard_rows": shard_rows,
                   "compressor": None}
        self.key = {"format_version": FORMAT_VERSION, **key, "storage": storage}
        self.manifest: dict[str, Any] = {**copy.deepcopy(provenance), "key": self.key, "splits": {},
                                         "state": "in_progress", "created": now()}
        self.resumed_from: dict[str, Any] | None = None
        self.repaired: dict[str, list[str]] = {}  # split → what was found damaged and will be recomputed/rewritten
        self.dirty = False  # the manifest changed without any shard being written (bindings recorded, repairs)
        self._todo: list[Callable[[], None]] = []  # changes on disk planned by plan_split, made by begin()

    # -- the rules --------------------------------------------------------------------------------
    def check_existing(self, reader: FeatureStore | None) -> None:
        """Adopt the existing store `reader` opened (None: there is none) if it was built with the same
        arguments; refuse otherwise. `plan_split` later checks the adopted splits' arrays through it."""
        self._reader = None
        if reader is None or self.overwrite:
            self.journal.clear()  # records of a store that is gone, or being replaced
        if reader is None:
            return
        if self.overwrite:
            return self._discard_existing()
        existing = reader.manifest
        if existing.get("key") != self.key:
            diff = describe_key_difference(existing.get("key", {}), self.key)
            raise AftpipeError(
                f"store {self.path} was built with different arguments ({diff}); "
                f"pass {option_hint('overwrite')} to rebuild it, or choose another {option_name('cache_dir')}"
            )
        for name, problems in reader.entry_damage.items():
            for p in problems:
                self._note(name, p.detail)
        self._reader = reader
        self.manifest["splits"] = copy.deepcopy(existing["splits"])
        self.manifest["created"] = existing.get("created", self.manifest["created"])
        self.resumed_from = existing

    def _note(self, split: str, what: str) -> None:
        self.repaired.setdefault(split, []).append(what)
        self.log(f"{self.path} {split}: {what}; repairing it")

    @disk_errors
    def plan_split(self, name: str, plan: SplitPlan) -> None:
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
            self._todo.append(functools.partial(self._create_split, name, plan))
        else:
            self._check_split(name, entry, plan)
        entry["limit"] = plan.limit

    def _bind(self, entry: dict[str, Any], plan: SplitPlan) -> None:
        entry["features"] = features_binding(self.format, self.dtype, plan.n, plan.d, self.chunk_rows, self.shard_rows)
        entry["index"] = index_binding(plan.index)

    def _check_split(self, name: str, entry: dict[str, Any], plan: SplitPlan) -> None:
        """Check an adopted split's arrays against the manifest and the plan; mark for recomputation exactly
        the shards that fail, and plan the rewrite of damaged metadata or index arrays (done by `begin`)."""
        had = {k: entry.get(k) for k in ("features", "index")}
        self._bind(entry, plan)
        if had != {k: entry[k] for k in had}:
            self.dirty = True  # a manifest from before bindings, or a damaged binding: record the right one
        if self._reader is None:
            return
        self._adopt_records(name, entry)
        check = self._reader.check_split(name, full=True, expected_index=np.asarray(plan.index, INDEX_DTYPE))
        for d in check.damage:
            if d.kind != "entry":
                self._note(name, d.detail)
        kinds = {d.kind for d in check.damage}
        if "metadata" in kinds:
            self._todo.append(functools.partial(self._repair_features, name, plan))
        if "index" in kinds:
            self._todo.append(functools.partial(self._repair_index, name, plan))
        for i in sorted({d.shard for d in check.damage if d.kind == "shard" and d.shard is not None}):
            if entry["shards"][i]["done"]:
                entry["shards"][i].update(done=False, sha256=None)
                self._todo.append(functools.partial(self._drop_shard, name, i))
        if check.damage:
            entry["complete"] = split_complete(entry)
            self.dirty = True

    def _adopt_records(self, name: str, entry: dict[str, Any]) -> None:
        """Mark done the shards of `name` that the journal says a rank finished (a multi-process run that
        stopped before its manifest was written): they are re-hashed next, like every done shard."""
        adopted = []
        for r in self.journal.records():
            if r["split"] != name:
                continue
            adopted.append(r)
            shards = entry["shards"]
            i = r["shard"]
            if (r.get("fingerprint") == entry["fingerprint"] and 0 <= i < len(shards)
                    and list(r["rows"]) == list(shards[i]["rows"]) and not shards[i]["done"]):
                for e in (entry, self._reader.manifest["splits"][name]):
                    e["shards"][i].update(done=True, sha256=r["sha256"])
                    e["complete"] = split_complete(e)
        if adopted:
            self._adopted = [*getattr(self, "_adopted", []), *adopted]
            self.dirty = True

    @disk_errors
    def begin(self) -> None:
        """After every split is planned: refuse when the shards still to compute cannot fit, then make the
        planned changes on disk (new splits' arrays, repairs). Nothing is written before the space check."""
        self.check_space()
        for action in self._todo:
            action()
        self._todo.clear()
        if self.dirty:
            self._save_manifest(final=False)
        self.journal.forget(getattr(self, "_adopted", []))  # the manifest on disk holds them now
        self._adopted = []

    # -- several processes ------------------------------------------------------------------------
    def shared_state(self) -> dict[str, Any]:
        """What the writers of the other ranks need after `begin`: the planned splits (JSON-able)."""
        return {"splits": copy.deepcopy(self.manifest["splits"])}

    def follow(self, state: dict[str, Any]) -> None:
        """Become a writer of rank > 0 of the store rank 0 planned (`state` from its `shared_state`)."""
        self.follower = True
        self.manifest["splits"] = copy.deepcopy(state["splits"])

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
            self._save_manifest(final=False)
            self.journal.forget(records)
        return merged

    def split_info(self, name: str) -> SplitInfo:
        return SplitInfo.from_entry(name, self.manifest["splits"][name])

    def shards_done(self) -> int:
        return sum(s["done"] for e in self.manifest["splits"].values() for s in e["shards"])

    def bytes_to_write(self) -> int:
        """Bytes the shards still to compute will take."""
        itemsize = self.np_dtype.itemsize
        return sum((s["rows"][1] - s["rows"][0]) * e["d"] * itemsize
                   for e in self.manifest["splits"].values() for s in e["shards"] if not s["done"])

    def check_space(self) -> None:
        """Refuse to start when the shards still to write cannot fit, rather than fail half way."""
        if is_remote(self.path):
            return  # an object store has no free space to read; a full quota is the client's error
        need = self._space_needed()
        if need and need > (free := free_bytes(self.path)):
            raise AftpipeError(f"not enough space for the store {self.path}: it needs {human_bytes(need)}, the device has "
                               f"{human_bytes(free)} free; free some space or pass another {option_name('cache_dir')}")

    def _space_needed(self) -> int:
        rows = self.bytes_to_write()
        return rows + (1 << 20) if rows else 0  # + metadata and manifest rewrites

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
        self._write_rows(name, a, rows)
        sha = sha256_bytes(rows)
        if self.follower:  # rank 0 owns the manifest: say it in the journal, which it merges
            self.journal.record(name, shard, (a, b), sha, entry["fingerprint"])
        entry["shards"][shard].update(sha256=sha, done=True)
        entry["complete"] = split_complete(entry)
        if not self.follower:
            self._save_manifest(final=False)

    @disk_errors
    def finish(self, extra: dict[str, Any]) -> None:
        self.manifest.update(extra)
        self.manifest["state"] = "complete" if all(split_complete(e) for e in self.manifest["splits"].values()) \
            else "in_progress"
        self.manifest["updated"] = now()
        self._save_manifest(final=True)

    def abandon(self) -> None:
        """Remove what this writer created, when it created the store and never finished a shard."""
        self._discard_existing()

    def _discard_existing(self) -> None:
        from aftpipe.store.location import remove

        remove(self.path)

    # -- the bytes ----------------------------------------------------------------------------------
    @abstractmethod
    def open(self) -> None:
        """Create or reopen the store on disk (calls check_existing with what is there)."""

    @abstractmethod
    def _create_split(self, name: str, plan: SplitPlan) -> None: ...

    @abstractmethod
    def _repair_features(self, name: str, plan: SplitPlan) -> None:
        """Make the split's features array match its binding again, keeping the shard bytes that passed."""

    @abstractmethod
    def _repair_index(self, name: str, plan: SplitPlan) -> None: ...

    def _drop_shard(self, name: str, shard: int) -> None:
        """Forget a damaged shard's bytes before it is written again (a no-op where writes never read)."""

    @abstractmethod
    def _write_rows(self, name: str, start: int, rows: np.ndarray) -> None: ...

    @abstractmethod
    def _save_manifest(self, final: bool) -> None: ...

    def close(self) -> None:
        """Release resources; called on success and on error."""
