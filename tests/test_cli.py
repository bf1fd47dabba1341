"""The CLI as a user meets it: one-line errors with exit code 2, no tracebacks, nothing damaged."""

import os
import signal
import subprocess
import sys
import json
from pathlib import Path

import numpy as np
import pytest




@pytest.mark.parametrize("args,needles", [
    (["--dataset", "nope"], ["no dataset `nope`", "sst2"]),
    (["--dataset", "sst2", "--source", "nope"], ["no source `nope`", "minilm"]),
    (["--dataset", "sst2", "--splits", "validation"], ["no split `validation`", "train, dev"]),
    (["--dataset", "sst2", "--source", "hf:/no/such/model"], ["/no/such/model does not exist"]),
    (["--dataset", "sst2", "--data-dir", "/tmp"], ["sst2", "--data-dir"]),
    (["--dataset", "sst2", "--format", "parquet"], ["--format expected one of zarr, hdf5, got 'parquet'"]),
    (["--dataset", "sst2", "--workers", "-1"], ["--workers must be ≥ 0, got -1"]),
    (["--dataset", "sst2", "--shard-rows", "0"], ["--shard-rows must be ≥ 1, got 0"]),
    (["--dataset", "sst2", "--max-length", "-3"], ["--max-length must be ≥ 1, got -3"]),
    (["--dataset", "sst2", "--tfidf-dim", "0"], ["--tfidf-dim must be ≥ 1, got 0"]),
    (["--dataset", "sst2", "--pooling", "max"], ["--pooling expected one of mean, cls, last, got 'max'"]),
    (["--dataset", "digits", "--source", "minilm"], ["reads text", "image"]),
    (["--dataset", "sst2", "--prompt", "Review:"], ["--prompt: has no {text}"]),
])
def test_extract_bad_input(args, needles, tmp_path, cli, one_line_error):
    code, _, err = cli(["extract", "--cache-dir", str(tmp_path), *args])
    one_line_error(code, err, *needles)


def test_malformed_tsv_row(tmp_path, cli, one_line_error):
    p = tmp_path / "bad.tsv"
    p.write_text("text\tlabel\nfine\t1\nbroken\t0\textra\n")
    code, _, err = cli(["extract", "--dataset", f"tsv:{p}", "--cache-dir", str(tmp_path)])
    one_line_error(code, err, "bad.tsv", "line 3")


def test_existing_store_with_other_arguments_is_refused(tiny_hf_dir, reviews_tsv, tmp_path, cli, one_line_error):
    base = ["extract", "--dataset", f"tsv:{reviews_tsv}", "--source", f"hf:{tiny_hf_dir}", "--cache-dir",
            str(tmp_path), "--name", "reviews", "--quiet", "--workers", "0"]
    assert cli(base)[0] == 0
    store = tmp_path / "reviews" / f"hf-{tiny_hf_dir.name}"
    before = (store / "zarr.json").read_text()
    code, _, err = cli([*base, "--max-length", "16"])
    one_line_error(code, err, "different arguments", "max_length", "--overwrite")
    assert (store / "zarr.json").read_text() == before
    code, out, err = cli(["verify", str(store)])
    assert code == 0 and "ok:" in out


def test_unwritable_cache_dir(tmp_path, reviews_tsv, tiny_hf_dir, cli, one_line_error):
    blocker = tmp_path / "f"
    blocker.write_text("")
    code, _, err = cli(["extract", "--dataset", f"tsv:{reviews_tsv}", "--source", f"hf:{tiny_hf_dir}",
                        "--cache-dir", str(blocker / "c")])
    one_line_error(code, err, "--cache-dir")


def test_inspect_and_verify_report_and_catch_corruption(tiny_hf_dir, reviews_tsv, tmp_path, cli, one_line_error):
    args = ["extract", "--dataset", f"tsv:{reviews_tsv}", "--source", f"hf:{tiny_hf_dir}", "--cache-dir",
            str(tmp_path), "--format", "hdf5", "--quiet", "--workers", "0", "--shard-rows", "128", "--chunk-rows", "64",
            "--test-fraction", "0", "--name", "reviews"]
    assert cli(args)[0] == 0
    store = tmp_path / "reviews" / f"hf-{tiny_hf_dir.name}.h5"
    code, out, _ = cli(["inspect", str(store)])
    assert code == 0 and "train" in out and "300" in out and "hdf5" in out
    code, out, _ = cli(["inspect", "--json", str(store)])
    assert json.loads(out)["splits"]["train"]["d"] == 32
    import h5py

    with h5py.File(store, "r") as f:
        off = f["train/features"].id.get_offset()
    data = bytearray(store.read_bytes())
    data[off + 3] ^= 0x40
    store.write_bytes(bytes(data))
    code, _, err = cli(["verify", str(store)])
    assert code == 1 and "train: shard 0 fails its checksum" in err and "--repair" in err.splitlines()[-1]
    code, out, _ = cli(["verify", "--repair", "--quiet", str(store)])
    assert code == 0 and "train: recomputed shards [0]" in out and "ok:" in out
    code, _, err = cli(["inspect", str(tmp_path / "missing")])
    one_line_error(code, err, "no feature store")


