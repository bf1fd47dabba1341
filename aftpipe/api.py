"""The Python API: what the CLI calls, importable for notebooks and your own scripts.

    import aftpipe
    aftpipe.extract(aftpipe.ExtractConfig(dataset="sst2", sources=("minilm",)))
    result = aftpipe.train(aftpipe.TrainConfig(dataset="sst2", features=("cache/sst2/minilm",),
                                               method="aft", out="runs/sst2-aft"))  # result.score
    store = aftpipe.open_features("cache/sst2/minilm")
    aftpipe.run_pipeline("pipelines/demo.yaml")
    model = aftpipe.load_model("runs/sst2-aft"); model.predict(["a fine film"])
    aftpipe.export_model("runs/sst2-aft", "exports/sst2-aft")   # ONNX
    aftpipe.distill(aftpipe.DistillConfig(dataset="sst2", labels=2000, out="models/sst2"))  # the whole recipe
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aftpipe import distillation, extraction
from aftpipe.components import resolve
from aftpipe.config import DistillConfig, ExtractConfig, TeacherConfig, TrainConfig
from aftpipe.data import DatasetOptions, load_dataset
from aftpipe.evaluation import check_run, evaluate
from aftpipe.export import export_model
from aftpipe.extraction import repair as repair_store
from aftpipe.methods import MethodConfig
from aftpipe.model import Model, load_model
from aftpipe.pipeline import load_pipeline, plan_pipeline, validate
from aftpipe.predict import predict_file
from aftpipe.recipes import train
from aftpipe.sources import SourceOptions
from aftpipe.store import open_features, verify_store
from aftpipe.students import StudentConfig
from aftpipe.sweep import run_pipeline

if TYPE_CHECKING:
    from aftpipe.progress import Progress


# The entry points that take a config resolve its names first: an unknown one is refused before anything runs.
def extract(cfg: ExtractConfig, progress: Progress | None = None) -> list[extraction.SplitResult]:
    """Extract every (source, split) of `cfg` into `<cache_dir>/<name>/<source>`; resumable."""
    return extraction.extract(resolve(cfg), progress)


def distill(cfg: DistillConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Fine-tune a teacher, distil it into a small student, export and report it, all into `cfg.out`."""
    return distillation.distill(resolve(cfg), progress)


__all__ = ["DatasetOptions", "DistillConfig", "ExtractConfig", "MethodConfig", "Model", "SourceOptions", "StudentConfig",
           "TeacherConfig", "TrainConfig", "check_run", "distill", "evaluate", "export_model", "extract", "load_dataset",
           "load_model", "load_pipeline", "open_features", "plan_pipeline", "predict_file", "repair_store", "run_pipeline",
           "train", "validate", "verify_store"]
