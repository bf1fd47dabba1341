"""Configs: frozen dataclasses that check themselves once, on construction, and a strict dict/YAML loader.

Every config in aftpipe (ExtractConfig, TrainConfig, MethodConfig, StudentConfig, the pipeline schema, ...)
subclasses `Config`. Its `__post_init__` converts and type-checks each field against its annotation
(`features="x"` becomes `("x",)`, a nested mapping becomes its dataclass, an int passes as a float, but
`lr="1e-3"` is refused), then runs the class's own `validate()`. So a config that exists has valid values,
whether it came from the CLI, a pipeline YAML, a run's `config.yaml` or Python, and no other code re-checks
them. The names it holds are the registries' to know: `components.resolve` looks them up, once, where the
config enters the API.

Errors are `ConfigError`s carrying the field's path (`methods[2].options.tau`): Python and YAML show the
path, the CLI shows its flag (`--tau`). The converter is ours rather than pydantic's because the rules
here are few and strict (no "3" → 3 coercion, unknown keys refused with a did-you-mean, one line per
error with its path), which is about as much code to configure in pydantic as to write.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
import os
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from aftpipe.errors import AftpipeError, option_name

PathPart = Union[str, int]
T = TypeVar("T")
C = TypeVar("C", bound="Config")


class Partial(Generic[T]):
    """Annotation for a mapping of some of dataclass T's fields, each converted to its type (a pipeline's
    shared `train:` settings are a `Partial[TrainConfig]`). The full config is built and validated later."""


def format_path(path: tuple[PathPart, ...]) -> str:
    """("methods", 2, "beta") → "methods[2].beta"."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class ConfigError(AftpipeError):
    """A config value the user can fix. `path` names the field (`("method_options", "beta")`), `message`
    says what is wrong ("must be ≥ 0, got -1")."""

    def __init__(self, path: tuple[PathPart, ...] | str, message: str) -> None:
        self.path = (path,) if isinstance(path, str) else tuple(path)
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{format_path(self.path)}: {self.message}" if self.path else self.message

    def under(self, *prefix: PathPart) -> ConfigError:
        """The same error for a field nested under `prefix`."""
        return ConfigError((*prefix, *self.path), self.message)


def require(ok: bool, field: str | tuple[PathPart, ...], message: str) -> None:
    """Raise `ConfigError(field, message)` unless `ok`; the validators' one-liner."""
    if not ok:
        raise ConfigError(field, message)


class Config:
    """Base of every config dataclass: fields converted and checked on construction, then `validate()`.

    Subclasses are `@dataclass(frozen=True)` and put their value rules (ranges, names, cross-field rules)
    in `validate`, raising through `require` / `ConfigError`. A config made of others by inheritance (the
    flat `MethodConfig` is every method's options) runs each part's `validate`, bases first."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = convert(getattr(self, f.name), hints[f.name], (f.name,))
            object.__setattr__(self, f.name, value)
        for cls in reversed(type(self).__mro__):
            if "validate" in vars(cls):
                vars(cls)["validate"](self)

    def validate(self) -> None:
        """Value rules of this class's own fields; nothing by default."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def of(cls: type[C], bag: Any) -> C:
        """This class's fields, taken from `bag`: a config holding them (a component's own options out of the
        flat one the CLI and YAML fill)."""
        return bag if type(bag) is cls else cls(**{name: getattr(bag, name) for name in cls.field_names()})

    def changed(self) -> list[str]:
        """The fields set away from their defaults."""
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return [f.name for f in fields if getattr(self, f.name) != default_of(f)]

    def with_defaults(self: C, defaults: Mapping[str, Any]) -> C:
        """This config with every None field that `defaults` names filled in (a component's own defaults)."""
        return dataclasses.replace(self, **{k: v for k, v in defaults.items()  # type: ignore[type-var]
                                            if k in self.field_names() and getattr(self, k) is None})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML values (tuples as lists), the inverse of `from_dict`."""
        return to_plain(self)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (made fresh where it has a factory); MISSING for a required field."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def refuse_undeclared(kind: str, name: str, options: type[Config], given: Iterable[str]) -> None:
    """Refuse the first option in `given` (field names) that `options`, the own options of the `kind` `name`
    (a method, a student), does not declare, as a `ConfigError` at that field naming what it takes."""
    own = options.field_names()
    for key in given:
        if key not in own:
            takes = f"takes {', '.join(map(option_name, own))}" if own else "takes no options"
            raise ConfigError(key, f"does not apply to {kind} `{name}`; drop it (`{name}` {takes})")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def shown(value: Any) -> str:
    """`value` as an error message shows it: its repr, cut short (a YAML value can be any size)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlist, r.maxtuple, r.maxdict = 3, 80, 80, 6, 6, 6
    return r.repr(value)


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))  # null: "the default", unsaid
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (tuple, list):
        inner = _describe(args[0])
        return "a list of " + {"a number": "numbers", "an integer": "integers", "a string": "strings",
                                 "a mapping": "mappings"}.get(inner, inner)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, "a mapping")


def _scalar(value: Any, tp: type, path: tuple[PathPart, ...]) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif tp is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        ok = isinstance(value, str)
    else:
        raise TypeError(f"no conversion for {tp!r}")  # a bug in a config class, not a user error
    if not ok:
        raise ConfigError(path, f"expected {_describe(tp)}, got {shown(value)}")
    return float(value) if tp is float else (int(value) if tp is int else value)


