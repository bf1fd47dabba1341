"""Shared fixtures: tiny random-init models saved to disk, tiny datasets, offline settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert (SHARED_DATA / "sst2" / "dev.tsv").exists(), f"the real datasets are expected at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's real WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from aftpipe.sources import minilm_dir

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_timm_dir(tmp_path_factory) -> Path:
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-timm")
    save_for_hf(timm.create_model("test_resnet", pretrained=False, num_classes=0), out)
    return out


@pytest.fixture
def reviews_tsv(tmp_path) -> Path:
    """A small labelled text file in the generic tsv format."""
    p = tmp_path / "reviews.tsv"
    words = ["good", "bad", "fine", "awful", "great", "dull", "superb", "boring"]
    lines = ["text\tlabel"] + [f"{' '.join(words[(i * k) % 8] for k in range(1, 2 + i % 7))} film {i}\t{i % 2}"
                               for i in range(300)]
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture
def cli(capsys):
    """Run `aftpipe ARGS...` in this process: returns (exit code, stdout, stderr)."""
    from aftpipe.cli import main

    def run(args):
        sys.argv = ["aftpipe", *args]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def one_line_error():
    """`one_line_error(code, err, *needles)`: exit 2, one `error: ...` line holding every needle, no traceback."""
    return _one_line_error
