"""Text students. Each reads `input_ids` / `attention_mask` from `encode` (see tokenizer.py) and ignores
padding exactly: a sentence gives the same features whatever it is padded to (up to float rounding), as
long as it was not truncated.

Default sizes with vocab_size 8000 (embeddings 8000 x 48 = 384,000 of each total), 2 classes:
    textcnn           442,502   features 300
    tiny-transformer  443,810   features 48
    bow-mlp           397,058   features 256
    hf-config:...     whatever the config says (the vocabulary size is replaced by the compact one)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aftpipe.config import DeepWordStudentOptions, StudentConfig, VocabularyOptions, WordStudentOptions
from aftpipe.errors import AftpipeError
from aftpipe.students.base import Student, masked_mean
from aftpipe.students.tokenizer import PAD, TOKENIZER, build_vocab, compact_tokenizer_json, encode_texts

EMBED_DIM = 48  # see StudentConfig.embed_dim


class TextStudent(Student):
    """Shared by the text students: the compact vocabulary (kept WordPiece ids, stored in the spec) and
    `encode`. `vocab_len` = PAD + UNK + kept ids is the embedding table's size."""

    modality = "text"
    Options = VocabularyOptions

    def __init__(self, student: str, num_classes: int, num_features: int, cfg: StudentConfig, vocab: list[int]) -> None:
        super().__init__(student, num_classes, num_features, cfg)
        self.vocab = [int(i) for i in vocab]
        self.vocab_len = 2 + len(self.vocab)

    @staticmethod
    def _build_vocab(student: str, train_inputs: Sequence[Any] | None, cfg: StudentConfig) -> list[int]:
        if train_inputs is None or len(train_inputs) == 0:
            raise AftpipeError(
                f"student `{student}` builds its vocabulary from the training inputs, but none were given; "
                "pass the training split's inputs as train_inputs."
            )
        return build_vocab(train_inputs, cfg.vocab_size, cfg.max_length)

    @classmethod
    def create(cls, student, arg, num_classes, train_inputs, cfg):  # type: ignore[override]
        cfg = cfg.with_defaults(cls.DEFAULTS)
        return cls(student, num_classes, cfg, vocab=cls._build_vocab(student, train_inputs, cfg))

    def encode(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        return encode_texts(inputs, self.vocab, self.cfg.max_length)

    def inference_tokenizer(self) -> str:
        """A tokenizer.json that gives exactly `encode`'s input_ids and attention_mask with the `tokenizers`
        library alone (the compact vocabulary is in it: `id_map` is None)."""
        return compact_tokenizer_json(self.vocab, self.cfg.max_length)

    def id_map(self) -> None:
        return None

    def _spec_extra(self) -> dict[str, Any]:
        return {"tokenizer": TOKENIZER, "vocab": self.vocab}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Student:
        spec = dict(spec)
        if spec.pop("tokenizer", TOKENIZER) != TOKENIZER:
            raise AftpipeError(
                f"this student's vocabulary is for another tokenizer than {TOKENIZER}; rebuild it with aftpipe's."
            )
        return super().from_spec(spec)


class TextCNN(TextStudent):
    """Kim (2014), "Convolutional Neural Networks for Sentence Classification": embeddings, 1-D convolutions
    of widths 3, 4, 5 (`width` filters each), ReLU, max over time, dropout.

    Padding: pad embeddings are zeroed, every window that starts on a real token sees zeros past the end of
    the sentence (the input is right-padded by k-1 zeros), and windows that start on padding are left out of
    the max. So the features do not depend on how far a sentence is padded; a text with no tokens gives zeros.

    Speed: a batch is as wide as its longest text (~50 WordPieces on SST-2) while the average text is ~11,
    so a dense convolution spends ~4/5 of its work on padding. `features` therefore computes the windows
    that start on real tokens only: it gathers each one's k_max × embed_dim inputs into a row, multiplies
    the rows by each width's filters (the first k taps of the row), and takes the max over each text's
    rows. ReLU comes after the max, where it gives the same value and gradient (max∘ReLU = ReLU∘max) on
    300 numbers per text instead of 300 per window. The result equals the dense convolution's up to
    float rounding, at ~1/3 of its cost on a CPU; the weights are the same `nn.Conv1d`s."""

    Options = WordStudentOptions
    DEFAULTS: ClassVar[dict[str, Any]] = {"embed_dim": EMBED_DIM, "width": 100}  # 100 filters per width, as Kim
    WINDOWS = (3, 4, 5)

    def __init__(self, student: str, num_classes: int, cfg: StudentConfig, vocab: list[int]) -> None:
        super().__init__(student, num_classes, len(self.WINDOWS) * cfg.width, cfg, vocab)
        self.embed = nn.Embedding(self.vocab_len, cfg.embed_dim, padding_idx=PAD)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.embed_dim, cfg.width, k) for k in self.WINDOWS)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        mask = batch["attention_mask"].bool()
        B, L = mask.shape
        k_max, device = max(self.WINDOWS), mask.device
        x = self.embed(batch["input_ids"]) * mask.unsqueeze(-1)  # (B, L, E), padding zeroed
        x = F.pad(x, (0, 0, 0, k_max - 1)).flatten(0, 1)  # (B·(L+k_max-1), E): each text, then k_max-1 zeros
        # the windows that start on a real token, text after text: window t covers tokens t..t+k_max-1
        starts = ((torch.arange(B, device=device) * (L + k_max - 1))[:, None] + torch.arange(L, device=device))[mask]
        taps = (starts[:, None] + torch.arange(k_max, device=device)).flatten()
        windows = x.index_select(0, taps).view(len(starts), k_max * x.shape[1])  # (windows, k_max·E), tap by tap
        z = torch.cat([torch.addmm(conv.bias, windows[:, :k * x.shape[1]], _taps_major(conv.weight).T)
                       for conv, k in zip(self.convs, self.WINDOWS, strict=True)], dim=1)  # (windows, 3·width)
        text = torch.arange(B, device=device).repeat_interleave(mask.sum(1))  # the text each window belongs to
        return self.drop(F.relu(segment_max(z, text, B)))  # 0 for a text without windows