def convert(value: Any, tp: Any, path: tuple[PathPart, ...] = ()) -> Any:
    """`value` as type `tp`: bool/int/float/str, Literal[...], X | None, tuple[X, ...], dict[str, X] or a
    `Config` dataclass (from an instance or a mapping). Ints pass as floats, paths as strings, one string as
    a one-element tuple of strings; nothing else is coerced."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        mapped = [a for a in arms if isinstance(a, type) and dataclasses.is_dataclass(a)]
        if isinstance(value, Mapping) and len(mapped) == 1:  # a mapping is meant for the config arm: say what is wrong in it
            return convert(value, mapped[0], path)
        for arm in arms:
            try:
                return convert(value, arm, path)
            except ConfigError as e:
                if len(arms) == 1 and e.path != path:
                    raise  # a nested field is wrong: say which
        raise ConfigError(path, f"expected {_describe(tp)}, got {shown(value)}")
    if origin is Partial:
        hints = _hints(args[0])
        value = check_keys({} if value is None else value, [f.name for f in dataclasses.fields(args[0])], path)
        return {str(k): convert(v, hints[k], (*path, str(k))) for k, v in value.items()}
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise ConfigError(path, f"expected {_describe(tp)}, got {shown(value)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, path)
    if origin in (tuple, list):
        if isinstance(value, (str, os.PathLike)) and (args[0] is str or get_origin(args[0]) is Literal):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected {_describe(tp)}, got {shown(value)}")
        return tuple(convert(v, args[0], (*path, i)) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a mapping, got {shown(value)}")
        return {str(k): convert(v, args[1], (*path, str(k))) for k, v in value.items()}
    return _scalar(value, tp, path)


def check_keys(value: Any, known: list[str], path: tuple[PathPart, ...] = ()) -> Mapping:
    """`value` if it is a mapping whose keys are all `known`; else the first stranger, with a did-you-mean."""
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping, got {shown(value)}")
    for k in value:
        if k not in known:
            close = difflib.get_close_matches(str(k), known, n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"known: {', '.join(known)}"
            raise ConfigError((*path, str(k)), f"unknown key; {hint}")
    return value


def from_dict(cls: type, data: Any, path: tuple[PathPart, ...] = ()) -> Any:
    """An instance of dataclass `cls` from a mapping: unknown keys, missing required keys and wrong types
    are refused as `ConfigError`s whose path starts at `path`."""
    fields = dataclasses.fields(cls)
    data = check_keys(data, [f.name for f in fields], path)
    missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError((*path, missing[0]), "required key missing")
    try:
        return cls(**data)
    except ConfigError as e:
        raise e.under(*path) from None


# --- YAML ------------------------------------------------------------------------------------------------
MAX_ALIASED_VALUES = 100_000  # values YAML aliases may add to a file: far past any config, far short of a bomb


def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML reads `1e-3` as a string (YAML 1.1 wants `1.0e-3`); grids are written that way, so
        floats without a dot are resolved as numbers here. Unlike PyYAML, a key given twice in one mapping
        is refused (the last would silently win), and so are aliases that expand past MAX_ALIASED_VALUES
        values or into themselves."""

        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                _check_aliases(node)
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                first: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                        continue  # `<<` merges are overridden by design; a complex key fails on its own
                    key = self.construct_object(key_node)
                    if key in first:
                        raise _YamlInputError(f"the key `{key}` is given twice (also line {first[key] + 1}); keep one",
                                              key_node.start_mark)
                    first[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                      |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                      |\.[0-9_]+(?:[eE][-+][0-9]+)?
                      |[-+]?\.(?:inf|Inf|INF)
                      |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."),
    )
    return Loader


class _YamlInputError(Exception):
    """A YAML document that parses but is refused (a repeated key, runaway aliases), with where it is."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.mark = mark


def _check_aliases(root: Any) -> None:
    """Refuse a document whose aliases expand it by more than MAX_ALIASED_VALUES values (a "billion laughs"
    file is a few lines that expand to billions) or into itself. Sizes are memoised per node, so this costs
    one visit of each node the file really holds."""
    size: dict[int, int] = {}
    open_: set[int] = set()
    distinct = 0

    def expanded(node: Any) -> int:
        nonlocal distinct
        if id(node) in size:
            return size[id(node)]
        if id(node) in open_:
            raise _YamlInputError("an alias refers to a value that contains it; write the value out", node.start_mark)
        open_.add(id(node))
        distinct += 1
        children = node.value if isinstance(node.value, list) else []
        total = 1 + sum(expanded(c) for item in children for c in (item if isinstance(item, tuple) else (item,)))
        open_.discard(id(node))
        size[id(node)] = total
        if total - distinct > MAX_ALIASED_VALUES:
            raise _YamlInputError(f"its aliases expand to more than {MAX_ALIASED_VALUES:,} values; write the values "
                                  "out instead of repeating aliases", node.start_mark)
        return total

    expanded(root)


def load_yaml(path: str | Path, what: str = "file") -> Any:
    """A YAML file's data (safe loader, strict: see `_yaml_loader`), or a one-line `AftpipeError` naming the
    file and the line."""
    import yaml

    p = Path(path)
    try:
        return yaml.load(p.read_text(), Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise AftpipeError(f"no {what} {p}") from None
    except _YamlInputError as e:
        where = f" line {e.mark.line + 1}" if e.mark is not None else ""
        raise AftpipeError(f"{p}:{where}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or e).splitlines()[0][:200]
        raise AftpipeError(f"{p}:{where}: not valid YAML ({problem}); fix the syntax") from None
    except RecursionError:
        raise AftpipeError(f"{p}: nested too deeply to read; flatten it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AftpipeError(f"cannot read {p} ({e}); check the path") from None


def dump_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(to_plain(data), sort_keys=False)


def load_config(cls: type, path: str | Path) -> Any:
    """A `cls` from a YAML file written by `dump_yaml(config)`, checked like any other."""
    try:
        return from_dict(cls, load_yaml(path, "config file"))
    except ConfigError as e:
        raise AftpipeError(f"{path}: {e}") from None


# --- the configs ------------------------------------------------------------------------------------------
# Every option a user can set, with its default and its rules, in one place: the CLI shows these defaults,
# pipelines and run directories are read into these classes, and importing them loads no framework. A config
# checks its own values only; the names in it (dataset, sources, student, method) are looked up in their
# registries where it enters the API (aftpipe/components.py).


def with_overrides(options: Any, extra: dict[str, Any], spec: str) -> Any:
    """`options` with the fields a spec's `@key=value` names replaced (converted and checked)."""
    if not extra:
        return options
    try:
        return from_dict(type(options), {**options.to_dict(), **extra})
    except ConfigError as e:
        raise AftpipeError(f"`{spec}`: {e}") from None


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None, flag: str | None = None,
           panel: str | None = None, aliases: tuple[str, ...] = (), metavar: str | None = None,
           common: bool = False) -> Any:
    """A config field that is also a command-line option: `help` is its `--help` line (fields without one
    stay off the CLI), `flag` its name where that is not `--field-name`, `aliases` other spellings it also
    accepts (`--output-dir` for `--out`), `panel` the `--help` panel it is listed in (a nested config's
    panel is that of its fields without their own) and `metavar` what its value is called in `--help`
    (default: from its type). `common` options are the ones `-h` lists; `--help-all` lists every one."""
    meta = {"help": help, "flag": flag, "panel": panel, "aliases": tuple(aliases), "metavar": metavar,
            "common": common}
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


