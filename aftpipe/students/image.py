"""Image students. `encode` turns PIL images or HxW / HxWxC uint8 arrays into one float tensor `pixels`
(N, C, H, W): channels converted to the model's (grayscale is repeated to RGB, RGB is converted to luma for
1-channel models, alpha is dropped), resized to the student's input size, scaled to [0, 1] and normalised
with the student's mean/std. Both are fixed at build time and kept in the spec.

Memory: `pixels` is float32, 4 x the uint8 images; a timm model's default input size is its pretraining size
(often 224), so 50k CIFAR images at 224x224 would need 30 GB: set `image_size` for small images.

Default sizes: small-cnn (3 blocks, channels 32-64-128) 93,730 parameters on RGB with 2 classes;
timm models have what timm gives them.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from aftpipe.config import SmallCNNOptions, StudentConfig, TimmStudentOptions
from aftpipe.errors import AftpipeError
from aftpipe.students.base import Student

_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "model.pth")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


# --- pixels -----------------------------------------------------------------------------------------------
def _image_array(x: Any, i: int) -> np.ndarray:
    """Input i as an HxW or HxWxC uint8 array (PIL images in their own mode, e.g. RGB or L)."""
    from PIL import Image

    if isinstance(x, Image.Image):
        if x.mode not in ("L", "RGB", "RGBA"):
            x = x.convert("RGB")
        return np.asarray(x)
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and (x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (1, 3, 4))):
        return x
    what = f"a {x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else f"a {type(x).__name__}"
    raise AftpipeError(
        f"image students take PIL images or HxW / HxWxC (C = 1, 3, 4) uint8 arrays, but input {i} is {what}; "
        "convert the data to uint8 images (or use a text student for text)."
    )


def _fit(a: np.ndarray, channels: int, size: tuple[int, int], resample: int) -> np.ndarray:
    """An HxWxC uint8 array with the student's channels and (H, W)."""
    from PIL import Image

    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]  # drop alpha, as PIL's RGBA -> RGB does
    if a.shape[:2] != size or (channels == 1 and a.ndim == 3):
        img = Image.fromarray(a)
        if channels == 1:
            img = img.convert("L")  # ITU-R 601-2 luma
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), resample)
        a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], channels, axis=2)  # grayscale -> 1 or 3 identical channels
    return a


def to_pixels(
    inputs: Sequence[Any],
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
) -> Tensor:
    """(N, C, H, W) float32: inputs fitted to input_size = (C, H, W), scaled to [0, 1], then (x - mean) / std."""
    from PIL import Image

    c, h, w = (int(v) for v in input_size)
    resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}.get(
        interpolation, Image.BILINEAR
    )
    out = np.empty((len(inputs), h, w, c), dtype=np.uint8)
    for i in range(len(inputs)):
        out[i] = _fit(_image_array(inputs[i], i), c, (h, w), resample)
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(_per_channel(mean, c)).view(1, c, 1, 1)
    s = torch.tensor(_per_channel(std, c)).view(1, c, 1, 1)
    return x.sub_(m).div_(s).contiguous()


def _per_channel(v: Sequence[float], c: int) -> list[float]:
    v = [float(x) for x in v]
    if len(v) == c:
        return v
    return [sum(v) / len(v)] * c  # e.g. RGB statistics for a 1-channel model: their mean


def _first_image(student: str, train_inputs: Sequence[Any] | None) -> np.ndarray:
    if train_inputs is None or len(train_inputs) == 0:
        raise AftpipeError(
            f"student `{student}` takes its channels and input size from the training images, but none were given; "
            "pass the training split's inputs as train_inputs."
        )
    return _image_array(train_inputs[0], 0)