class _SegmentMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, segment: Tensor, n: int) -> Tensor:
        out = x.new_zeros(n, x.shape[1]).scatter_reduce_(0, segment[:, None].expand_as(x), x, "amax",
                                                         include_self=False)
        ctx.save_for_backward(x, segment, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        x, segment, out = ctx.saved_tensors
        hit = (x == out.index_select(0, segment)).to(grad.dtype)  # the rows holding their segment's max
        ties = torch.zeros_like(out).index_add_(0, segment, hit).clamp_min_(1)
        return hit * (grad / ties).index_select(0, segment), None, None


def segment_max(x: Tensor, segment: Tensor, n: int) -> Tensor:
    """(n, C): row s is the column-wise max of the rows of `x` (N, C) whose `segment` (N,) is s, 0 where there
    are none. The gradient goes to the rows holding a max, split evenly between ties, as `torch.amax` does;
    `scatter_reduce`'s own backward does the same at twice the cost, and `segment_reduce`'s (torch 2.14)
    gives every tied row the whole gradient."""
    return _SegmentMax.apply(x, segment, n)


def _taps_major(weight: Tensor) -> Tensor:
    """A Conv1d weight (out, E, k) as the (out, k·E) matrix that multiplies a window laid out tap by tap."""
    return weight.permute(0, 2, 1).reshape(weight.shape[0], -1)


class Block(nn.Module):
    """A pre-LN transformer encoder layer (Xiong et al. 2020): x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """x (B, L, D); keep (B, L) bool: the positions that may be attended to."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.mlp(self.ln2(x)))


class TinyTransformer(TextStudent):
    """Token embeddings + learned positions, `layers` pre-LN encoder layers (4 heads) with padding masked out
    of attention, a final LayerNorm, and the mean over real tokens."""

    # feed-forward 4 x the model width, as in BERT; 2 layers of ~28k parameters each (DESIGN §5: "tiny")
    Options = DeepWordStudentOptions
    DEFAULTS: ClassVar[dict[str, Any]] = {"embed_dim": EMBED_DIM, "width": 4 * EMBED_DIM, "layers": 2}
    HEADS = 4  # head width 12 at the default embed_dim 48

    def __init__(self, student: str, num_classes: int, cfg: StudentConfig, vocab: list[int]) -> None:
        super().__init__(student, num_classes, cfg.embed_dim, cfg, vocab)
        if cfg.embed_dim % self.HEADS:
            raise AftpipeError(
                f"tiny-transformer needs embed_dim divisible by {self.HEADS}, got {cfg.embed_dim}; change embed_dim."
            )
        self.embed = nn.Embedding(self.vocab_len, cfg.embed_dim, padding_idx=PAD)
        self.pos = nn.Parameter(torch.zeros(cfg.max_length, cfg.embed_dim))
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, self.HEADS, cfg.width, cfg.dropout) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.embed_dim)
        self.classifier = nn.Linear(self.num_features, num_classes)
        # GPT-2 / nanoGPT init: small normal embeddings, so positions and tokens start on the same scale
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        # a text with no tokens would have nothing to attend to (NaN); let it attend to position 0, it is
        # left out of the mean anyway
        keep = mask.clone()
        keep[:, 0] |= ~mask.any(dim=1)
        for block in self.blocks:
            x = block(x, keep)
        return masked_mean(self.ln_f(x), mask)


