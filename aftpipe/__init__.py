"""aftpipe: cache foundation-model features once (`extract`), train small models against them (`train`).

    import aftpipe
    aftpipe.extract(aftpipe.ExtractConfig(dataset="sst2", sources=("minilm",)))
    store = aftpipe.open_features("cache/sst2/minilm")
    rows = store.split("train")[[0, 5, 9]]
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aftpipe")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"


def __getattr__(name: str):
    # lazy: `aftpipe --help` and `import aftpipe` should not pay for torch/zarr imports
    if name in ("extract", "ExtractConfig"):
        from aftpipe import extract as _extract

        return getattr(_extract, name)
    if name == "open_features":
        from aftpipe.store import open_features

        return open_features
    if name in ("load_dataset",):
        from aftpipe.data import load_dataset

        return load_dataset
    raise AttributeError(f"module 'aftpipe' has no attribute {name!r}")


__all__ = ["ExtractConfig", "__version__", "extract", "load_dataset", "open_features"]
