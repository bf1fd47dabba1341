"""Stores behind fsspec URLs, against a real S3-compatible server (moto's, started here on a free port):
extract writes the same bytes as to a local folder and resumes; train reads through the local cache (or
--in-memory) and learns what it learns from the local store; hdf5 to a URL and missing credentials are one
line; `file://` is a local path and `memory://` works in one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aftpipe.config import ExtractConfig, TrainConfig
from aftpipe.extraction import extract
from aftpipe.store import open_features, verify_store
from aftpipe.training import train

from aftpipe.students import StudentConfig
from conftest import SMALL_STUDENT

SHARDING = dict(shard_rows=32, chunk_rows=32)  # 300 train rows → 10 shards, 80 test rows → 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path) -> str:
    """A fresh bucket on the server, with this process's AWS settings pointing at it; returns its URL."""
    import boto3
    import s3fs

    for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_server,
                       "AWS_EC2_METADATA_DISABLED": "true", "AFTPIPE_REMOTE_CACHE": str(tmp_path / "remote-cache"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                       "AWS_CONFIG_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(var, value)
    s3fs.S3FileSystem.clear_instance_cache()  # a filesystem cached with another test's settings
    bucket = f"b{tmp_path.name.replace('_', '-').lower()}"[:60].rstrip("-")
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture(scope="module")
def reviews(tmp_path_factory, write_reviews) -> Path:
    return write_reviews(tmp_path_factory.mktemp("remote") / "reviews", {"train": 300, "test": 80}, topics=True,
                         named=True)


@pytest.fixture(scope="module")
def local_store(tmp_path_factory, reviews, tiny_hf_dir) -> Path:
    cache = tmp_path_factory.mktemp("remote-local")
    extract(ExtractConfig(dataset=f"tsv:{reviews}", sources=(f"hf:{tiny_hf_dir}",), cache_dir=str(cache), name="reviews",
                          workers=0, **SHARDING))
    return cache / "reviews" / f"hf-{tiny_hf_dir.name}"


def _extract(reviews: Path, model: Path, cache: str) -> list:
    return extract(ExtractConfig(dataset=f"tsv:{reviews}", sources=(f"hf:{model}",), cache_dir=cache, name="reviews", workers=0,
                                 **SHARDING))


def _same_features(a, b) -> None:
    sa, sb = open_features(a), open_features(b)
    assert sorted(sa.splits) == sorted(sb.splits) == ["test", "train"]
    for name in sa.splits:
        xa, xb = sa.split(name, verify=True), sb.split(name, verify=True)
        assert xa._raw_rows(0, len(xa)).tobytes() == xb._raw_rows(0, len(xb)).tobytes(), name
        assert [s.sha256 for s in sa.split_info(name).shards] == [s.sha256 for s in sb.split_info(name).shards]


def test_extract_to_s3_writes_the_local_bytes_and_resumes(s3, reviews, tiny_hf_dir, local_store):
    url = f"{s3}/cache/reviews/hf-{tiny_hf_dir.name}"
    first = _extract(reviews, tiny_hf_dir, f"{s3}/cache")
    assert [(r.split, r.shards_done) for r in first] == [("test", 3), ("train", 10)]
    _same_features(local_store, url)
    assert verify_store(url).ok
    # a shard object gone from the bucket: the re-run recomputes exactly that one, and the store is whole again
    import s3fs

    s3fs.S3FileSystem().rm(url.removeprefix("s3://") + "/train/features/c/4/0")
    assert not verify_store(url).ok
    again = _extract(reviews, tiny_hf_dir, f"{s3}/cache")
    assert [(r.split, r.shards_done, r.recomputed) for r in again] == [("test", 0, ()), ("train", 1, (4,))]
    _same_features(local_store, url)


def test_two_processes_extract_one_s3_store_identical_to_one_local_process(s3, reviews, tiny_hf_dir, local_store):
    # ranks record their shards in the store's journal on S3; rank 0 merges it into the manifest there
    port = _free_port()
    args = ["-m", "aftpipe", "extract", "--dataset", f"tsv:{reviews}", "--source", f"hf:{tiny_hf_dir}", "--cache-dir",
            f"{s3}/cache", "--name", "reviews", "--shard-rows", "32", "--chunk-rows", "32", "--workers", "0", "--quiet"]
    procs = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
             for r in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    url = f"{s3}/cache/reviews/hf-{tiny_hf_dir.name}"
    _same_features(local_store, url)
    assert open_features(url).manifest["state"] == "complete" and verify_store(url).ok
    import s3fs

    assert not s3fs.S3FileSystem().exists(url.removeprefix("s3://") + ".journal")  # merged, then removed


def test_training_from_s3_learns_what_the_local_store_teaches(s3, reviews, tiny_hf_dir, local_store, tmp_path):
    _extract(reviews, tiny_hf_dir, f"{s3}/cache")
    url = f"{s3}/cache/reviews/hf-{tiny_hf_dir.name}"
    common = dict(dataset=f"tsv:{reviews}", epochs=2, batch_size=32, lr=3e-3, threads=1, student="textcnn",
                  method="aft", student_options=StudentConfig(**SMALL_STUDENT))
    local = train(TrainConfig(**common, features=(str(local_store),), out=str(tmp_path / "local")))
    remote = train(TrainConfig(**common, features=(url,), out=str(tmp_path / "remote")))
    in_memory = train(TrainConfig(**common, features=(url,), in_memory=True, out=str(tmp_path / "in-memory")))
    assert remote.test == local.test == in_memory.test
    assert json.loads((tmp_path / "remote" / "metrics.json").read_text())["test"] == local.test
    # the read-through cache holds each train shard once, named by its checksum
    cached = sorted(p.name for p in (tmp_path / "remote-cache").rglob("train/*"))
    shas = [s.sha256 for s in open_features(url).split_info("train").shards]
    assert cached == sorted(f"{i}-{sha}" for i, sha in enumerate(shas))


def test_a_teacher_fitted_on_an_s3_store_is_kept_in_the_local_cache(s3, reviews, tiny_hf_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _extract(reviews, tiny_hf_dir, f"{s3}/cache")
    url = f"{s3}/cache/reviews/hf-{tiny_hf_dir.name}"
    train(TrainConfig(dataset=f"tsv:{reviews}", features=(url,), method="kd_logit", epochs=1, batch_size=32, threads=1,
                      student_options=StudentConfig(**SMALL_STUDENT), out=str(tmp_path / "run")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["remote-cache", "run"]  # no local folder named `s3:`
    assert list((tmp_path / "remote-cache").glob("*/heads/*"))


def test_hdf5_to_an_object_store_is_refused(s3, reviews, tiny_hf_dir, cli, one_line_error):
    code, _, err = cli(["extract", "--dataset", f"tsv:{reviews}", "--source", f"hf:{tiny_hf_dir}", "--format", "hdf5",
                        "--cache-dir", f"{s3}/cache"])
    one_line_error(code, err, "--format", "hdf5 cannot be written to an object store", "--format zarr")


def test_missing_s3_credentials_are_the_clients_message_on_one_line(s3, reviews, tiny_hf_dir, tmp_path, monkeypatch,
                                                                    cli, one_line_error):
    import s3fs

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    s3fs.S3FileSystem.clear_instance_cache()
    code, _, err = cli(["train", "--dataset", f"tsv:{reviews}", "--features", f"{s3}/cache/reviews/x",
                        "--out", str(tmp_path / "run")])
    one_line_error(code, err, f"cannot read the store {s3}/cache/reviews/x", "NoCredentialsError",
                   "check the s3 credentials")
    assert not (tmp_path / "run").exists()


def test_file_urls_are_local_paths_and_memory_urls_work_in_one_process(reviews, tiny_hf_dir, local_store, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    _extract(reviews, tiny_hf_dir, f"file://{tmp_path}/abs")
    assert not (tmp_path / "file:").exists()
    _same_features(local_store, tmp_path / "abs" / "reviews" / f"hf-{tiny_hf_dir.name}")
    _extract(reviews, tiny_hf_dir, "memory://aftpipe-test/cache")
    store = open_features(f"memory://aftpipe-test/cache/reviews/hf-{tiny_hf_dir.name}")
    _same_features(local_store, store.path)
    assert np.asarray(store.split("train")[np.arange(5)]).shape == (5, 32)


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """AWS settings pointing at an endpoint nothing listens on, tried once; returns a function to point them
    at another endpoint (an unknown host) or to drop the credentials."""
    import s3fs

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_MAX_ATTEMPTS": "1",
           "AWS_RETRY_MODE": "standard", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AFTPIPE_REMOTE_CACHE": str(tmp_path / "remote-cache")}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    s3fs.S3FileSystem.clear_instance_cache()

    def point(endpoint: str | None = None, credentials: bool = True) -> None:
        if endpoint:
            monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        if not credentials:
            monkeypatch.delenv("AWS_ACCESS_KEY_ID")
            monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        s3fs.S3FileSystem.clear_instance_cache()

    return point


PIPELINE = ("dataset: tsv:{data}\nsources: {{t: [tfidf]}}\nstudents: [bow-mlp]\nseeds: [0]\nmethods: [{{name: none}}]\n"
            "extract: {{name: reviews, source_options: {{tfidf_dim: 8}}}}\ntrain: {{steps: 2, threads: 1}}\n")


def _ends_in_one_error(code: int, err: str, *needles: str) -> None:
    """Exit 2 and one `error:` line, the last, holding every needle (progress lines of what ran may come first)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err and sum(ln.startswith("error:") for ln in lines) == 1, err
    assert lines[-1].startswith("error: ") and all(n in lines[-1] for n in needles), lines[-1]


@pytest.mark.parametrize("failure", ["closed-port", "unknown-host", "no-credentials"])
def test_an_unreachable_object_store_is_one_line_on_extract_train_and_pipelines(failure, nowhere, reviews, tmp_path,
                                                                                cli):
    if failure == "unknown-host":
        nowhere("http://no-such-host.invalid:9000")
    elif failure == "no-credentials":
        nowhere(credentials=False)
    url = "s3://bucket/cache"
    code, _, err = cli(["extract", "--dataset", f"tsv:{reviews}", "--name", "reviews", "--source", "tfidf",
                        "--tfidf-dim", "8", "--cache-dir", url, "--workers", "0", "--quiet"])
    _ends_in_one_error(code, err, f"cannot write the store {url}/reviews/tfidf", "check the s3 credentials and endpoint")
    code, _, err = cli(["train", "--dataset", f"tsv:{reviews}", "--features", f"{url}/reviews/tfidf", "--student",
                        "bow-mlp", "--steps", "2", "--quiet", "--out", str(tmp_path / "run")])
    _ends_in_one_error(code, err, f"cannot read the store {url}/reviews/tfidf", "check the s3 credentials")
    (tmp_path / "p.yaml").write_text(PIPELINE.format(data=reviews))
    for command in ("validate", "run"):
        code, _, err = cli([command, str(tmp_path / "p.yaml"), "--cache-dir", url, "--runs-dir", str(tmp_path / "runs")])
        _ends_in_one_error(code, err, f"cannot read the store {url}/reviews/tfidf", "check the s3 credentials")
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_a_pipeline_on_a_memory_cache_runs_in_this_process(reviews, tmp_path, cli, one_line_error):
    (tmp_path / "p.yaml").write_text(PIPELINE.format(data=reviews))
    args = [str(tmp_path / "p.yaml"), "--cache-dir", "memory://aftpipe-pipeline/cache", "--runs-dir",
            str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    code, out, err = cli(["validate", *args[:-2]])
    assert code == 0 and "1 runs" in out, err
    code, _, err = cli(["run", *args, "--jobs", "2"])
    one_line_error(code, err, "memory://aftpipe-pipeline/cache lives in this process's memory", "--jobs 1")
    code, _, err = cli(["run", *args])
    assert code == 0, err
    assert (tmp_path / "results" / "p" / "results.csv").exists()
