"""Pretrained starting points for students: the regime the AFT paper works in (every parameter but the
classifier copied from a pretrained model), and the word-level students' embeddings.

`hf:<hub id | local dir | minilm>` is a pretrained transformers encoder fine-tuned whole under a new linear
head; its features are the mean of the last hidden states over real tokens (sentence-transformers' pooling).
`layers=K` keeps its first K layers (MiniLM's first 2: a real pretrained small student), `prune_vocab` keeps
only the embedding rows of the tokens the training split uses. The model's own tokenizer is kept in the
spec (its tokenizer.json), so a rebuild needs nothing but the run directory.

`init_word_embeddings` gives a word-level student (textcnn, bow-mlp, tiny-transformer, whose WordPiece ids
are MiniLM's) the input embeddings of a pretrained model with the same vocabulary, PCA-reduced to the
student's width: what the words mean, without the model's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aftpipe.config import HFStudentOptions, StudentConfig
from aftpipe.errors import AftpipeError
from aftpipe.students.base import Student, masked_mean


def _model_dir(arg: str) -> str:
    from transformers.utils import logging as hf_logging

    from aftpipe.sources.hf import minilm_dir, resolve_model_dir

    hf_logging.set_verbosity_error()  # its load reports list the pooler we drop on purpose
    hf_logging.disable_progress_bar()
    if arg == "minilm":
        return str(minilm_dir())
    local = resolve_model_dir(arg)  # a missing path is an error; a hub id is passed on
    return str(local) if local else arg


def _layer_list(model: nn.Module) -> nn.ModuleList:
    """The encoder's list of layers (BERT's encoder.layer, DistilBERT's transformer.layer, ...): the
    ModuleList as long as the config's num_hidden_layers."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise AftpipeError(f"cannot find the {n} encoder layers of a `{model.config.model_type}` model to cut; "
                       "drop --student-layers")


