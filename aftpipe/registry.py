"""One small generic registry, used for datasets, feature sources, students and methods.

Entries are registered explicitly (no import side effects), duplicates are refused, and a miss lists
what is known. Names may carry an argument after a colon (`hf:/path/to/model`, `tsv:data.tsv`): the
registry resolves the exact name first, then the prefix before the first colon.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from aftpipe.errors import AftpipeError

T = TypeVar("T")


class UnknownNameError(AftpipeError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named table of factories. `kind` is used in messages ("no dataset `x`")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, help: str = "") -> T | Callable[[T], T]:
        """Register `obj` under `name`; usable as `reg.register("x", f)` or as `@reg.register("x")`.

        A name ending in ":" takes an argument (`hf:` matches `hf:bert-base-uncased`)."""

        def add(o: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} `{name}` is already registered")
            self._entries[name] = o
            own_doc = o.__doc__ if isinstance(o, (type, types.FunctionType)) else None  # not str's or int's
            lines = (own_doc or "").strip().splitlines()
            self._help[name] = help or (lines[0] if lines else "")
            return o

        return add if obj is None else add(obj)

    def resolve(self, spec: str) -> tuple[T, str | None]:
        """Return (entry, argument) for `spec`: `name` → (entry, None); `prefix:arg` → (entry, arg)."""
        if spec in self._entries and not spec.endswith(":"):
            return self._entries[spec], None
        prefix, sep, arg = spec.partition(":")
        if sep and prefix + ":" in self._entries:
            if not arg:
                raise AftpipeError(f"{self.kind} `{spec}` needs an argument after the colon, e.g. `{prefix}:NAME_OR_PATH`")
            return self._entries[prefix + ":"], arg
        known = ", ".join(self.names()) or "(none)"
        raise UnknownNameError(f"no {self.kind} `{spec}`; known: {known}")

    @staticmethod
    def split_options(spec: str) -> tuple[str, dict[str, Any]]:
        """`name@key=value,key=value` → (name, {key: value}), values read as YAML scalars (`2` is an int);
        a spec without `@key=value` is (spec, {}). How a pipeline gives one source or student its own options
        (`minilm@layer=2`, `textcnn@init_embeddings=minilm`)."""
        name, sep, extra = spec.rpartition("@")
        if not sep or "=" not in extra:
            return spec, {}
        import yaml

        pairs = [kv.partition("=") for kv in extra.split(",")]
        if any(not k.strip() or not eq for k, eq, _ in pairs):
            raise AftpipeError(f"`{spec}`: write its options as NAME@key=value,key=value")
        return name, {k.strip(): yaml.safe_load(v) for k, _, v in pairs}

    def __getitem__(self, name: str) -> T:
        """The entry registered under exactly `name` (`hf:` included), without resolving arguments."""
        if name not in self._entries:
            raise UnknownNameError(f"no {self.kind} `{name}`; known: {', '.join(self.names()) or '(none)'}")
        return self._entries[name]

    def get(self, spec: str) -> T:
        return self.resolve(spec)[0]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        return [(n, self._help[n]) for n in self.names()]

    def __contains__(self, spec: str) -> bool:
        try:
            self.resolve(spec)
            return True
        except AftpipeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
