"""Several processes, one job, launched the way torchrun and Slurm launch them: every rank is a real
`python -m aftpipe` process with WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set (and one run
through torchrun itself). CPU and gloo, one thread per process, a 200-row dataset and a 32-wide random BERT,
so the whole file stays small.

Extraction with 2 processes (HDF5) or 3 (zarr, through torchrun) is bit-identical to one process; a store left
half-written by 4 processes is finished by 2, then 1, bit-identical, with a rank killed in each; a rank that dies
takes the others down at once with one line; ranks launched with different arguments are refused on every rank.
Training with 2 processes (DDP) follows the one-process run and writes one run directory. (2 processes writing
one store on S3: tests/store/test_remote.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aftpipe.config import ExtractConfig
from aftpipe.extraction import extract
from aftpipe.store import open_features, verify_store

SHARD_ROWS, CHUNK_ROWS = 16, 16  # train 150 rows → 10 shards, test 50 → 4: 14 shards, no world size divides them

# A rank that SIGKILLs itself after writing its k-th shard (KILL_AFTER_SHARDS=k): a real crash, no cleanup.
KILLER = """
import os, signal, sys
from aftpipe.store.base import StoreWriter
limit, real, done = int(os.environ.get("KILL_AFTER_SHARDS", "0")), StoreWriter.write_shard, []
def write_shard(self, *a, **k):
    real(self, *a, **k)
    done.append(1)
    if len(done) == limit:
        os.kill(os.getpid(), signal.SIGKILL)