def flag_of(name: str | tuple[PathPart, ...]) -> str:
    """The command-line flag of a config field, by its name or by an error's path (its last name): `out` →
    --out, ("method_options", "beta") → --beta, ("sources", 1) → --source. A field declared with `flag=` has
    that flag wherever the field is; every other field's is --field-name."""
    if not isinstance(name, str):
        name = next((p for p in reversed(name) if isinstance(p, str)), "")
    classes = [Config]
    for cls in classes:  # every config class defined so far, wherever it is declared
        f = getattr(cls, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("flag"):
            return f.metadata["flag"]
        classes.extend(cls.__subclasses__())
    return "--" + name.replace("_", "-")


# The --help panels, in the order they are shown
DATA, MODEL, METHOD, OPTIMISATION, OUTPUT, SYSTEM = "Data", "Model", "Method", "Optimisation", "Output", "System"


def at_least(cfg: Config, lo: float, *names: str) -> None:
    """Each named field (None passes: "the default") must be ≥ lo."""
    for name in names:
        v = getattr(cfg, name)
        require(v is None or v >= lo, name, f"must be ≥ {lo}, got {v:g}" if isinstance(v, float) else
                f"must be ≥ {lo}, got {v}")


@dataclass(frozen=True)
class DatasetOptions(Config):
    """Options for generic file datasets (columns) and for any text dataset (views)."""

    text_col: str | None = option(None, "text column of tsv/csv/jsonl/parquet/hf data (default: text, sentence or "
                                  "content)", metavar="NAME")
    label_col: str | None = option(None, "label column of tsv/csv/jsonl/parquet/hf data (default: label)",
                                   metavar="NAME")
    # hub datasets name their splits train/validation/test; GLUE's test has no labels, so its validation is the test
    split_map: dict[str, str] = option(help="hf: keep only these splits, renamed: --split-map validation=test "
                                       "(repeatable; default: every split under its own name)",
                                       factory=dict, metavar="FROM=TO")
    # K > 1: K − 1 augmented, unlabeled copies of each train example (text; data/views.py), with their own stores
    views: int = option(1, "text: K views per train example (K − 1 augmented, unlabeled copies)", metavar="K")
    # a single file is a `train` split alone; a run needs rows it never trained on (data/splits.py)
    test_fraction: float | None = option(None, "hold out this fraction of the labelled train rows as the test split "
                                         "(stratified by label; default: 0.2 when the dataset has only a train "
                                         "split; 0: none)", metavar="F")
    split_seed: int = option(0, "seed of the rows --test-fraction holds out (the same rows every time)")

    def validate(self) -> None:
        at_least(self, 1, "views")
        at_least(self, 0, "split_seed")
        require(self.test_fraction is None or 0 <= self.test_fraction < 1, "test_fraction",
                f"must be in [0, 1), got {self.test_fraction:g}" if self.test_fraction is not None else "")
        for old, new in self.split_map.items():
            require(bool(old) and bool(new), ("split_map", old), "split names must not be empty")
        twice = [v for v in set(self.split_map.values()) if list(self.split_map.values()).count(v) > 1]
        require(not twice, "split_map", f"maps two splits to `{twice[0] if twice else ''}`; give each its own name")
        require(self.text_col != (self.label_col or "label"), "text_col",
                f"`{self.text_col}` is the label column; name the column that holds the text")


# --- each component's own options -------------------------------------------------------------------------
# A source, a student and a method read only the options of its own dataclass below, which its class names as
# `Options` (e.g. `TOKT.Options = TOKTOptions`) and receives as its own instance (`TOKTOptions.of(flat)`). The
# CLI and YAML set them through one flat config per kind (`SourceOptions`, `StudentConfig`, `MethodConfig`: the
# union of its kind's dataclasses, by inheritance, so each option is declared once), and a flat option set for
# a component that does not declare it is refused by name where the config enters the API (components.py).
# They are declared here rather than beside their components so that the CLI reads every option without
# importing a framework.


@dataclass(frozen=True)
class NoOptions(Config):
    """A component that reads no options: `none`, the linear probe, the `model:` source."""


@dataclass(frozen=True)
class LayerOption(Config):
    layer: int = option(-1, "hidden layer to pool: -1 the last, 0 the embeddings")


@dataclass(frozen=True)
class HFSourceOptions(LayerOption):
    """`minilm` and `hf:` sources."""

    # mean over non-padding tokens is what MiniLM was trained for
    pooling: Literal["mean", "cls", "last"] = option("mean", "text pooling over tokens: mean, cls or last")
    max_length: int = option(256, "max tokens per text (longer ones are truncated); MiniLM's own limit")
    # the authors' φ: large LMs' last-token features of a prompted input, e.g. SST-2 as `Review: "{s}"\nSentiment:`
    prompt: str | None = option(None, "hf: sources: wrap each text in this template first ({text} marks where it goes)")

    def validate(self) -> None:
        at_least(self, 1, "max_length")
        require(self.prompt is None or "{text}" in self.prompt, "prompt",
                f"has no {{text}} to put the text in: {self.prompt!r}; write e.g. 'Review: \"{{text}}\" Sentiment:'")


@dataclass(frozen=True)
class TimmSourceOptions(LayerOption):
    """`timm:` sources."""

    image_size: int | None = option(None, "resize images to this size (default: the timm model's own)")

    def validate(self) -> None:
        at_least(self, 1, "image_size")


@dataclass(frozen=True)
class TfidfOptions(Config):
    tfidf_dim: int = option(256, "TruncatedSVD components of the tfidf source")

    def validate(self) -> None:
        at_least(self, 1, "tfidf_dim")


@dataclass(frozen=True)
class SourceOptions(TfidfOptions, TimmSourceOptions, HFSourceOptions):
    """Every source's options, as `aftpipe extract` and a pipeline set them for all its sources (a spec's own
    `@key=value` options override them for that source alone)."""


@dataclass(frozen=True)
class ExtractConfig(Config):
    dataset: str = option(help="dataset name (`aftpipe datasets`), e.g. sst2, or tsv:PATH / csv:PATH / jsonl:PATH / "
                          "parquet:PATH / imagefolder:PATH / hf:DIR_OR_HUB_NAME[:CONFIG]", panel=DATA, metavar="NAME",
                          common=True)
    sources: tuple[str, ...] = option(("minilm",), "feature source (`aftpipe sources`); repeat for several: "
                                      "--source minilm --source tfidf", flag="--source", panel=MODEL, metavar="SOURCE",
                                      common=True)
    splits: tuple[str, ...] | None = option(None, "splits to extract, e.g. train,dev (default: all)", panel=DATA,
                                            metavar="SPLIT", common=True)
    data_dir: str | None = option(None, "folder with the dataset files (default: $AFTPIPE_DATA_DIR, else ../shared/data)",
                                  panel=DATA, metavar="DIR")
    cache_dir: str = option("cache", "stores land at <cache-dir>/<name>/<source> (.h5 for hdf5); a folder or an "
                            "fsspec URL (s3://bucket/prefix, gs://..., file:///abs/path) for zarr", panel=OUTPUT,
                            metavar="DIR", common=True)
    # None: the dataset's own name (Dataset.name), which no other dataset, format or split of the same file shares
    name: str | None = option(None, "the stores' folder under --cache-dir (default: the dataset's name: sst2, or for "
                              "a path <stem>-<format>-<hash of path and split options>, e.g. tickets-tsv-3f2a9c01)",
                              panel=OUTPUT, metavar="NAME")
    format: Literal["zarr", "hdf5"] = option("zarr", "store format: zarr (v3, sharded) or hdf5", panel=OUTPUT)
    # fp16 halves the store and loses nothing a student can use
    dtype: Literal["float16", "bfloat16", "float32"] = option("float16", "stored dtype: float16, bfloat16 or float32",
                                                              panel=OUTPUT)
    batch_size: int = option(128, "examples per forward pass", panel=SYSTEM)
    device: str = option("auto", "auto, cpu, cuda or cuda:N", panel=SYSTEM, metavar="DEVICE", common=True)
    # 1 on CPU, where the cores belong to the forward pass
    workers: int | None = option(None, "DataLoader workers for tokenising/decoding (default: 1 on CPU, 4 on GPU)",
                                 panel=SYSTEM)
    chunk_rows: int = option(256, "rows per zarr chunk, the unit of reading", panel=OUTPUT)  # 256 × 384 fp16 = 192 KiB
    # None: ~16 MiB per shard, a multiple of 2048 rows (page-aligned for mapping)
    shard_rows: int | None = option(None, "rows per shard, the unit of writing and resuming (default: ~16 MiB)",
                                    panel=OUTPUT)
    limit: int | None = option(None, "extract only the first N rows of each split", panel=DATA, common=True)
    overwrite: bool = option(False, "rebuild a store that was built with other arguments (deleting only its own files)",
                             panel=OUTPUT)
    # a rank may be a whole shard ahead of the others at a synchronisation point: generous by default
    dist_timeout: float = option(1800.0, "several processes (torchrun): seconds a rank waits for the others at a "
                                 "synchronisation point before stopping with an error", panel=SYSTEM,
                                 metavar="SECONDS")
    source_options: SourceOptions = option(factory=SourceOptions, panel=MODEL)
    dataset_options: DatasetOptions = option(factory=DatasetOptions, panel=DATA)

    def validate(self) -> None:
        require(len(self.sources) > 0, "sources", "name at least one source (`aftpipe sources`)")
        at_least(self, 0, "workers")
        at_least(self, 1, "batch_size", "chunk_rows", "shard_rows", "limit")
        require(self.name is None or (re.fullmatch(r"[A-Za-z0-9_.+=-]+", self.name) is not None
                                      and self.name not in (".", "..")), "name",
                f"`{self.name}` becomes a folder name; use letters, digits and _ . + = -")
        require(self.dist_timeout > 0, "dist_timeout", f"must be > 0, got {self.dist_timeout:g}")
        from aftpipe.store.location import is_url

        require(not (self.format == "hdf5" and is_url(self.cache_dir) and not self.cache_dir.startswith("file://")),
                "format", "hdf5 cannot be written to an object store (it is written in place at fixed offsets and "
                "memory-mapped, which object storage cannot do); use --format zarr for a URL --cache-dir, or a local "
                "folder for hdf5")


@dataclass(frozen=True)
class TransferOptions(Config):
    """A method with a transfer term to weigh (and so φ controls to run beside it)."""

    # Regulariser weight. Measured here (MiniLM features, small CNN students): useful β ≤ 1 for AFT and
    # β ≥ 3 hurt, although the AFT README's example uses β=10, so grids reach down to 0.01.
    beta: float = option(1.0, "regulariser weight β (AFT: ≤ 1 works best here; tune 0.01–1)",
                         common=True)

    def validate(self) -> None:
        at_least(self, 0, "beta")


@dataclass(frozen=True)
class StateOptions(TransferOptions):
    """aft, aft_primal, kd_feature: a transfer term with learnable state of its own."""

    # the official AFT prior_lr
    state_lr: float = option(1e-2, "learning rate of the method's own state (AFT's s, KD's W)")

    def validate(self) -> None:
        at_least(self, 0, "state_lr")


@dataclass(frozen=True)
class LogitKDOptions(TransferOptions):
    """kd_logit: a frozen head on φ, distilled."""

    # Hinton et al. use 1–20; 4 is a common middle
    tau: float = option(4.0, "softmax temperature of kd_logit / tokt")
    teacher_hidden: int = option(0, "kd_logit/tokt teacher head: 0 linear, >0 an MLP of this width")

    def validate(self) -> None:
        require(self.tau > 0, "tau", f"must be > 0, got {self.tau:g}")  # `not x > 0` also catches nan
        at_least(self, 0, "teacher_hidden")


@dataclass(frozen=True)
class TOKTOptions(LogitKDOptions):
    distill_fraction: float = option(0.5, "tokt: fraction of the steps distilling before fine-tuning on labels")

    def validate(self) -> None:
        require(0 <= self.distill_fraction <= 1, "distill_fraction", f"must be in [0, 1], got {self.distill_fraction:g}")


@dataclass(frozen=True)
class RKDOptions(TransferOptions):
    # Park et al.'s defaults: distance 1, angle 2
    rkd_distance_weight: float = option(1.0, "rkd: weight of the distance term")
    rkd_angle_weight: float = option(2.0, "rkd: weight of the angle term")
    rkd_angle_rows: int = option(128, "rkd: rows of the batch its O(B³) angle term uses")

    def validate(self) -> None:
        at_least(self, 0, "rkd_distance_weight", "rkd_angle_weight")
        at_least(self, 3, "rkd_angle_rows")  # an angle needs three rows


@dataclass(frozen=True)
class MethodConfig(RKDOptions, TOKTOptions, StateOptions):
    """Every method's options (`--beta`, `--tau`, a pipeline method's `options:`); a method reads its own part."""


# Students. The embedding table is the bulk of a text student: 8000 x 48 = 384k parameters leaves ~100k for the
# body inside 0.5M (the ≥45x-smaller-than-MiniLM budget), and 8000 ids cover almost every token of SST-2. A field
# left at None takes the student's own default (its `DEFAULTS`); its `spec()` records the resolved values, so a
# rebuild never depends on defaults.


@dataclass(frozen=True)
class TextInputOptions(Config):
    # SST-2 sentences are ~25 WordPieces, and every student is cheaper with a short fixed length
    max_length: int = option(64, "text student: WordPiece tokens kept per text")

    def validate(self) -> None:
        at_least(self, 1, "max_length")


@dataclass(frozen=True)
class VocabularyOptions(TextInputOptions):
    """hf-config: a random-init transformers model over a WordPiece vocabulary built from the training texts."""

    vocab_size: int = option(8000, "text student: WordPiece ids kept, most frequent first (sets most of its size)")

    def validate(self) -> None:
        at_least(self, 3, "vocab_size")  # PAD, UNK and one token


@dataclass(frozen=True)
class WidthOptions(Config):
    # textcnn: filters per window, 100 as in Kim 2014; tiny-transformer: feed-forward width, 4 x embed_dim;
    # bow-mlp: hidden width 256; small-cnn: channels of the last block, 128
    width: int | None = option(None, "student body width: filters / hidden units (default: the student's own)")

    def validate(self) -> None:
        at_least(self, 1, "width")


@dataclass(frozen=True)
class DepthOptions(Config):
    # tiny-transformer 2 encoder layers, bow-mlp 1 hidden layer, small-cnn 3 conv blocks; a pretrained hf:
    # student keeps its first `layers` layers (MiniLM's first 2: a real pretrained small student)
    layers: int | None = option(None, "student depth; hf: students keep their first K layers (default: all / the "
                                "student's own)", flag="--student-layers", metavar="K")

    def validate(self) -> None:
        at_least(self, 0, "layers")


@dataclass(frozen=True)
class DropoutOptions(Config):
    # Light, because the AFT term already regularises those features; Kim 2014 used 0.5 without such a term.
    dropout: float = option(0.1, "dropout on the student's penultimate features")

    def validate(self) -> None:
        require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout:g}")


