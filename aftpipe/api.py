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

from aftpipe.config import DistillConfig, ExtractConfig, TeacherConfig, TrainConfig
from aftpipe.data import DatasetOptions, load_dataset
from aftpipe.distillation import distill
from aftpipe.evaluation import check_run, evaluate
from aftpipe.export import export_model
from aftpipe.extraction import extract
from aftpipe.extraction import repair as repair_store
from aftpipe.methods import MethodConfig
from aftpipe.model import Model, load_model
from aftpipe.pipeline import load_pipeline, plan_pipeline, run_pipeline, validate
from aftpipe.predict import predict_file
from aftpipe.probe import PROBE, train_probe
from aftpipe.progress import Progress
from aftpipe.rundir import RunResult
from aftpipe.sources import SourceOptions
from aftpipe.store import open_features, verify_store
from aftpipe.students import StudentConfig
from aftpipe.training import train as train_student


def train(cfg: TrainConfig, progress: Progress | None = None) -> RunResult:
    """One run into `cfg.out`: a student trained with `cfg.method`, or the linear probe fitted (its own recipe)."""
    return (train_probe if cfg.method == PROBE else train_student)(cfg, progress)


__all__ = ["DatasetOptions", "DistillConfig", "ExtractConfig", "MethodConfig", "Model", "SourceOptions", "StudentConfig",
           "TeacherConfig", "TrainConfig", "check_run", "distill", "evaluate", "export_model", "extract", "load_dataset",
           "load_model", "load_pipeline", "open_features", "plan_pipeline", "predict_file", "repair_store", "run_pipeline",
           "train", "validate", "verify_store"]