class BowMLP(TextStudent):
    """Bag of word pieces: the mean of the real tokens' embeddings, then `layers` Linear-ReLU-dropout layers
    of `width` (layers=0: the mean embedding itself is the feature)."""

    Options = DeepWordStudentOptions
    DEFAULTS: ClassVar[dict[str, Any]] = {"embed_dim": EMBED_DIM, "width": 256, "layers": 1}

    def __init__(self, student: str, num_classes: int, cfg: StudentConfig, vocab: list[int]) -> None:
        super().__init__(student, num_classes, cfg.width if cfg.layers else cfg.embed_dim, cfg, vocab)
        self.embed = nn.Embedding(self.vocab_len, cfg.embed_dim, padding_idx=PAD)
        dims = [cfg.embed_dim] + [cfg.width] * cfg.layers
        self.mlp = nn.Sequential(
            *(
                m
                for a, b in zip(dims[:-1], dims[1:], strict=True)
                for m in (nn.Linear(a, b), nn.ReLU(), nn.Dropout(cfg.dropout))
            )
        )
        self.classifier = nn.Linear(self.num_features, num_classes)

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        return self.mlp(masked_mean(self.embed(batch["input_ids"]), batch["attention_mask"]))


class HFConfig(TextStudent):
    """hf-config:<JSON | config.json | folder>: any transformers architecture from its config, randomly
    initialised, with the compact vocabulary (vocab_size and pad_token_id are replaced); features are the
    mean of `last_hidden_state` over real tokens (the encoder's, for encoder-decoder configs). The config's
    own sizes and dropout probabilities apply: embed_dim, width, layers and dropout are not its options."""

    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, student: str, num_classes: int, cfg: StudentConfig, vocab: list[int], hf_config: dict[str, Any]
    ) -> None:
        from transformers import AutoModel
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        config = _config_from_dict(hf_config)
        kwargs = {}
        model_class = MODEL_MAPPING.get(type(config), None)
        if model_class is not None and "add_pooling_layer" in _init_params(model_class):
            kwargs["add_pooling_layer"] = False  # BERT-style poolers are unused by mean pooling: dead weights
        try:
            model = AutoModel.from_config(config, **kwargs)
        except (ValueError, KeyError) as e:
            raise AftpipeError(
                f"transformers has no base model for config `{config.model_type}` ({e}); "
                "use an encoder config such as bert."
            ) from None
        if getattr(config, "is_encoder_decoder", False):
            model = model.get_encoder()
        super().__init__(student, num_classes, config.hidden_size, cfg, vocab)
        self.hf_config = json.loads(config.to_json_string(use_diff=False))  # JSON-normalised (id2label keys)
        self.model = model
        self.classifier = nn.Linear(self.num_features, num_classes)

    @classmethod
    def create(cls, student, arg, num_classes, train_inputs, cfg):  # type: ignore[override]
        config = parse_hf_config(arg)
        vocab = cls._build_vocab(student, train_inputs, cfg)
        config.vocab_size = 2 + len(vocab)
        config.pad_token_id = PAD
        for key in ("bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
            if isinstance(getattr(config, key, None), int) and getattr(config, key) >= config.vocab_size:
                setattr(config, key, None)  # ids of the original vocabulary mean nothing in the compact one
        max_pos = getattr(config, "max_position_embeddings", None)
        if isinstance(max_pos, int) and max_pos < cfg.max_length:
            raise AftpipeError(
                f"hf-config has max_position_embeddings={max_pos} < max_length={cfg.max_length}; "
                "raise it in the config or lower max_length."
            )
        return cls(student, num_classes, cfg, vocab=vocab, hf_config=config.to_dict())

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        mask = batch["attention_mask"]
        out = self.model(input_ids=batch["input_ids"], attention_mask=mask)
        return masked_mean(out.last_hidden_state, mask)

    def _spec_extra(self) -> dict[str, Any]:
        return {**super()._spec_extra(), "hf_config": self.hf_config}


def _init_params(model_class: type) -> set[str]:
    import inspect

    return set(inspect.signature(model_class.__init__).parameters)


def _config_from_dict(d: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    if not isinstance(d, dict) or "model_type" not in d:
        raise AftpipeError(
            "hf-config needs a JSON object with a `model_type` key, "
            'e.g. {"model_type": "bert", "hidden_size": 64}; add it.'
        )
    try:
        return AutoConfig.for_model(**d)
    except (ValueError, KeyError, TypeError) as e:
        raise AftpipeError(
            f"transformers cannot build a config from the hf-config ({e}); check its `model_type` and keys."
        ) from None


def parse_hf_config(arg: str) -> Any:
    """The transformers config named by `arg`: inline JSON, a config.json, or a folder holding one."""
    text = arg.strip()
    if text.startswith("{"):
        source = "hf-config JSON"
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise AftpipeError(
                f'hf-config path `{path}` does not exist; pass inline JSON (hf-config:{{"model_type": "bert", ...}}) '
                "or a path to a config.json or a folder holding one."
            )
        source, text = f"hf-config file `{path}`", path.read_text()
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise AftpipeError(
            f"{source} does not parse as JSON ({e.msg} at character {e.pos}); "
            'write it like {"model_type": "bert", "hidden_size": 64} with double quotes.'
        ) from None
    return _config_from_dict(d)