@dataclass(frozen=True)
class WordStudentOptions(DropoutOptions, WidthOptions, VocabularyOptions):
    """textcnn: a word-level student built here (one layer of convolutions)."""

    # 48 for every text student, so they differ only in their body; also the transformer's model width
    embed_dim: int | None = option(None, "text student: embedding width (default: the student's own)")
    # A pretrained model's input embeddings, PCA-reduced to embed_dim: the words' meaning without the model's
    # size (a 8000 x 48 table stays a 0.5M-parameter student)
    init_embeddings: str | None = option(None, "word-level text students: start the embedding table from this "
                                         "source's input embeddings (e.g. minilm), PCA-reduced to the width",
                                         metavar="SOURCE")

    def validate(self) -> None:
        at_least(self, 1, "embed_dim")


@dataclass(frozen=True)
class DeepWordStudentOptions(DepthOptions, WordStudentOptions):
    """tiny-transformer, bow-mlp: word-level students of several layers."""


@dataclass(frozen=True)
class HFStudentOptions(DepthOptions, TextInputOptions):
    """hf: a pretrained transformers encoder, fine-tuned whole."""

    # MiniLM's 30,522-row table is 11.7M of its parameters; a task uses a fraction of the rows
    prune_vocab: bool = option(False, "hf: students: keep only the embedding rows of tokens in the training data")