StoreWriter.write_shard = write_shard
sys.argv = ["aftpipe", *sys.argv[1:]]
from aftpipe.cli import main
main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ranks(args: list[str], world: int, rank_env: dict[int, dict[str, str]] | None = None,
          timeout: float = 300) -> list[tuple[int, str, str]]:
    """Run `aftpipe ARGS` as `world` processes of one job (a rank given KILL_AFTER_SHARDS dies on cue);
    returns (exit code, stdout, stderr) per rank."""
    port, procs = free_port(), []
    for r in range(world):
        env = {**os.environ, "WORLD_SIZE": str(world), "RANK": str(r), "LOCAL_RANK": str(r),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1", **(rank_env or {}).get(r, {})}
        procs.append(subprocess.Popen([sys.executable, "-c", KILLER, *args], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        o, e = p.communicate(timeout=timeout)
        out.append((p.returncode, o, e))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory, write_reviews) -> Path:
    """train.tsv (150 rows) and test.tsv (50 rows) with a word signal, of varied lengths."""
    return write_reviews(tmp_path_factory.mktemp("dist") / "data", {"train": 150, "test": 50}, seed=1,
                         words=lambda i: 1 + i % 6)


def extract_args(data: Path, cache: Path | str, model: Path, fmt: str = "zarr", *extra: str) -> list[str]:
    return ["extract", "--dataset", f"tsv:{data}", "--source", f"hf:{model}", "--cache-dir", str(cache), "--name", "data",
            "--format", fmt,
            "--shard-rows", str(SHARD_ROWS), "--chunk-rows", str(CHUNK_ROWS), "--batch-size", "8", "--workers", "0",
            "--quiet", *extra]


def error_line(err: str) -> str:
    """The one `error:` line of a failed command (log lines may precede it), with no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def store_of(cache: Path, model: Path, fmt: str) -> Path:
    return cache / "data" / (f"hf-{model.name}" + (".h5" if fmt == "hdf5" else ""))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data, tiny_hf_dir) -> dict[str, Path]:
    """The one-process stores everything is compared with."""
    import torch

    torch.set_num_threads(1)
    out = {}
    for fmt in ("zarr", "hdf5"):
        cache = tmp_path_factory.mktemp(f"ref-{fmt}")
        extract(ExtractConfig(dataset=f"tsv:{data}", sources=(f"hf:{tiny_hf_dir}",), cache_dir=str(cache), name="data", format=fmt,
                              shard_rows=SHARD_ROWS, chunk_rows=CHUNK_ROWS, batch_size=8, workers=0))
        out[fmt] = store_of(cache, tiny_hf_dir, fmt)
    return out


def same_store(a: Path, b: Path) -> None:
    """Every split's feature bytes, index and shard checksums equal, and for zarr every array file."""
    sa, sb = open_features(a), open_features(b)
    assert sorted(sa.splits) == sorted(sb.splits) == ["test", "train"]
    for name in sa.splits:
        xa, xb = sa.split(name, verify=True), sb.split(name, verify=True)
        assert xa._raw_rows(0, len(xa)).tobytes() == xb._raw_rows(0, len(xb)).tobytes(), name
        assert np.array_equal(xa.index, xb.index)
        assert [s.sha256 for s in sa.split_info(name).shards] == [s.sha256 for s in sb.split_info(name).shards]
    if a.is_dir():
        files = sorted(str(p.relative_to(a)) for p in a.rglob("c/*/*"))
        assert files == sorted(str(p.relative_to(b)) for p in b.rglob("c/*/*")) and files
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert verify_store(b).ok


def test_three_processes_through_torchrun_write_the_store_one_process_writes(data, tiny_hf_dir, reference, tmp_path):
    cache = tmp_path / "cache"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3",
                        "-m", "aftpipe", *extract_args(data, cache, tiny_hf_dir)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    same_store(reference["zarr"], store_of(cache, tiny_hf_dir, "zarr"))
    m = open_features(store_of(cache, tiny_hf_dir, "zarr")).manifest
    assert "× 3 processes" in m["device"] and m["state"] == "complete"
    # one report for the job, every shard counted once (14 shards: no world size here divides them)
    report = p.stdout + p.stderr
    assert report.count("shards written 10") == 1 and report.count("shards written 4") == 1
    assert not list(cache.rglob("*.journal")) and not list(cache.rglob("*.lock"))


def test_hdf5_with_two_processes_is_one_mappable_file_identical_to_one_process(data, tiny_hf_dir, reference,
                                                                               tmp_path):
    cache = tmp_path / "cache"
    out = ranks(extract_args(data, cache, tiny_hf_dir, "hdf5"), 2)
    assert [code for code, _, _ in out] == [0, 0], [e[-2000:] for _, _, e in out]
    assert "shards written 10" in out[0][1] + out[0][2] and "shards written" not in out[1][1] + out[1][2]
    store = store_of(cache, tiny_hf_dir, "hdf5")
    same_store(reference["hdf5"], store)
    assert sorted(p.name for p in store.parent.iterdir()) == [store.name]  # no partial, sidecar, journal or lock
    arr = open_features(store).split("train")
    assert len(arr._shards) == 1  # one contiguous dataset, memory-mapped whole


def test_a_store_half_written_by_4_processes_is_finished_by_2_then_1(data, tiny_hf_dir, reference, tmp_path):
    cache = tmp_path / "cache"
    store = store_of(cache, tiny_hf_dir, "zarr")
    args = extract_args(data, cache, tiny_hf_dir, "zarr", "--dist-timeout", "600")
    # 4 processes, each killed after its first shard: nobody writes the manifest's done-list but rank 0
    out = ranks(args, 4, {r: {"KILL_AFTER_SHARDS": "1"} for r in range(4)})
    assert [code for code, _, _ in out] == [-9] * 4
    done = sum(s.done for i in open_features(store).split_infos() for s in i.shards)
    journal = store.with_name(store.name + ".journal")
    assert done == 1 and len(list(journal.iterdir())) == 3  # rank 0's in the manifest, the others' journaled
    # 2 processes resume it (the journal adopted after its shards are re-hashed); rank 1 dies after 2 shards and
    # rank 0 stops as soon as it needs rank 1, on the closed connection, not after the 600 s timeout
    out = ranks(args, 2, {1: {"KILL_AFTER_SHARDS": "2"}})
    assert out[1][0] == -9 and out[0][0] == 2
    line = error_line(out[0][2])
    assert line.startswith("error: rank 0 of 2: lost the other ranks at") and "Connection closed" in line, line
    assert "re-run the same command" in line
    done = sum(s.done for i in open_features(store).split_infos() for s in i.shards)
    assert done == 4 + 5 + 2 and not journal.exists()  # 10 left: rank 0 did its 5, rank 1 two of its 5
    # one process finishes it: bit-identical to a one-process run
    code = subprocess.run([sys.executable, "-m", "aftpipe", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, check=False)
    assert code.returncode == 0, code.stderr[-2000:]
    same_store(reference["zarr"], store)


def test_ranks_launched_with_different_arguments_are_refused_on_every_rank(data, tiny_hf_dir, tmp_path):
    cache = tmp_path / "cache"
    args = extract_args(data, cache, tiny_hf_dir)
    port, procs = free_port(), []
    for r, dtype in enumerate(("float16", "float32")):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "aftpipe", *args, "--dtype", dtype], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2 and "launched with different arguments" in error_line(err)
    assert not store_of(cache, tiny_hf_dir, "zarr").exists()  # nothing written


def test_without_a_rendezvous_address_the_error_says_how_to_launch(data, tiny_hf_dir, tmp_path, cli, one_line_error,
                                                                   monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    code, _, err = cli(extract_args(data, tmp_path / "cache", tiny_hf_dir))
    one_line_error(code, err, "WORLD_SIZE=2 is set but MASTER_ADDR is not", "torchrun")


def test_memory_urls_are_refused_with_several_processes(data, tiny_hf_dir, cli, one_line_error, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, _, err = cli(extract_args(data, "memory://x", tiny_hf_dir))
    one_line_error(code, err, "lives in one process's memory", "--cache-dir")


# --- training: DistributedDataParallel ----------------------------------------------------------------------
def train_args(data: Path, store: Path, out: Path, method: str, *extra: str) -> list[str]:
    # 135 labeled rows, 16-row batches, 6 steps: every global batch is whole, so each rank gets 8 rows
    return ["train", "--dataset", f"tsv:{data}", "--features", str(store), "--out", str(out), "--method", method,
            "--student", "textcnn", "--vocab-size", "200", "--embed-dim", "16", "--width", "16", "--max-length", "16",
            "--dropout", "0", "--batch-size", "16", "--steps", "6", "--eval-every", "3", "--lr", "3e-3", "--threads",
            "1", "--quiet", *extra]


def student_weights(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "student.safetensors"))


def test_two_processes_train_what_one_process_trains_at_the_same_global_batch(data, reference, tmp_path, cli):
    # without transfer the loss is a mean over the batch, so the average of two ranks' gradients over 8 rows
    # each is the gradient over the 16: the run follows the one-process run up to float rounding
    code, _, err = cli(train_args(data, reference["zarr"], tmp_path / "one", "none"))
    assert code == 0, err
    out = ranks(train_args(data, reference["zarr"], tmp_path / "two", "none"), 2)
    assert [c for c, _, _ in out] == [0, 0], [e[-2000:] for _, _, e in out]
    one, two = student_weights(tmp_path / "one"), student_weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-5, err_msg=k)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["steps"] == m1["steps"] == 6 and m2["test"] == m1["test"]


def test_aft_with_two_processes_writes_one_run_directory_from_rank_0(data, reference, tmp_path):
    out = ranks(train_args(data, reference["zarr"], tmp_path / "run", "aft"), 2)
    assert [c for c, _, _ in out] == [0, 0], [e[-2000:] for _, _, e in out]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no second directory, no .partial left
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == 6 and [h["step"] for h in m["history"]] == [3, 6]
    assert 0 < m["method"]["sigma_mean"] < 1 and m["method"]["sigma_mean"] != 0.5  # σ(s) was trained
    printed = [json.loads(o) for _, o, _ in out if o.strip()]
    assert len(printed) == 1 and printed[0]["test"] == m["test"]  # rank 0 alone reports the run


def test_aft_with_two_processes_computes_the_kernel_of_the_whole_batch(data, reference, tmp_path, cli):
    # AFT's kernel spans the batch: the ranks gather every row's h and φ, gradients flowing back to each rank's own
    # rows, so 2 processes follow 1 up to float rounding, σ(s) included. A 15-row batch (ranks of 8 and 7 rows),
    # and unlabeled rows in it, as --unlabeled adds them after the labeled ones.
    def args(out: Path) -> list[str]:
        a = train_args(data, reference["zarr"], out, "aft", "--labels", "100", "--unlabeled", "--beta", "3")
        a[a.index("--batch-size") + 1] = "15"
        return a

    code, _, err = cli(args(tmp_path / "one"))
    assert code == 0, err
    out = ranks(args(tmp_path / "two"), 2)
    assert [c for c, _, _ in out] == [0, 0], [e[-2000:] for _, _, e in out]
    one, two = student_weights(tmp_path / "one"), student_weights(tmp_path / "two")
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-5, err_msg=k)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["rows"]["unlabeled_used"] and m2["steps"] == m1["steps"] == 6
    assert m2["method"]["sigma_mean"] == pytest.approx(m1["method"]["sigma_mean"], abs=1e-6) != 0.5
    assert m2["test"] == m1["test"]


def test_the_probe_with_two_processes_is_fitted_by_rank_0_as_by_one_process(data, reference, tmp_path, cli):
    code, _, err = cli(train_args(data, reference["zarr"], tmp_path / "one", "linear_probe"))
    assert code == 0, err
    out = ranks(train_args(data, reference["zarr"], tmp_path / "two", "linear_probe"), 2)
    assert [c for c, _, _ in out] == [0, 0], [e[-2000:] for _, _, e in out]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["test"] == m1["test"] and m2["method"]["c"] == m1["method"]["c"] and "steps" not in m2
    printed = [json.loads(o) for _, o, _ in out if o.strip()]
    assert len(printed) == 1 and printed[0]["test"] == m2["test"]  # rank 0 alone reports the run
