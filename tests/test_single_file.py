"""A dataset that is one file: extract, train, evaluate and a pipeline, with no test split made by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aftpipe.evaluation import evaluate
from aftpipe.pipeline import validate
from aftpipe.store import open_features
from aftpipe.sweep import run_pipeline

STUDENT = ["--student", "bow-mlp", "--vocab-size", "200", "--embed-dim", "16", "--width", "16", "--threads", "1"]


@pytest.fixture
def one_tsv(tmp_path, write_reviews) -> Path:
    """150 labelled rows with a word signal, in one file."""
    return write_reviews(tmp_path, {"tickets": 150}, named=True) / "tickets.tsv"


def extract_args(data: Path, model: Path, cache: Path, *extra: str) -> list[str]:
    return ["extract", "--dataset", f"tsv:{data}", "--source", f"hf:{model}", "--cache-dir", str(cache),
            "--workers", "0", "--quiet", *extra]


def test_extract_then_train_a_single_file_holds_out_the_same_test_rows(one_tsv, tiny_hf_dir, tmp_path, cli,
                                                                        one_line_error):
    code, _, err = cli(extract_args(one_tsv, tiny_hf_dir, tmp_path / "c"))
    assert code == 0, err
    [store] = (tmp_path / "c").glob(f"*/hf-{tiny_hf_dir.name}")
    st = open_features(store)
    assert sorted(st.splits) == ["test", "train"] and st.split_info("test").n == 30
    held = {"from": "train", "fraction": 0.2, "seed": 0, "rows": 30}
    assert st.dataset["info"]["test_split"] == held and st.manifest["key"]["dataset"]["info"]["test_split"] == held

    run = tmp_path / "run"
    code, _, err = cli(["train", "--dataset", f"tsv:{one_tsv}", "--features", str(store), *STUDENT, "--steps", "3",
                        "--quiet", "--out", str(run)])
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_split"] == "test" and metrics["record"]["test_split"] == held
    assert metrics["rows"]["test"] == 30 and metrics["rows"]["train"] + metrics["rows"]["holdout"] == 120
    assert evaluate(run) == metrics["test"]  # scored again on the same held-out rows

    # other held-out rows than the store's are refused, naming the options that make them the same
    code, _, err = cli(["train", "--dataset", f"tsv:{one_tsv}", "--features", str(store), *STUDENT, "--steps", "3",
                        "--quiet", "--out", str(tmp_path / "other"), "--split-seed", "1"])
    one_line_error(code, err, "was extracted with --test-fraction 0.2 --split-seed 0",
                   "loaded with --test-fraction 0.2 --split-seed 1", "pass --test-fraction 0.2 --split-seed 0")


def test_a_pipeline_on_a_single_file_extracts_and_scores_the_held_out_split(one_tsv, tiny_hf_dir, tmp_path):
    yaml = tmp_path / "one.yaml"
    yaml.write_text(f"""\
dataset: tsv:{one_tsv}
extract: {{workers: 0}}
sources: {{tiny: [hf:{tiny_hf_dir}]}}
students: [bow-mlp]
methods: [{{name: none}}, {{name: linear_probe}}]
seeds: [0, 1, 2]
train: {{steps: 3, batch_size: 32, student_options: {{vocab_size: 200, embed_dim: 16, width: 16, max_length: 16}}}}
""")
    dirs = {"cache_dir": tmp_path / "cache", "runs_dir": tmp_path / "runs"}
    assert "test split `test` 30 rows" in validate(yaml, **dirs)
    run_pipeline(yaml, results_dir=tmp_path / "results", **dirs)
    [store] = (tmp_path / "cache").glob(f"*/hf-{tiny_hf_dir.name}")
    assert sorted(open_features(store).splits) == ["test", "train"]
    runs = sorted((tmp_path / "runs" / "one").glob("*/metrics.json"))
    assert len(runs) == 6
    for path in runs:
        metrics = json.loads(path.read_text())
        assert metrics["test_split"] == "test" and metrics["record"]["test_split"]["rows"] == 30