def test_lists(cli):
    code, out, _ = cli(["datasets"])
    assert code == 0 and "sst2" in out and "imagefolder:" in out
    code, out, _ = cli(["sources"])
    assert code == 0 and "minilm" in out and "timm:" in out
    lines = out.splitlines()
    assert lines[lines.index(next(ln for ln in lines if ln.startswith("tfidf"))) + 1].split() == ["options:",
                                                                                                 "--tfidf-dim"]
    # each entry's options, as the flags that set them, under its line
    code, out, _ = cli(["methods"])
    lines = out.splitlines()
    following = {ln.split()[0]: lines[i + 1].split() for i, ln in enumerate(lines) if not ln.startswith(" ")}
    assert following["tokt"] == ["options:", "--beta", "--tau", "--teacher-hidden", "--distill-fraction"]
    assert following["none"] == following["linear_probe"] == ["options:", "none"]
    code, out, _ = cli(["students"])
    lines = out.splitlines()
    following = {ln.split()[0]: lines[i + 1].split() for i, ln in enumerate(lines) if not ln.startswith(" ")}
    assert following["hf:"] == ["options:", "--max-length", "--student-layers", "--prune-vocab"]


def _done_shards(store: Path) -> int:
    try:
        m = json.loads((store / "zarr.json").read_text())["attributes"]["aftpipe"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(s["done"] for e in m["splits"].values() for s in e["shards"])


def test_sigkill_mid_run_then_resume_is_bit_identical(tiny_hf_dir, data_dir, tmp_path, wait_for):
    """A real SIGKILL of a real process; the re-run skips finished shards and matches a clean run."""
    def cmd(cache):
        return [sys.executable, "-m", "aftpipe.cli", "extract", "--dataset", "sst2", "--splits", "train",
                "--limit", "3000", "--source", f"hf:{tiny_hf_dir}", "--cache-dir", str(cache), "--data-dir",
                str(data_dir), "--shard-rows", "200", "--chunk-rows", "50", "--batch-size", "8", "--workers", "0",
                "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    store = tmp_path / "a" / "sst2" / f"hf-{tiny_hf_dir.name}"
    proc = subprocess.Popen(cmd(tmp_path / "a"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: _done_shards(store) >= 2, proc, "two shards were done")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _done_shards(store)
    assert 2 <= killed_at < 15, f"the kill landed after {killed_at} of 15 shards"
    again = subprocess.run(cmd(tmp_path / "a"), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"{killed_at} of 15 shards already done (skipped)" in again.stderr
    clean = subprocess.run(cmd(tmp_path / "b"), env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    from aftpipe.store import open_features

    a = open_features(store).split("train", verify=True)
    b = open_features(tmp_path / "b" / "sst2" / f"hf-{tiny_hf_dir.name}").split("train")
    assert np.array_equal(a[np.arange(3000)], b[np.arange(3000)])


def test_version_and_short_help(cli):
    from aftpipe import __version__

    code, out, _ = cli(["--version"])
    assert code == 0 and out.strip() == f"aftpipe {__version__}"
    code, out, _ = cli(["-h"])
    assert code == 0 and "Commands" in out and "extract" in out and "--version" in out
    code, out, _ = cli(["train", "-h"])
    assert code == 0 and "--output-dir" in out


def test_train_and_extract_help_show_examples_and_the_common_options_and_help_all_the_rest(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, short, _ = cli(["train", "-h"])
    assert code == 0
    examples = [ln.strip() for ln in short.splitlines() if ln.strip().startswith("aftpipe train --")]
    assert len(examples) == 2 and all(len(e) <= 78 for e in examples)  # one line each at 80 columns
    assert short.index("Examples") < short.index("--dataset")  # examples first
    for common in ("--dataset", "--features", "--out", "--student", "--method", "--beta", "--epochs", "--lr"):
        assert f" {common} " in short or f" {common}," in short, common
    for rare in ("--phi-norm", "--warmup", "--dist-timeout", "--vocab-size", "--select"):
        assert rare not in short
    hidden = int(short.split(" more options: aftpipe train --help-all")[0].split()[-1])
    code, full, _ = cli(["train", "--help-all"])
    assert code == 0 and "--phi-norm" in full and "--dist-timeout" in full and "more options" not in full
    flags = {w.rstrip(",") for w in full.split() if w.startswith("--")}
    assert hidden > 30 and len(full.splitlines()) > 2 * len(short.splitlines()) and len(short.splitlines()) < 80
    assert sum(f" {f} " in short or f" {f}," in short for f in flags) + hidden >= len(flags) - 3  # aliases aside
    code, ex, _ = cli(["extract", "-h"])
    assert code == 0 and "aftpipe extract --dataset sst2 --source minilm" in ex and "--chunk-rows" not in ex
    assert "--chunk-rows" in cli(["extract", "--help-all"])[1]


def test_short_help_always_shows_the_required_options(cli, monkeypatch):
    """distill's --dataset and --out are not marked common, but without them nothing runs: -h must list them."""
    monkeypatch.setenv("COLUMNS", "120")
    code, short, _ = cli(["distill", "-h"])
    assert code == 0 and "aftpipe distill --dataset sst2" in short
    for flag in ("--dataset", "--out", "--labels", "--teacher"):
        assert f" {flag} " in short, flag
    assert "--teacher-lr" not in short and "--teacher-lr" in cli(["distill", "--help-all"])[1]


def test_train_help_groups_options_in_panels_with_clean_types(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = cli(["train", "--help-all"])
    assert code == 0
    panels = [line.split("─ ")[1].split(" ─")[0] for line in out.splitlines() if line.startswith("╭─ ")]
    assert panels == ["Data", "Model", "Method", "Optimisation", "Output", "System"]
    for bad in ("<str>", "<int>", "<bool>", "<float>", "list[", "<list"):
        assert bad not in out
    def panel_of(flag):
        current = None
        for line in out.splitlines():
            if line.startswith("╭─ "):
                current = line.split("─ ")[1].split(" ─")[0]
            elif line.startswith("│") and (f" {flag} " in line or f" {flag}," in line):
                return current
    assert [panel_of(f) for f in ("--dataset", "--student", "--beta", "--lr", "--out", "--device", "--help")] == \
        ["Data", "Model", "Method", "Optimisation", "Output", "System", "System"]
    assert "--phi-norm" in out and "none|standardize" in out and "--amp" in out and "--no-amp" in out


def test_familiar_spellings_are_aliases(tiny_hf_dir, reviews_tsv, tmp_path, cli):
    base = ["train", "--dataset", f"tsv:{reviews_tsv}", "--test-split", "train", "--method", "none", "--student",
            "bow-mlp", "--vocab-size", "100", "--quiet"]
    code, _, err = cli([*base, "--output-dir", str(tmp_path / "a"), "--max-steps", "3", "--learning-rate", "0.01",
                        "--warmup-ratio", "0.2", "--eval-steps", "3", "--max-grad-norm", "0.5", "-q"])
    assert code == 0, err
    import yaml

    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert (saved["out"], saved["steps"], saved["lr"], saved["warmup"], saved["eval_every"], saved["grad_clip"]) == \
        (str(tmp_path / "a"), 3, 0.01, 0.2, 3, 0.5)


def test_errors_name_the_option_as_the_caller_spells_it(reviews_tsv, tmp_path, cli, one_line_error):
    from aftpipe.config import TrainConfig
    from aftpipe.errors import AftpipeError
    from aftpipe.training import train

    args = ["train", "--dataset", f"tsv:{reviews_tsv}", "--test-split", "train", "--method", "none", "--student",
            "bow-mlp", "--steps", "2", "--vocab-size", "100", "--quiet", "--out", str(tmp_path / "r")]
    assert cli(args)[0] == 0
    code, _, err = cli(args)
    one_line_error(code, err, "already holds a finished run; pass --overwrite to replace it or choose another --out DIR")
    cfg = TrainConfig(dataset=f"tsv:{reviews_tsv}", test_split="train", method="none", student="bow-mlp", steps=2,
                      out=str(tmp_path / "r"))
    with pytest.raises(AftpipeError, match=r"pass overwrite=True to replace it or choose another out=DIR$"):
        train(cfg)
    code, _, err = cli(["train", "--dataset", f"tsv:{reviews_tsv}", "--test-split", "train", "--labels", "100000",
                        "--method", "none", "--out", str(tmp_path / "q"), "--quiet"])
    one_line_error(code, err, "--labels 100000 is more than the 240 labeled training rows")  # 60 held out to test


def test_command_line_is_the_cli_call_that_rebuilds_a_config(cli, monkeypatch):
    import shlex

    import aftpipe.api
    from aftpipe.config import DatasetOptions, MethodConfig, StudentConfig, TrainConfig, command_line
    from aftpipe.rundir import RunResult

    cfg = TrainConfig(dataset="sst2", out="runs/a b", features=("s/one", "s/two"), method="kd_logit", lr=3e-3,
                      method_options=MethodConfig(beta=0.25, tau=2.0), amp=False, unlabeled=True,
                      student_options=StudentConfig(vocab_size=300, dropout=0.0), test_split="dev",
                      dataset_options=DatasetOptions(text_col="body"), resume=True)
    got = []
    monkeypatch.setattr(aftpipe.api, "train", lambda c, progress: got.append(c) or RunResult(
        metric="accuracy", test={"accuracy": 1.0}, holdout={}, test_split="dev", wall_s=0.0))
    line = command_line(cfg, "train")
    assert "--resume" not in line and "--no-amp" in line and "'runs/a b'" in line
    code, _, err = cli(shlex.split(line)[1:])
    assert code == 0, err
    assert got == [TrainConfig(**{**cfg.__dict__, "resume": False})]
