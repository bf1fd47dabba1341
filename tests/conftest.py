"""Shared fixtures: tiny random-init models saved to disk, tiny datasets, offline settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
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


def _wait_for(condition, proc, what: str, timeout: float = 300.0) -> None:
    """Poll `condition` while `proc` runs; fail naming `what` if the process ends first or the time runs out, so a
    test that needs the process caught mid-way never carries on with it finished (or not yet started)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.02)


@pytest.fixture
def wait_for():
    """`wait_for(condition, proc, what)`: poll until `condition()` holds while the process `proc` runs."""
    return _wait_for


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


# --- trained runs: model folders for the predict / export / load_model tests -----------------------------------
SMALL_STUDENT = dict(vocab_size=200, embed_dim=16, width=16, max_length=16)


POSITIVE, NEGATIVE = ["good", "great", "superb", "fine"], ["bad", "awful", "dull", "boring"]


def _write_reviews(folder: Path, sizes: dict[str, int], *, seed: int = 0, words: int | Callable[[int], int] = 3,
                   topics: bool = False, named: bool = False) -> Path:
    """`<folder>/<name>.tsv` with `sizes[name]` labelled rows each, whose words give the label away (a learnable
    task): `words` positive or negative words (a number, or one per row number), then `film` (or, with
    `topics`, two of film/plot/cast) and the row number. Labels are 0/1, or `neg`/`pos` when `named`. One
    random generator runs through the files in order, so the rows depend only on the arguments."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in sizes.items():
        rows = ["text\tlabel"]
        for i in range(n):
            y = int(rng.integers(2))
            signal = rng.choice(POSITIVE if y else NEGATIVE, words(i) if callable(words) else words).tolist()
            filler = rng.choice(["film", "plot", "cast"], 2).tolist() if topics else ["film"]
            rows.append(f"{' '.join(signal + filler)} {i}\t{('neg', 'pos')[y] if named else y}")
        (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def write_reviews():
    """`write_reviews(folder, {"train": 200, "test": 60}, seed=0, words=3, topics=False, named=False)`: small
    labelled review TSVs with a word signal; returns `folder`."""
    return _write_reviews


@pytest.fixture(scope="session")
def text_runs(tmp_path_factory, tiny_hf_dir, write_reviews) -> dict[str, Path]:
    """Finished runs on a named-label tsv dataset with tiny-BERT features: an AFT TextCNN (`student`) and the
    linear probe (`probe`). Shared: tests that damage a run copy it first."""
    from aftpipe.api import train
    from aftpipe.config import ExtractConfig, TrainConfig
    from aftpipe.extraction import extract
    from aftpipe.methods import MethodConfig
    from aftpipe.students import StudentConfig

    root = tmp_path_factory.mktemp("text-runs")
    data = write_reviews(root / "reviews", {"train": 300, "test": 80}, topics=True, named=True)
    extract(ExtractConfig(dataset=f"tsv:{data}", sources=(f"hf:{tiny_hf_dir}",), cache_dir=str(root / "cache"), name="reviews",
                          workers=0))
    store = str(root / "cache" / "reviews" / f"hf-{tiny_hf_dir.name}")
    common = dict(dataset=f"tsv:{data}", features=(store,), epochs=4, batch_size=32, lr=3e-3, threads=1)
    train(TrainConfig(**common, student="textcnn", method="aft", method_options=MethodConfig(beta=0.5),
                      student_options=StudentConfig(**SMALL_STUDENT), out=str(root / "student")))
    train(TrainConfig(**common, method="linear_probe", out=str(root / "probe")))
    return {"student": root / "student", "probe": root / "probe", "data": data, "store": Path(store)}


@pytest.fixture(scope="session")
def image_run(tmp_path_factory) -> Path:
    """A finished small-cnn run on scikit-learn's 8x8 digits, without transfer."""
    from aftpipe.config import TrainConfig
    from aftpipe.students import StudentConfig
    from aftpipe.training import train

    out = tmp_path_factory.mktemp("image-run") / "digits"
    train(TrainConfig(dataset="digits", student="small-cnn", method="none", epochs=2, batch_size=64, lr=3e-3,
                      threads=1, student_options=StudentConfig(width=16, layers=2), out=str(out)))
    return out
