"""The Python API: what the CLI calls, importable for notebooks and your own scripts.

    import aftpipe
    aftpipe.extract(aftpipe.ExtractConfig(dataset="sst2", sources=("minilm",)))
    metrics = aftpipe.train(aftpipe.TrainConfig(dataset="sst2", features=("cache/sst2/minilm",),
                                                method="aft", out="runs/sst2-aft"))
    store = aftpipe.open_features("cache/sst2/minilm")
    aftpipe.run_pipeline("pipelines/demo.yaml")
"""

from aftpipe.data import load_dataset
from aftpipe.extraction import ExtractConfig, extract
from aftpipe.methods import MethodConfig
from aftpipe.pipeline import load_pipeline, run_pipeline, validate
from aftpipe.store import open_features
from aftpipe.students import StudentConfig
from aftpipe.training import TrainConfig, evaluate, train

__all__ = ["ExtractConfig", "MethodConfig", "StudentConfig", "TrainConfig", "evaluate", "extract", "load_dataset",
           "load_pipeline", "open_features", "run_pipeline", "train", "validate"]