@dataclass(frozen=True)
class ImageInputOptions(Config):
    # small-cnn takes the size of the first training image (8x8 digits stay 8x8), timm the model's own
    image_size: int | None = option(None, "image student: square input size")

    def validate(self) -> None:
        at_least(self, 1, "image_size")


@dataclass(frozen=True)
class SmallCNNOptions(DepthOptions, DropoutOptions, WidthOptions, ImageInputOptions):
    """small-cnn."""


@dataclass(frozen=True)
class TimmStudentOptions(DropoutOptions, ImageInputOptions):
    """timm: any timm model, random or from local weights."""

    pretrained: str | None = option(None, "timm student: a local weights file, a folder holding one, or `hub`",
                                    metavar="PATH")


@dataclass(frozen=True)
class StudentConfig(TimmStudentOptions, SmallCNNOptions, HFStudentOptions, DeepWordStudentOptions):
    """Every student's size and input options (`--width`, a spec's `@init_embeddings=minilm`); a student reads
    its own part."""


@dataclass(frozen=True)
class TrainConfig(Config):
    """One training run. Method options (β, τ, ...) live in `method_options`, a `MethodConfig` or a plain
    mapping: `TrainConfig(..., method="aft", method_options={"beta": 0.3})`. They are not repeated as flat
    fields: the command line flattens them (`--beta 0.3`), Python keeps one place per option."""

    dataset: str = option(help="dataset name or tsv:/csv:/jsonl:/parquet:/imagefolder:/hf: path (as for extract)",
                          panel=DATA, metavar="NAME", common=True)
    out: str = option(help="run directory: config.yaml, metrics.json, metrics.jsonl, the model folder",
                      panel=OUTPUT, aliases=("--output-dir",), metavar="DIR", common=True)
    # several stores are concatenated per row (multi-source)
    features: tuple[str, ...] = option((), "feature store(s) from `aftpipe extract`, a folder, .h5 file or fsspec URL "
                                       "(s3://..., read through a local cache); repeat for multi-source",
                                       panel=DATA, metavar="STORE", common=True)
    student: str = option("textcnn", "student model (`aftpipe students`)", panel=MODEL, metavar="NAME",
                          common=True)
    method: str = option("aft", "transfer method (`aftpipe methods`)", panel=METHOD, metavar="NAME",
                         common=True)
    method_options: MethodConfig = option(factory=MethodConfig, panel=METHOD)
    student_options: StudentConfig = option(factory=StudentConfig, panel=MODEL)
    # None: 5 epochs and at least 300 steps (training.schedule), so a few hundred rows get more than a handful of steps
    epochs: int | None = option(None, "passes over the labeled training rows (default: 5, and at least 300 steps)",
                                panel=OPTIMISATION, aliases=("--num-train-epochs",), common=True)
    steps: int | None = option(None, "optimizer steps (overrides --epochs)", panel=OPTIMISATION,
                               aliases=("--max-steps",), common=True)
    # the official AFT batch; the kernel is a per-batch statistic, so it matters
    batch_size: int = option(128, "labeled rows per step", panel=OPTIMISATION)
    lr: float = option(1e-3, "student learning rate (AdamW, warm-up then cosine)", panel=OPTIMISATION,
                       aliases=("--learning-rate",), common=True)
    weight_decay: float = option(0.01, "AdamW weight decay of the student", panel=OPTIMISATION)
    warmup: float = option(0.05, "fraction of the steps of linear warm-up before the cosine decay", panel=OPTIMISATION,
                           aliases=("--warmup-ratio",))
    grad_clip: float = option(1.0, "clip the student's gradient norm to this (0: off)", panel=OPTIMISATION,
                              aliases=("--max-grad-norm",))
    holdout: float = option(0.1, "fraction of the labeled rows held out for early stopping and β tuning", panel=DATA)
    labels: int | None = option(None, "label budget: use this many labeled rows, the rest of train as unlabeled",
                                panel=DATA, common=True)
    unlabeled: bool = option(False, "semi-supervised: add a batch of unlabeled rows per step (regulariser only)",
                             panel=METHOD)
    phi_norm: Literal["none", "standardize"] = option("none", "none or standardize (z-score each cached feature)",
                                                      panel=METHOD)
    # Controls keep φ's statistics but destroy its per-example information: a gain that survives one is
    # regularisation, not transfer (shuffle: rows permuted across examples; gaussian: rows drawn from N(μ, Σ) of φ)
    phi_control: Literal["none", "shuffle", "gaussian"] = option(
        "none", "replace φ by a control: shuffle or gaussian (same statistics, no per-example signal)", panel=METHOD)
    eval_every: int | None = option(None, "steps between hold-out evaluations (default: 10 per run, ≥ 1 per epoch)",
                                    panel=OPTIMISATION, aliases=("--eval-steps",))
    patience: int | None = option(None, "early stop after this many evaluations without hold-out gain",
                                  panel=OPTIMISATION)
    # the official AFT recipe keeps the final model; `best` is the hold-out-selected checkpoint
    select: Literal["best", "last"] = option("best", "which weights to keep: best on the hold-out, or the last step's",
                                             panel=OPTIMISATION)
    seed: int = option(0, "training seed (init, batch order, dropout)", panel=OPTIMISATION)
    # fixed across seeds so seeds vary only the training
    data_seed: int = option(0, "seed of the labeled/hold-out row split", panel=DATA)
    train_split: str = option("train", "split to train on (labeled rows; the hold-out comes from it)", panel=DATA,
                              metavar="SPLIT")
    test_split: str | None = option(None, "split to report (default: the dataset's own: dev for sst2/cola, else "
                                    "test)", panel=DATA, metavar="SPLIT", common=True)
    num_classes: int | None = option(None, "number of classes (default: the dataset's)", panel=DATA)
    device: str = option("auto", "auto, cpu, cuda or cuda:N", panel=SYSTEM, metavar="DEVICE", common=True)
    amp: bool = option(True, "bf16 autocast on CUDA (ignored on CPU)", panel=SYSTEM)
    in_memory: bool = option(False, "load the features into RAM instead of memory-mapping them", panel=SYSTEM)
    # A store extracted with --limit holds part of a split; training on it silently would change the rows and
    # the test set without a word, so it is refused unless asked for (and metrics.json then says how many).
    stored_rows_only: bool = option(False, "train and test on only the rows the stores hold when they cover part "
                                    "of a split (extracted with --limit); metrics.json records the counts", panel=DATA)
    # One by default, as every run of a pipeline: torch sums in per-thread chunks, so another count rounds
    # differently and a run typed by hand would not reproduce the pipeline's numbers.
    threads: int | None = option(1, "torch CPU threads; a run's numbers hold for its thread count (a pipeline's "
                                 "runs use 1)", panel=SYSTEM, common=True)
    dist_timeout: float = option(1800.0, "several processes (torchrun): seconds a rank waits for the others at a "
                                 "synchronisation point before stopping with an error", panel=SYSTEM,
                                 metavar="SECONDS")
    data_dir: str | None = option(None, "folder with the dataset files", panel=DATA, metavar="DIR")
    dataset_options: DatasetOptions = option(factory=DatasetOptions, panel=DATA)
    # metrics.jsonl is always written; these are extra sinks, each an optional package
    report_to: tuple[Literal["tensorboard", "wandb"], ...] = option(
        (), "also log each evaluation to tensorboard (<out>/tensorboard) or wandb (offline with WANDB_MODE=offline); "
        "repeatable", panel=OUTPUT, metavar="TRACKER")
    overwrite: bool = option(False, "replace a finished run in --out (never a folder that is not a run)", panel=OUTPUT,
                             common=True)
    resume: bool = option(False, "continue an interrupted run from its last checkpoint", panel=OUTPUT)
    # a label-free score of a distilled student: its agreement with the teacher where it was never taught
    agreement_rows: int = option(0, "unlabeled rows kept out of the transfer set, where a distilled student's "
                                 "agreement with its teacher is measured (aftpipe distill)", panel=METHOD)

    def validate(self) -> None:
        at_least(self, 1, "epochs", "batch_size", "steps", "labels", "eval_every", "patience", "num_classes", "threads")
        at_least(self, 0, "weight_decay", "grad_clip", "seed", "data_seed", "agreement_rows")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr:g}")
        require(self.dist_timeout > 0, "dist_timeout", f"must be > 0, got {self.dist_timeout:g}")
        require(0 <= self.warmup < 1, "warmup", f"is a fraction of the steps, in [0, 1); got {self.warmup:g}")
        require(0 <= self.holdout < 1, "holdout", f"must be in [0, 1), got {self.holdout:g}")


