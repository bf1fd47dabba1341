"""timm image models: pre-logits features via `forward_features` + `forward_head(pre_logits=True)`, or with
`layer=K` the K-th of the model's feature stages (timm's `feature_info`, 0 the first) averaged over space.

Preprocessing comes from the model's own data config (`resolve_model_data_config`), never hand-copied,
so the features are the ones the model was trained to produce. An earlier stage is a weaker, more generic
source of the same backbone, which is what a comparison of sources by strength needs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aftpipe.config import TimmSourceOptions
from aftpipe.errors import AftpipeError
from aftpipe.sources.base import FeatureSource, weights_sha256


def _to_pil(x: Any):
    from PIL import Image

    if isinstance(x, Image.Image):
        return x.convert("RGB")
    a = np.asarray(x)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


class TimmSource(FeatureSource):
    """Any timm model by name or local directory: `timm:vit_small_patch14_dinov2`, `timm:/models/convnext`.

    `timm:<name>` (hub weights, needs the network or the HF cache) or `timm:<dir>` holding a
    config.json + model.safetensors as written by timm's `save_for_hf`/`push_to_hf_hub`."""

    modality = "image"
    Options = TimmSourceOptions

    @classmethod
    def store_name(cls, arg: str | None, options: TimmSourceOptions) -> str:
        p = Path(arg or "").expanduser()
        # non-default options go into the name, so variants of one model never collide on disk
        return ("timm-" + (p.name if p.is_dir() else (arg or "").replace("/", "-"))
                + ("" if options.layer == -1 else f"-layer{options.layer}")
                + (f"-size{options.image_size}" if options.image_size else ""))

    @classmethod
    def check(cls, arg: str | None, options: TimmSourceOptions) -> None:
        arg = arg or ""
        if arg.startswith((".", "/", "~")) and not Path(arg).expanduser().exists():
            raise AftpipeError(f"model path {arg} does not exist; pass an existing timm model directory or a timm name")

    def __init__(self, ref: str, options: TimmSourceOptions) -> None:
        import timm
        from timm.data import create_transform, resolve_model_data_config

        p = Path(ref).expanduser()
        type(self).check(ref, options)
        try:
            if p.is_dir():
                model = timm.create_model(f"local-dir:{p.resolve()}", pretrained=True, num_classes=0)
            else:
                model = timm.create_model(ref, pretrained=True, num_classes=0)
        except RuntimeError as e:
            if str(e).startswith("Unknown model") and not p.is_dir():  # timm's own "unknown model"
                raise AftpipeError(f"timm has no model `{ref}` ({str(e)[:120]}); see `timm.list_models()`") from None
            raise AftpipeError(f"could not load timm weights for `{ref}` ({str(e).splitlines()[0][:160]}); pass "
                               "a timm model directory with safetensors weights (or a torch file of tensors only)") from None
        except (OSError, ValueError, pickle.UnpicklingError) as e:  # timm unpickles with weights_only=True
            raise AftpipeError(f"could not load timm weights for `{ref}` ({str(e).splitlines()[0][:160]}); "
                               "offline machines need a local directory: `--source timm:/path/to/model`") from None
        self.model = model.eval()
        self.layer = options.layer
        stages = [int(info["num_chs"]) for info in getattr(model, "feature_info", [])]
        if self.layer != -1 and not (0 <= self.layer < len(stages) and hasattr(model, "forward_intermediates")):
            raise AftpipeError(f"timm model `{ref}` has {len(stages)} feature stages, so no layer {self.layer}; pass "
                               + (f"a layer from 0 to {len(stages) - 1}, or " if stages else "")
                               + "-1 for its pre-logits features")
        self.data_config = resolve_model_data_config(self.model)
        if options.image_size:
            self.data_config["input_size"] = (3, options.image_size, options.image_size)
        self.transform = create_transform(**self.data_config, is_training=False)
        self.ref = ref
        self.local_dir = p.resolve() if p.is_dir() else None
        self.weights = weights_sha256(self.local_dir) if self.local_dir else {}
        self.dim = int(self.model.num_features) if self.layer == -1 else stages[self.layer]
        self.params = sum(q.numel() for q in self.model.parameters())
        self.name = type(self).store_name(ref, options)
        self.device = torch.device("cpu")
        self.autocast: torch.dtype | None = None

    def collate(self, inputs: list[Any]) -> torch.Tensor:
        return torch.stack([self.transform(_to_pil(x)) for x in inputs])

    def to(self, device: torch.device) -> "TimmSource":
        self.device = device
        self.model.to(device)
        self.autocast = torch.bfloat16 if device.type == "cuda" else None
        return self

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast is not None):
            if self.layer == -1:
                feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            else:
                stage = self.model.forward_intermediates(x, indices=[self.layer], intermediates_only=True,
                                                         stop_early=True)[0]
                feats = stage.mean(dim=(2, 3))  # NCHW → one vector per image, as the model's own head pools
        return feats.float()

    def spec(self) -> dict[str, Any]:
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.data_config.items()}
        return {
            "library": "timm",
            "model_id": self.ref,
            "path": str(self.local_dir) if self.local_dir else None,
            "architecture": self.model.default_cfg.get("architecture", type(self.model).__name__),
            "weights_sha256": self.weights,
            "pooling": "pre_logits" if self.layer == -1 else "spatial_mean",
            **({} if self.layer == -1 else {"layer": self.layer}),
            "data_config": cfg,
            "forward_dtype": "bfloat16" if self.autocast else "float32",
            "dim": self.dim,
            "params": self.params,
        }