# --- small-cnn --------------------------------------------------------------------------------------------
class SmallCNN(Student):
    """`layers` blocks of conv3x3-BN-ReLU with channels doubling up to `width` (2x2 max-pool between
    blocks), then the global average: 8x8 grayscale digits to 32x32+ RGB. Channels and input size come
    from the first training image (image_size overrides the size); pixels are normalised with mean/std 0.5."""

    modality = "image"
    Options = SmallCNNOptions
    DEFAULTS: ClassVar[dict[str, Any]] = {"width": 128, "layers": 3}  # 32-64-128 channels: ~94k parameters
    MEAN_STD = 0.5  # no pretraining statistics to match; maps [0, 1] to [-1, 1]

    def __init__(self, student: str, num_classes: int, cfg: StudentConfig, input_size: list[int]) -> None:
        if cfg.layers < 1:
            raise AftpipeError("small-cnn needs layers >= 1; raise layers.")
        chans = [max(8, cfg.width // 2 ** (cfg.layers - 1 - i)) for i in range(cfg.layers)]
        super().__init__(student, num_classes, chans[-1], cfg)
        self.input_size = [int(v) for v in input_size]
        blocks: list[nn.Module] = []
        c_in = self.input_size[0]
        for i, c in enumerate(chans):
            blocks += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < len(chans) - 1:
                blocks.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: odd sizes (7x7) and 1x1 never vanish
            c_in = c
        self.body = nn.Sequential(*blocks)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(self.num_features, num_classes)

    @classmethod
    def create(cls, student, arg, num_classes, train_inputs, cfg):  # type: ignore[override]
        cfg = cfg.with_defaults(cls.DEFAULTS)
        first = _first_image(student, train_inputs)
        channels = 3 if first.ndim == 3 and first.shape[2] >= 3 else 1
        h, w = (cfg.image_size, cfg.image_size) if cfg.image_size else first.shape[:2]
        return cls(student, num_classes, cfg, input_size=[channels, int(h), int(w)])

    @property
    def data_config(self) -> dict[str, Any]:
        """Input size and normalisation, in the form of `Timm.data_config` (timm's data config)."""
        c = self.input_size[0]
        return {"input_size": self.input_size, "mean": [self.MEAN_STD] * c, "std": [self.MEAN_STD] * c,
                "interpolation": "bilinear"}

    def encode(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        return {"pixels": to_pixels(inputs, self.input_size, [self.MEAN_STD], [self.MEAN_STD])}

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        return self.drop(self.body(batch["pixels"]).mean(dim=(2, 3)))

    def _spec_extra(self) -> dict[str, Any]:
        return {"input_size": self.input_size}


# --- timm -------------------------------------------------------------------------------------------------
class Timm(Student):
    """timm:<name | folder>: `timm.create_model(name, num_classes=C)`, random init unless `pretrained` names
    local weights (or is `hub`: the weights timm's registry names, fetched by timm); features = `forward_head(forward_features(x), pre_logits=True)`, head = `get_classifier()`.
    A folder is a timm model folder (config.json with `architecture`, e.g. written by timm's save_for_hf).
    Pixels follow the model's data config (mean/std, input size unless image_size is set), 3 channels."""

    modality = "image"
    Options = TimmStudentOptions

    def __init__(
        self,
        student: str,
        num_classes: int,
        cfg: StudentConfig,
        architecture: str,
        model_args: dict[str, Any],
        pretrained_cfg: dict[str, Any],
        data_config: dict[str, Any] | None = None,
        weights: str | None = None,  # only when first built; a rebuild gets its weights from load_state_dict
    ) -> None:
        import timm

        overlay = None
        if weights not in (None, "hub"):
            # read here, safely, and handed to timm as a state dict (its highest-priority source)
            overlay = dict(state_dict=read_weights(weights), file=None, source=None, custom_load=False)
        tag = pretrained_cfg.get("tag")
        try:
            if weights == "hub":  # the registry's own weights (hub id or url): needs the network or the HF cache
                model = timm.create_model(f"{architecture}.{tag}" if tag else architecture, pretrained=True,
                                          num_classes=num_classes, drop_rate=cfg.dropout, **model_args)
            else:
                model = timm.create_model(
                    architecture,
                    pretrained=weights is not None,
                    pretrained_cfg=dict(pretrained_cfg),
                    pretrained_cfg_overlay=overlay,
                    num_classes=num_classes,
                    drop_rate=cfg.dropout,
                    **model_args,
                )
        except Exception as e:  # noqa: BLE001 - timm and the hub raise many kinds; a failed load is the user's to fix
            if weights is None:
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if weights == "hub":
                raise AftpipeError(f"timm weights for `{architecture}` could not be fetched from the hub ({first[:200]}); "
                                   "offline machines: pass a local weights file as --pretrained") from None
            raise AftpipeError(
                f"weights `{weights}` do not load into timm model `{architecture}` ({first[:300]}); "
                "pass weights saved from this architecture."
            ) from None
        super().__init__(student, num_classes, model.num_features, cfg)
        self.architecture, self.model_args = architecture, dict(model_args)
        self.pretrained_cfg = dict(pretrained_cfg)
        if data_config is None:
            dc = timm.data.resolve_model_data_config(model)
            size = (cfg.image_size, cfg.image_size) if cfg.image_size else tuple(dc["input_size"][1:])
            data_config = {
                "input_size": [int(dc["input_size"][0]), int(size[0]), int(size[1])],
                "mean": [float(v) for v in dc["mean"]],
                "std": [float(v) for v in dc["std"]],
                "interpolation": str(dc.get("interpolation", "bilinear")),
            }
        self.data_config = data_config
        self.model = model

    @classmethod
    def create(cls, student, arg, num_classes, train_inputs, cfg):  # type: ignore[override]
        architecture, model_args, pretrained_cfg = _resolve_timm(arg)
        if cfg.image_size and pretrained_cfg.get("fixed_input_size"):
            model_args["img_size"] = cfg.image_size  # e.g. ViTs: position embeddings are sized to the input
        weights = _resolve_weights(cfg.pretrained)
        return cls(student, num_classes, cfg, architecture, model_args, pretrained_cfg, weights=weights)

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model.forward_head(self.model.forward_features(batch["pixels"]), pre_logits=True)

    def encode(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        dc = self.data_config
        return {"pixels": to_pixels(inputs, dc["input_size"], dc["mean"], dc["std"], dc["interpolation"])}

    def _spec_extra(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "model_args": self.model_args,
            "pretrained_cfg": self.pretrained_cfg,
            "data_config": self.data_config,
        }


def _resolve_timm(arg: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(architecture, model_args, pretrained_cfg as JSON) for a timm name (`resnet18`, `resnet18.a1_in1k`)
    or a local timm model folder."""
    import timm
    from timm.models import PretrainedCfg, get_pretrained_cfg, split_model_name_tag

    looks_like_path = "/" in arg or "\\" in arg or arg.startswith((".", "~")) or Path(arg).is_dir()
    if looks_like_path:
        from timm.models._hub import load_model_config_from_path

        folder = Path(arg).expanduser()
        if not (folder / "config.json").is_file():
            raise AftpipeError(
                f"timm model folder `{arg}` has no config.json (hub ids cannot be fetched offline); "
                "pass a timm model name such as resnet18, or a folder written by timm's save_for_hf."
            )
        pcfg, architecture, model_args = load_model_config_from_path(folder)
        model_args = dict(model_args or {})
        model_args.pop("num_classes", None)  # the task's, not the saved model's
    else:
        if not timm.is_model(arg):
            base = arg.split(".")[0]
            close = timm.list_models(f"*{base}*")[:8] or difflib.get_close_matches(
                base, timm.list_models(), n=5, cutoff=0.6
            )
            hint = f"close names: {', '.join(close)}" if close else "see timm.list_models() for the names"
            raise AftpipeError(f"timm has no model `{arg}`; {hint}.")
        architecture, _ = split_model_name_tag(arg)
        found = get_pretrained_cfg(arg)
        pcfg = found.to_dict() if found is not None else {}
        model_args = {}
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    pcfg = {k: v for k, v in dict(pcfg).items() if k in fields}
    # where the original weights live is not part of the architecture; a rebuild loads a state dict instead
    for key in ("file", "state_dict", "source", "url", "hf_hub_id", "hf_hub_filename"):
        pcfg.pop(key, None)
    pcfg["architecture"] = architecture
    return architecture, model_args, _jsonable(pcfg)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def read_weights(path: str) -> dict[str, Tensor]:
    """A local weights file as a state dict: safetensors, or a torch file read with `weights_only=True`, which
    unpickles tensors and plain containers only, so a file that would run code when unpickled is refused."""
    from timm.models import load_state_dict

    try:
        return load_state_dict(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, SafetensorError...: all "not plain weights"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise AftpipeError(f"weights `{path}` are not a plain file of tensors ({first}); pass a .safetensors file or "
                           "a torch state dict (aftpipe never unpickles anything else)") from None


def _resolve_weights(path: str | None) -> str | None:
    """The weights file for `pretrained`: the path itself, or the weights file inside a folder (`hub`: the
    weights timm's registry names, fetched by timm)."""
    if path is None or path == "hub":
        return path
    p = Path(path).expanduser()
    if not p.exists():
        raise AftpipeError(
            f"pretrained weights `{path}` do not exist; pass a local .safetensors / .pth file "
            "or a folder holding model.safetensors or pytorch_model.bin."
        )
    if p.is_file():
        return str(p)
    for name in _WEIGHT_NAMES:
        if (p / name).is_file():
            return str(p / name)
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
    if len(files) == 1:
        return str(files[0])
    raise AftpipeError(
        f"pretrained folder `{path}` holds {'no' if not files else len(files)} weight files; "
        "pass the weights file itself or a folder with exactly one (model.safetensors preferred)."
    )