# --- a fine-tuned teacher and the distillation recipe (aftpipe/teacher.py, aftpipe/distillation.py) -----------


@dataclass(frozen=True)
class TeacherConfig(Config):
    """A foundation model fine-tuned whole on the labeled rows (a pipeline's `teachers:` entry, `distill`'s
    first stage). The defaults are the settings measured on SST-2 with 2,000 labels (81.5 on its dev set)."""

    model: str = "minilm"  # minilm, hf:<dir | hub id> or timm:<dir | name>
    # 5e-5 and 300 steps of 32: BENCHMARKS "Regime 3"; the hold-out picks the checkpoint every 30 steps
    lr: float = 5e-5
    steps: int = 300
    batch_size: int = 32
    weight_decay: float = 0.0
    eval_every: int = 30
    max_length: int = 64  # text: SST-2 sentences are ~25 WordPieces
    prune_vocab: bool = True  # text: MiniLM's 30,522-row table is half its size; a task uses a fraction
    image_size: int | None = None  # image: square input size (default: the timm model's own)
    seed: int = 0

    def validate(self) -> None:
        require(self.model == "minilm" or self.model.startswith(("hf:", "timm:")), "model",
                f"`{self.model}` cannot be fine-tuned (it is not a foundation model with weights to train); "
                "use minilm, hf:<model dir> or timm:<model dir>")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr:g}")
        at_least(self, 1, "steps", "batch_size", "eval_every", "max_length", "image_size")
        at_least(self, 0, "weight_decay", "seed")

    @property
    def modality(self) -> str:
        return "image" if self.model.startswith("timm:") else "text"

    @property
    def student(self) -> str:
        """The model as an aftpipe student: `minilm` is `hf:minilm`."""
        return "hf:minilm" if self.model == "minilm" else self.model

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """The teacher's run: `base`'s data (dataset, labels, hold-out rows, test split) with this model and its
        own optimisation. No feature store: the teacher learns from the labels alone."""
        if self.modality == "text":
            student_options = StudentConfig(max_length=self.max_length, prune_vocab=self.prune_vocab)
        else:  # a timm folder starts from its own weights
            student_options = StudentConfig(pretrained=self.model.removeprefix("timm:"), image_size=self.image_size)
        return dataclasses.replace(
            base, features=(), student=self.student, method="none", student_options=student_options,
            method_options=MethodConfig(), lr=self.lr, steps=self.steps, batch_size=self.batch_size,
            weight_decay=self.weight_decay, eval_every=self.eval_every, select="best", seed=self.seed,
            unlabeled=False, agreement_rows=0, dataset_options=dataclasses.replace(base.dataset_options, views=1))