class HFPretrained(Student):
    """hf:<hub id | dir | minilm>: a pretrained transformers encoder (optionally its first K layers and the
    vocabulary the data uses), mean-pooled, under a new linear head; fine-tuned whole."""

    modality = "text"
    Options = HFStudentOptions

    def __init__(self, student: str, num_classes: int, cfg: StudentConfig, hf_config: dict[str, Any],
                 tokenizer: str, kept: list[int] | None, model: nn.Module | None = None) -> None:
        from transformers import AutoModel

        if model is None:  # a rebuild: the architecture now, the weights from load_state_dict
            model = AutoModel.from_config(_config_from_dict(hf_config), add_pooling_layer=False)
        super().__init__(student, num_classes, model.config.hidden_size, cfg)
        self.model, self.hf_config, self.tokenizer_json = model, hf_config, tokenizer
        self.kept = kept
        self.classifier = nn.Linear(self.num_features, num_classes)

    @classmethod
    def create(cls, student, arg, num_classes, train_inputs, cfg):  # type: ignore[override]
        from transformers import AutoModel, AutoTokenizer

        ref = _model_dir(arg or "")
        try:
            tok = AutoTokenizer.from_pretrained(ref)
            model = AutoModel.from_pretrained(ref, add_pooling_layer=False)  # a pooler is dead weight here
        except (OSError, ValueError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AftpipeError(f"hf: student `{arg}` does not load ({first[:160]}); pass a directory saved with "
                               "save_pretrained (config.json, weights, tokenizer) or `minilm`") from None
        n = model.config.num_hidden_layers
        if cfg.layers is not None:
            if not 1 <= cfg.layers <= n:
                raise AftpipeError(f"--student-layers {cfg.layers} is out of range for `{arg}`, which has {n} "
                                   f"layers; use 1..{n}")
            layers = _layer_list(model)
            del layers[cfg.layers:]
            model.config.num_hidden_layers = cfg.layers
        kept = None
        if cfg.prune_vocab:
            if not train_inputs:
                raise AftpipeError("--prune-vocab keeps the tokens of the training texts, but none were given")
            ids, _ = _tokenize(tok.backend_tokenizer.to_str(), train_inputs, cfg.max_length)
            kept = sorted(set(np.unique(ids).tolist()) | set(tok.all_special_ids))
            _keep_rows(model, kept)
        return cls(student, num_classes, cfg, model.config.to_dict(), tok.backend_tokenizer.to_str(), kept, model)

    def encode(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        ids, mask = _tokenize(self.tokenizer_json, inputs, self.cfg.max_length)
        lut = self.id_map()
        if lut is not None:
            ids = lut[ids]
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def inference_tokenizer(self) -> str:
        """The model's tokenizer.json as `encode` uses it (its special tokens, truncation and padding to
        max_length), for the `tokenizers` library alone; its ids then go through `id_map`."""
        return _configured(self.tokenizer_json, self.cfg.max_length).to_str()

    def id_map(self) -> np.ndarray | None:
        """Tokenizer id → row of the pruned embedding table (tokens the training data lacked → UNK's row);
        None when the table is whole."""
        if self.kept is None:
            return None
        from tokenizers import Tokenizer

        size = max(Tokenizer.from_str(self.tokenizer_json).get_vocab_size(with_added_tokens=True), self.kept[-1] + 1)
        lut = np.full(size, _unk_row(self.kept, self.tokenizer_json), dtype=np.int64)
        lut[np.asarray(self.kept)] = np.arange(len(self.kept))
        return lut

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        mask = batch["attention_mask"]
        return masked_mean(self.model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state, mask)

    def _spec_extra(self) -> dict[str, Any]:
        return {"hf_config": self.hf_config, "tokenizer": self.tokenizer_json, "kept": self.kept}


def _config_from_dict(d: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    d = dict(d)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def _tokenize(tokenizer_json: str, texts: Sequence[Any], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), (N, max_length) int64, with the model's own special tokens."""
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise AftpipeError(f"text students need str inputs, but input {bad} is a {type(texts[bad]).__name__}")
    enc = _configured(tokenizer_json, max_length).encode_batch(list(texts))
    return (np.array([e.ids for e in enc], dtype=np.int64), np.array([e.attention_mask for e in enc], dtype=np.int64))


def _configured(tokenizer_json: str, max_length: int) -> Any:
    """The tokenizer truncating and padding (with its [PAD], else id 0) to max_length."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.enable_truncation(max_length)
    pad_id = tok.token_to_id("[PAD]") if tok.token_to_id("[PAD]") is not None else 0
    tok.enable_padding(length=max_length, pad_id=pad_id)
    return tok


def _unk_row(kept: list[int], tokenizer_json: str) -> int:
    """The pruned table's row of the unknown token (row 0 when the vocabulary has none)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    for name in ("[UNK]", "<unk>"):
        i = tok.token_to_id(name)
        if i is not None and i in kept:
            return kept.index(i)
    return 0


def _keep_rows(model: nn.Module, kept: list[int]) -> None:
    """Cut the input embedding table to the `kept` rows (in that order)."""
    old = model.get_input_embeddings()
    new = nn.Embedding(len(kept), old.embedding_dim)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(kept)])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(kept)
    pad = model.config.pad_token_id
    model.config.pad_token_id = kept.index(pad) if pad in kept else None


# --- word-level students' embeddings ---------------------------------------------------------------------
def init_word_embeddings(student: Student, source: str) -> dict[str, Any]:
    """Start `student`'s embedding table from `source`'s input embeddings (`minilm` or `hf:<dir>`), rows
    matched by WordPiece id and reduced to the student's width by PCA, scaled to the table's initial std.
    Returns what was done, for the run's record."""
    from sklearn.decomposition import PCA

    from aftpipe.students.text import TextStudent
    from aftpipe.students.tokenizer import PAD, UNK, base_vocab

    if not isinstance(student, TextStudent) or not isinstance(getattr(student, "embed", None), nn.Embedding):
        raise AftpipeError(f"student `{student.student}` has no word embedding table to initialise; "
                           "--init-embeddings is for textcnn, bow-mlp and tiny-transformer")
    weight, vocab = _input_embeddings(source)
    if vocab != base_vocab():
        raise AftpipeError(f"--init-embeddings {source}: its vocabulary is not the students' WordPiece vocabulary "
                           "(MiniLM's, bert-base-uncased); use a model with that tokenizer, e.g. minilm")
    table = student.embed.weight
    rows = weight[np.asarray(student.vocab, dtype=np.int64)]
    k = min(table.shape[1], len(rows), rows.shape[1])
    proj = PCA(n_components=k, svd_solver="full").fit_transform(rows.astype(np.float64))
    proj *= float(table.detach().std()) / proj.std()  # the scale the student's own init would have had
    with torch.no_grad():
        table[2:, :k] = torch.from_numpy(proj).to(table.dtype)
        table[2:, k:] = 0
        table[PAD] = 0
        table[UNK] = 0
    return {"source": source, "rows": len(rows), "components": k}


def _input_embeddings(source: str) -> tuple[np.ndarray, dict[str, int]]:
    from transformers import AutoModel, AutoTokenizer

    if source == "minilm" or source.startswith("hf:"):
        ref = _model_dir("minilm" if source == "minilm" else source[3:])
    else:
        raise AftpipeError(f"--init-embeddings `{source}`: give `minilm` or `hf:<model dir>`")
    try:
        vocab = AutoTokenizer.from_pretrained(ref).get_vocab()
        weight = AutoModel.from_pretrained(ref).get_input_embeddings().weight.detach().numpy()
    except (OSError, ValueError) as e:
        raise AftpipeError(f"--init-embeddings `{source}` does not load ({str(e).splitlines()[0][:160]})") from None
    return weight, vocab


__all__ = ["HFPretrained", "init_word_embeddings"]
