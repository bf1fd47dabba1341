"""aftpipe: cache foundation-model features once (`extract`), train small models against them (`train`).

    import aftpipe
    aftpipe.extract(aftpipe.ExtractConfig(dataset="sst2", sources=("minilm",)))
    store = aftpipe.open_features("cache/sst2/minilm")
    rows = store.split("train")[[0, 5, 9]]
    metrics = aftpipe.train(aftpipe.TrainConfig(dataset="sst2", features=("cache/sst2/minilm",), out="runs/x"))
    model = aftpipe.load_model("runs/x"); model.predict(["a gripping film"])

The names below come from `aftpipe.api`, loaded on first use so that `aftpipe --help` and
`import aftpipe` do not pay for importing torch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aftpipe")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

_API = ("DatasetOptions", "DistillConfig", "ExtractConfig", "MethodConfig", "Model", "SourceOptions", "StudentConfig",
        "TeacherConfig", "TrainConfig", "check_run", "distill", "evaluate", "export_model", "extract", "load_dataset",
        "load_model", "load_pipeline", "open_features", "plan_pipeline", "predict_file", "repair_store", "run_pipeline",
        "train", "validate", "verify_store")


def __getattr__(name: str):
    if name in _API:
        from aftpipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'aftpipe' has no attribute {name!r}")


__all__ = ["__version__", *_API]
