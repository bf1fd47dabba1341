"""Where a dataset's stores live: a folder named by the dataset's identity (format, resolved path, split
options), or by --name; inputs that share a file stem never share a store."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aftpipe.config import DatasetOptions, ExtractConfig
from aftpipe.data import load_dataset
from aftpipe.extraction import extract
from aftpipe.pipeline import validate
from aftpipe.sources import SourceOptions
from aftpipe.store import open_features

TFIDF = SourceOptions(tfidf_dim=8)


@pytest.fixture
def tickets(tmp_path):
    """The same 80 labelled rows as tickets.tsv, as a folder tickets/ (train.tsv + test.tsv) and as tickets.parquet."""
    rng = np.random.default_rng(0)
    words = ["refund", "invoice", "login", "password", "crash", "slow", "charge", "reset"]
    rows = [(" ".join(rng.choice(words, 4)), ("billing", "account")[i % 2]) for i in range(80)]
    lines = ["text\tlabel"] + [f"{t}\t{y}" for t, y in rows]
    (tmp_path / "tickets.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "tickets").mkdir()
    (tmp_path / "tickets" / "train.tsv").write_text("\n".join(lines[:61]) + "\n")
    (tmp_path / "tickets" / "test.tsv").write_text("\n".join(lines[:1] + lines[61:]) + "\n")
    pq.write_table(pa.table({"text": [t for t, _ in rows], "label": [y for _, y in rows]}), tmp_path / "tickets.parquet")
    return tmp_path


def run_extract(spec: str, cache, **kw):
    return extract(ExtractConfig(dataset=spec, sources=("tfidf",), source_options=TFIDF, cache_dir=str(cache),
                                 workers=0, **kw))


def test_inputs_that_share_a_stem_extract_side_by_side(tickets, monkeypatch):
    cache = tickets / "cache"
    specs = [f"tsv:{tickets / 'tickets.tsv'}", f"tsv:{tickets / 'tickets'}", f"parquet:{tickets / 'tickets.parquet'}"]
    folders = [run_extract(spec, cache)[0].path.parent for spec in specs]
    assert len(set(folders)) == 3 and all(f.parent == cache for f in folders)
    assert [f.name.split("-")[:2] for f in folders] == [["tickets", "tsv"], ["tickets", "tsv"], ["tickets", "parquet"]]
    for spec, folder in zip(specs, folders):
        store = open_features(folder / "tfidf")
        assert store.dataset["name"] == spec
        assert f"--name {folder.name}" in store.manifest["command"]  # its rebuild command rebuilds this folder
    # the same file typed relatively is the same dataset, so the same store: nothing is computed again
    monkeypatch.chdir(tickets)
    again = run_extract("tsv:tickets.tsv", cache)
    assert again[0].path.parent == folders[0] and sum(r.rows_computed for r in again) == 0
    # other held-out rows are another dataset: a store of their own, beside the first
    other = run_extract("tsv:tickets.tsv", cache, dataset_options=DatasetOptions(test_fraction=0.3))
    assert other[0].path.parent not in folders and other[0].path.parent.name.startswith("tickets-tsv-")


def test_named_datasets_keep_their_names():
    assert load_dataset("sst2").name == "sst2"
    assert load_dataset("sst2", options=DatasetOptions(views=2)).name == "sst2-views2"


def test_name_chooses_the_folder_and_a_pipeline_finds_the_store_extract_made(tickets, tiny_hf_dir):
    cache = tickets / "cache"
    [named, _] = run_extract(f"tsv:{tickets / 'tickets'}", cache, name="support")
    assert named.path == cache / "support" / "tfidf"
    body = (f"dataset: tsv:{tickets / 'tickets.tsv'}\nsources: {{t: [tfidf]}}\nstudents: [bow-mlp]\n"
            "methods: [{name: none}]\nextract: {source_options: {tfidf_dim: 8}}\n")
    (tickets / "p.yaml").write_text(body)
    assert "0 present, 1 to extract" in validate(tickets / "p.yaml", cache_dir=cache, runs_dir=tickets / "runs")
    run_extract(f"tsv:{tickets / 'tickets.tsv'}", cache)  # what `aftpipe extract` derives, `aftpipe run` derives
    assert "1 present, 0 to extract" in validate(tickets / "p.yaml", cache_dir=cache, runs_dir=tickets / "runs")
    (tickets / "p.yaml").write_text(body.replace("tickets.tsv", "tickets").replace("{source_options", "{name: support, source_options"))
    assert "1 present, 0 to extract" in validate(tickets / "p.yaml", cache_dir=cache, runs_dir=tickets / "runs")