@dataclass(frozen=True)
class DistillConfig(Config):
    """`aftpipe distill`: fine-tune a foundation model on the labels, distil it with TOKT into a small student
    over the unlabeled rows, export it and report it beside its teacher. Defaults are the recipe measured on
    SST-2 with 2,000 labels (BENCHMARKS "Regime 3"): the 0.44M-parameter TextCNN at 79.1 against 81.5."""

    dataset: str = option(help="dataset name or tsv:/csv:/jsonl:/parquet:/imagefolder:/hf: path (as for extract)",
                          panel=DATA, metavar="NAME")
    out: str = option(help="folder to create: the student's model folder, onnx/, teacher/, report.md", panel=OUTPUT,
                      metavar="DIR")
    labels: int | None = option(None, "label budget: use this many labeled rows, the rest of train as unlabeled",
                                panel=DATA, common=True)
    teacher: str = option("minilm", "foundation model fine-tuned on the labels: minilm, hf:<dir> or timm:<dir>",
                          panel=MODEL, metavar="MODEL", common=True)
    # None: textcnn for text, small-cnn for images
    student: str | None = option(None, "small model to distil into (`aftpipe students`; default: textcnn for "
                                 "text, small-cnn for images)", panel=MODEL, metavar="NAME", common=True)
    # "auto": the teacher's own input embeddings when it shares the students' WordPiece vocabulary
    init_embeddings: str = option("auto", "start the student's word embeddings from this model's (minilm, "
                                  "hf:<dir>), `auto` (the teacher's when it shares the vocabulary) or `none`",
                                  panel=MODEL, metavar="SOURCE")
    seeds: int = option(1, "student seeds (0..K-1): the report gives mean ± std when K > 1", panel=OPTIMISATION,
                        metavar="K", common=True)
    teacher_lr: float = option(5e-5, "teacher learning rate", panel=OPTIMISATION)
    # None: --teacher-epochs over the labeled rows, at least 300 steps (SST-2-2k's) and at most 900 (CoLA's)
    teacher_steps: int | None = option(None, "teacher optimizer steps (the hold-out picks the checkpoint; default: "
                                       "--teacher-epochs passes over the labeled rows, kept within 300..900)",
                                       panel=OPTIMISATION)
    teacher_epochs: float = option(4.0, "teacher passes over the labeled rows when --teacher-steps is not given",
                                   panel=OPTIMISATION)
    teacher_batch_size: int = option(32, "teacher labeled rows per step", panel=OPTIMISATION)
    teacher_eval_every: int = option(30, "teacher steps between hold-out evaluations", panel=OPTIMISATION)
    teacher_max_length: int = option(64, "text teacher: WordPiece tokens kept per text", panel=MODEL)
    teacher_image_size: int | None = option(None, "image teacher: square input size (default: the model's own)",
                                            panel=MODEL)
    # TOKT over 2,000 steps at 1e-2 is what reached 79.1 on SST-2-2k; a grid is chosen per `select_by`
    student_lr: tuple[float, ...] = option((1e-2,), "student learning rate; repeat to choose among several "
                                           "(see --select-by)", panel=OPTIMISATION)
    student_steps: int = option(2000, "student optimizer steps (TOKT: half distilling, half on the labels)",
                                panel=OPTIMISATION)
    # None: when the unlabeled pool is under VIEWS_BELOW x the labels, 1 and 8 both tried (word dropout can
    # change a label: CoLA's), chosen like the student lr; else 1
    views: int | None = option(None, "text: K views per train row as extra transfer data (default: when the "
                               "unlabeled rows are fewer than 10x the labeled ones, 1 and 8 both tried and chosen "
                               "per --select-by; else 1)", panel=DATA, metavar="K")
    agreement_rows: int = option(2000, "unlabeled rows kept out of distillation, where the student's agreement "
                                 "with its teacher is measured (a label-free score)", panel=METHOD)
    select_by: Literal["holdout", "agreement"] = option("holdout", "how to choose among --student-lr settings: "
                                                        "hold-out score or agreement with the teacher",
                                                        panel=METHOD)
    baselines: bool = option(True, "also train the frozen-model probe and the no-transfer student for the report",
                             panel=METHOD)
    onnx: bool = option(True, "export the student to <out>/onnx", panel=OUTPUT)
    holdout: float = option(0.1, "fraction of the labeled rows held out to choose checkpoints and settings",
                            panel=DATA)
    data_seed: int = option(0, "seed of the labeled/hold-out row split", panel=DATA)
    test_split: str | None = option(None, "split to report (default: dev for sst2/cola, else test)", panel=DATA,
                                    metavar="SPLIT")
    text_col: str | None = option(None, "text column of tsv/csv/jsonl/parquet/hf data", panel=DATA, metavar="NAME")
    label_col: str | None = option(None, "label column of tsv/csv/jsonl/parquet/hf data", panel=DATA,
                                   metavar="NAME")
    data_dir: str | None = option(None, "folder with the dataset files", panel=DATA, metavar="DIR")
    cache_dir: str = option("cache", "where the frozen model's store for the probe is found or extracted",
                            panel=OUTPUT, metavar="DIR")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", panel=SYSTEM, metavar="DEVICE")
    threads: int | None = option(None, "torch CPU threads (default: torch's own choice)", panel=SYSTEM)

    def validate(self) -> None:
        try:
            self.teacher_config()
        except ConfigError as e:
            raise ConfigError("teacher", e.message) from None
        require(len(self.student_lr) > 0 and all(v > 0 for v in self.student_lr), "student_lr",
                f"must be > 0, got {list(self.student_lr)}")
        at_least(self, 1, "labels", "seeds", "teacher_steps", "teacher_batch_size", "teacher_eval_every",
                 "teacher_max_length", "teacher_image_size", "student_steps", "views", "threads")
        at_least(self, 0, "agreement_rows", "data_seed")
        require(self.teacher_lr > 0, "teacher_lr", f"must be > 0, got {self.teacher_lr:g}")
        require(self.teacher_epochs > 0, "teacher_epochs", f"must be > 0, got {self.teacher_epochs:g}")
        require(0 < self.holdout < 1, "holdout", f"the teacher and the student choose on it: in (0, 1), got "
                f"{self.holdout:g}")
        require(self.select_by == "holdout" or self.agreement_rows > 0, "select_by",
                "agreement needs rows to measure it on; set --agreement-rows above 0")

    def teacher_config(self, steps: int | None = None) -> TeacherConfig:
        """The teacher's settings; `steps` when --teacher-steps is not given (distillation.teacher_steps)."""
        return TeacherConfig(model=self.teacher, lr=self.teacher_lr,
                             steps=self.teacher_steps or steps or TeacherConfig.steps,
                             batch_size=self.teacher_batch_size, eval_every=self.teacher_eval_every,
                             max_length=self.teacher_max_length, image_size=self.teacher_image_size)

