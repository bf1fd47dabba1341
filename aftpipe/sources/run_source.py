"""A trained aftpipe model as a feature source: `model:<run dir>`.

The usual way to put a large model's knowledge into a small one is in two stages: fine-tune the large model
on the labels (`aftpipe train --student hf:minilm`), then distil it into the small one over the unlabeled
data. This source is the bridge: it runs a finished run's student over a dataset and stores its penultimate
features (what its classifier reads), so `tokt`, `kd_logit` and `aft` can use the fine-tuned model as their
teacher exactly as they use a frozen one. The weights are checked against the run's model.json and their
sha256 is the store's provenance, with the dataset, label budget and seed the teacher was trained on; a
teacher retrained since (`teacher_change`) makes `train` refuse the store and `verify` flag it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aftpipe.config import NoOptions
from aftpipe.errors import AftpipeError
from aftpipe.sources.base import FeatureSource
from aftpipe.students.base import cut_padding


class RunSource(FeatureSource):
    """A finished `aftpipe train` run (a student, not a linear probe): its penultimate features."""

    @classmethod
    def store_name(cls, arg: str | None, options: NoOptions) -> str:
        return "model-" + Path((arg or "").rstrip("/")).name

    @classmethod
    def check(cls, arg: str | None, options: NoOptions) -> None:
        from aftpipe.model import read_model_spec

        if not arg:
            raise AftpipeError("`model:` needs a run directory: --source model:runs/<run>")
        if read_model_spec(arg).kind != "student":
            raise AftpipeError(f"{arg} is a linear probe, whose features are its foundation model's; extract that "
                               "model's source instead (see the probe's model.json `sources`)")

    def __init__(self, folder: str, options: NoOptions) -> None:
        from aftpipe.model import load_model

        type(self).check(folder, options)
        self.folder = Path(folder).resolve()
        self.model = load_model(self.folder)
        self.net = self.model.net
        self.modality = self.model.modality
        self.name = type(self).store_name(folder, options)
        self.dim = int(self.net.num_features)
        self.params = self.model.spec.params
        self.device = torch.device("cpu")

    def length(self, x: Any) -> int:
        return len(x) if isinstance(x, str) else 0

    def collate(self, inputs: list[Any]) -> dict[str, torch.Tensor]:
        # batches are length-sorted, so most of the max_length padding is columns no row of the batch uses
        return cut_padding(self.model.encode(inputs))

    def to(self, device: torch.device) -> "RunSource":
        self.device = device
        self.net.to(device)
        return self

    @torch.inference_mode()
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.features({k: v.to(self.device, non_blocking=True) for k, v in batch.items()}).float()

    def spec(self) -> dict[str, Any]:
        spec = self.model.spec
        return {
            "library": "aftpipe",
            "model_id": spec.student,
            "path": str(self.folder),
            "weights_sha256": {spec.weights.file: spec.weights.sha256},
            "trained_on": {**spec.dataset, "seed": spec.seed, "method": spec.method},
            "teacher_test": spec.test,
            "features": "penultimate (the input of the run's classifier)",
            "forward_dtype": "float32",
            "dim": self.dim,
            "params": self.params,
        }