def command_line(cfg: Config, command: str, skip: frozenset[str] = frozenset({"resume", "overwrite"})) -> str:
    """The `aftpipe COMMAND ...` line that builds `cfg`: a flag for every CLI field (nested configs included)
    whose value is not its default, except those in `skip`. The inverse of the CLI's generated options."""
    import shlex

    parts = ["aftpipe", command]

    def add(obj: Config) -> None:
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            if isinstance(value, Config):
                add(value)
                continue
            if not f.metadata.get("help") or f.name in skip:
                continue
            if value == default_of(f):
                continue
            flag = flag_of(f.name)
            if isinstance(value, bool):
                parts.append(flag if value else "--no-" + flag[2:])
            elif value is not None:
                items = (value if isinstance(value, tuple) else
                         [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else (value,))
                for v in items:
                    parts.extend([flag, shlex.quote(repr(v) if isinstance(v, float) else str(v))])

    add(cfg)
    return " ".join(parts)


__all__ = ["Config", "ConfigError", "DatasetOptions", "DistillConfig", "ExtractConfig", "MethodConfig", "Partial",
           "SourceOptions", "StudentConfig", "TeacherConfig", "TrainConfig", "check_keys", "command_line", "convert",
           "default_of", "dump_yaml", "flag_of", "format_path", "from_dict", "load_config", "load_yaml", "option",
           "refuse_undeclared", "require", "to_plain", "DATA", "MODEL", "METHOD", "OPTIMISATION", "OUTPUT", "SYSTEM",
           # each component's own options
           "NoOptions", "HFSourceOptions", "TimmSourceOptions", "TfidfOptions", "TransferOptions", "StateOptions",
           "LogitKDOptions", "TOKTOptions", "RKDOptions", "VocabularyOptions", "WordStudentOptions",
           "DeepWordStudentOptions", "HFStudentOptions", "SmallCNNOptions", "TimmStudentOptions"]
