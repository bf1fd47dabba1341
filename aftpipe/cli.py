"""The `aftpipe` command line: a thin typer layer; every command builds a config and calls one API function.

Every option's default is read from its config dataclass (`= TrainConfig.epochs`), never written twice.
User errors (`AftpipeError`) print one line and exit 2; a config error names the flag to change. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Optional

import typer

from aftpipe.config import (ConfigError, DatasetOptions, ExtractConfig, MethodConfig, SourceOptions, StudentConfig,
                            TrainConfig)
from aftpipe.errors import AftpipeError

app = typer.Typer(
    help="aftpipe: cache foundation-model features once, train small models against them (Adaptive Feature Transfer).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


E, SO, DO = ExtractConfig, SourceOptions, DatasetOptions
T, M, S = TrainConfig, MethodConfig, StudentConfig


@app.command()
def extract(
    dataset: Annotated[str, typer.Option(help="dataset name (`aftpipe datasets`), e.g. sst2, or tsv:PATH / csv:PATH / jsonl:PATH / imagefolder:PATH")],
    source: Annotated[list[str], typer.Option(help="feature source (`aftpipe sources`); repeat for several: --source minilm --source tfidf")] = E.sources,
    splits: Annotated[Optional[str], typer.Option(help="comma-separated splits, e.g. train,dev (default: all)")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="folder with the dataset files (default: $AFTPIPE_DATA_DIR, else ../shared/data)")] = E.data_dir,
    cache_dir: Annotated[str, typer.Option(help="stores land at <cache-dir>/<dataset>/<source> (.h5 for hdf5)")] = E.cache_dir,
    format: Annotated[str, typer.Option(help="store format: zarr (v3, sharded) or hdf5")] = E.format,
    dtype: Annotated[str, typer.Option(help="stored dtype: float16, bfloat16 or float32")] = E.dtype,
    batch_size: Annotated[int, typer.Option(help="examples per forward pass")] = E.batch_size,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = E.device,
    workers: Annotated[Optional[int], typer.Option(help="DataLoader workers for tokenising/decoding (default: 1 on CPU, 4 on GPU)")] = E.workers,
    pooling: Annotated[str, typer.Option(help="text pooling over tokens: mean, cls or last")] = SO.pooling,
    layer: Annotated[int, typer.Option(help="hidden layer to pool: -1 the last, 0 the embeddings")] = SO.layer,
    max_length: Annotated[int, typer.Option(help="max tokens per text (longer ones are truncated)")] = SO.max_length,
    tfidf_dim: Annotated[int, typer.Option(help="components of the tfidf source")] = SO.tfidf_dim,
    image_size: Annotated[Optional[int], typer.Option(help="resize images to this size (default: the timm model's own)")] = SO.image_size,
    text_col: Annotated[Optional[str], typer.Option(help="text column of tsv/csv/jsonl files (default: text, sentence or content)")] = DO.text_col,
    label_col: Annotated[Optional[str], typer.Option(help="label column of tsv/csv/jsonl files (default: label)")] = DO.label_col,
    views: Annotated[int, typer.Option(help="text: cache K views per train example (K − 1 augmented, unlabeled copies)")] = DO.views,
    shard_rows: Annotated[Optional[int], typer.Option(help="rows per shard, the unit of writing and resuming (default: ~16 MiB)")] = E.shard_rows,
    chunk_rows: Annotated[int, typer.Option(help="rows per zarr chunk, the unit of reading")] = E.chunk_rows,
    limit: Annotated[Optional[int], typer.Option(help="extract only the first N rows of each split")] = E.limit,
    overwrite: Annotated[bool, typer.Option(help="rebuild a store that was built with other arguments")] = E.overwrite,
    quiet: Annotated[bool, typer.Option(help="no progress bars, only log lines")] = False,
) -> None:
    """Run feature sources over a dataset once and write per-example features to stores under --cache-dir.

    Re-running the same command resumes: finished shards are skipped and the result is bit-identical.
    """
    from aftpipe.api import extract as run_extract
    from aftpipe.progress import RichProgress

    cfg = ExtractConfig(
        dataset=dataset, sources=source, splits=_csv(splits), data_dir=data_dir, cache_dir=cache_dir, format=format,
        dtype=dtype, batch_size=batch_size, device=device, workers=workers, chunk_rows=chunk_rows,
        shard_rows=shard_rows, limit=limit, overwrite=overwrite,
        source_options=SourceOptions(pooling=pooling, layer=layer, max_length=max_length, tfidf_dim=tfidf_dim,
                                     image_size=image_size),
        dataset_options=DatasetOptions(text_col=text_col, label_col=label_col, views=views),
    )
    progress = RichProgress(quiet=quiet)
    for r in run_extract(cfg, progress):
        rate = f"{r.rows_computed / max(r.wall_s, 1e-9):,.0f} ex/s" if r.rows_computed else "cached"
        progress.log(f"{r.path}  {r.split}: ({r.rows}, {r.dim})  shards written {r.shards_done}, "
                     f"skipped {r.shards_skipped}  {r.wall_s:.1f}s  {rate}")


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="dataset name or tsv:/csv:/jsonl:/imagefolder: path (as for extract)")],
    out: Annotated[str, typer.Option(help="run directory: config.yaml, metrics.json, student.safetensors")],
    features: Annotated[list[str], typer.Option(help="feature store(s) from `aftpipe extract`; repeat for multi-source")] = T.features,
    student: Annotated[str, typer.Option(help="student model (`aftpipe students`)")] = T.student,
    method: Annotated[str, typer.Option(help="transfer method (`aftpipe methods`)")] = T.method,
    beta: Annotated[float, typer.Option(help="regulariser weight β (AFT: ≤ 1 works best here; tune 0.01–1)")] = M.beta,
    state_lr: Annotated[float, typer.Option(help="learning rate of the method's own state (AFT's s, KD's W)")] = M.state_lr,
    tau: Annotated[float, typer.Option(help="softmax temperature for kd_logit / tokt")] = M.tau,
    teacher_hidden: Annotated[int, typer.Option(help="kd_logit/tokt teacher head: 0 linear, >0 MLP width")] = M.teacher_hidden,
    distill_fraction: Annotated[float, typer.Option(help="tokt: fraction of steps distilling before fine-tuning")] = M.distill_fraction,
    rkd_angle_rows: Annotated[int, typer.Option(help="rkd: rows of the batch its O(B³) angle term uses")] = M.rkd_angle_rows,
    epochs: Annotated[int, typer.Option(help="passes over the labeled training rows")] = T.epochs,
    steps: Annotated[Optional[int], typer.Option(help="optimizer steps (overrides --epochs)")] = T.steps,
    batch_size: Annotated[int, typer.Option(help="labeled rows per step (AFT's kernel is a per-batch statistic)")] = T.batch_size,
    lr: Annotated[float, typer.Option(help="student learning rate (AdamW, warm-up then cosine)")] = T.lr,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay of the student")] = T.weight_decay,
    warmup: Annotated[float, typer.Option(help="fraction of steps of linear warm-up")] = T.warmup,
    holdout: Annotated[float, typer.Option(help="fraction of labeled rows held out for early stopping / β tuning")] = T.holdout,
    labels: Annotated[Optional[int], typer.Option(help="label budget: use this many labeled rows, the rest as unlabeled")] = T.labels,
    unlabeled: Annotated[bool, typer.Option(help="semi-supervised: add a batch of unlabeled rows per step (regulariser only)")] = T.unlabeled,
    phi_norm: Annotated[str, typer.Option(help="none or standardize (z-score each cached feature)")] = T.phi_norm,
    eval_every: Annotated[Optional[int], typer.Option(help="steps between hold-out evaluations (default ~10 per run)")] = T.eval_every,
    patience: Annotated[Optional[int], typer.Option(help="early stop after this many evaluations without gain")] = T.patience,
    seed: Annotated[int, typer.Option(help="training seed (init, batch order, dropout)")] = T.seed,
    data_seed: Annotated[int, typer.Option(help="seed of the labeled/hold-out row split (same for every --seed)")] = T.data_seed,
    train_split: Annotated[str, typer.Option(help="split to train on (labeled rows; the hold-out comes from it)")] = T.train_split,
    test_split: Annotated[Optional[str], typer.Option(help="split to report (default: dev for sst2/cola, else test)")] = T.test_split,
    num_classes: Annotated[Optional[int], typer.Option(help="number of classes (default: the dataset's)")] = T.num_classes,
    max_length: Annotated[int, typer.Option(help="text student: tokens per example")] = S.max_length,
    vocab_size: Annotated[int, typer.Option(help="text student: kept WordPiece tokens (sets most of its size)")] = S.vocab_size,
    embed_dim: Annotated[Optional[int], typer.Option(help="student embedding width (default: the student's own)")] = S.embed_dim,
    width: Annotated[Optional[int], typer.Option(help="student width: filters/hidden units (default: its own)")] = S.width,
    dropout: Annotated[float, typer.Option(help="student dropout")] = S.dropout,
    image_size: Annotated[Optional[int], typer.Option(help="image student input size")] = S.image_size,
    pretrained: Annotated[Optional[str], typer.Option(help="timm student: local weights file or directory")] = S.pretrained,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = T.device,
    in_memory: Annotated[bool, typer.Option(help="load the features into RAM instead of memory-mapping them")] = T.in_memory,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads")] = T.threads,
    data_dir: Annotated[Optional[str], typer.Option(help="folder with the dataset files")] = T.data_dir,
    text_col: Annotated[Optional[str], typer.Option(help="text column of tsv/csv/jsonl files")] = DO.text_col,
    label_col: Annotated[Optional[str], typer.Option(help="label column of tsv/csv/jsonl files")] = DO.label_col,
    views: Annotated[int, typer.Option(help="train on the K-view store of `extract --views K` (copies are unlabeled)")] = DO.views,
    overwrite: Annotated[bool, typer.Option(help="replace a finished run in --out")] = T.overwrite,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run from its last checkpoint")] = T.resume,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train a small student against cached features with AFT or a baseline; writes metrics.json to --out."""
    from aftpipe.api import train as run_train
    from aftpipe.progress import RichProgress

    cfg = TrainConfig(
        dataset=dataset, out=out, features=features, student=student, method=method, epochs=epochs, steps=steps,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup, holdout=holdout, labels=labels,
        unlabeled=unlabeled, phi_norm=phi_norm, eval_every=eval_every, patience=patience, seed=seed,
        data_seed=data_seed, train_split=train_split, test_split=test_split, num_classes=num_classes, device=device,
        in_memory=in_memory, threads=threads, data_dir=data_dir, overwrite=overwrite, resume=resume,
        method_options=MethodConfig(beta=beta, state_lr=state_lr, tau=tau, teacher_hidden=teacher_hidden,
                                    distill_fraction=distill_fraction, rkd_angle_rows=rkd_angle_rows),
        student_options=StudentConfig(max_length=max_length, vocab_size=vocab_size, embed_dim=embed_dim, width=width,
                                      dropout=dropout, image_size=image_size, pretrained=pretrained),
        dataset_options=DatasetOptions(text_col=text_col, label_col=label_col, views=views),
    )
    m = run_train(cfg, RichProgress(quiet=quiet, unit="step"))
    typer.echo(json.dumps({"test": m["test"], "holdout": m["holdout"], "params": m["params"],
                           "ms_per_step": round(m["ms_per_step"], 2) if m["ms_per_step"] == m["ms_per_step"] else None,
                           "wall_s": round(m["wall_s"], 1)}))


@app.command()
def evaluate(run: Annotated[str, typer.Argument(help="a finished run directory")]) -> None:
    """Reload a run's checkpoint and score it on its test split again (should match metrics.json)."""
    from aftpipe.api import check_run

    typer.echo(json.dumps(check_run(run)))


@app.command("run")
def run_(
    pipeline: Annotated[str, typer.Argument(help="a pipeline YAML, e.g. pipelines/demo.yaml")],
    cache_dir: Annotated[str, typer.Option(help="where feature stores are found or extracted")] = "cache",
    results_dir: Annotated[str, typer.Option(help="results land in <results-dir>/<pipeline>/")] = "results",
    runs_dir: Annotated[str, typer.Option(help="run directories land in <runs-dir>/<pipeline>/")] = "runs",
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Run a pipeline: extract missing stores, tune β/lr on the hold-out, train every seed, write results.

    Finished runs are skipped, so an interrupted sweep resumes and a finished one changes nothing."""
    from aftpipe.api import run_pipeline
    from aftpipe.progress import RichProgress

    out = run_pipeline(pipeline, cache_dir=cache_dir, results_dir=results_dir, runs_dir=runs_dir,
                       progress=RichProgress(quiet=quiet, unit="it"))
    typer.echo((out / "results.md").read_text())
    typer.echo(f"results: {out}/results.csv, {out}/results.md, {out}/plot.png")


@app.command("validate")
def validate_(
    pipeline: Annotated[str, typer.Argument(help="a pipeline YAML")],
    cache_dir: Annotated[str, typer.Option(help="where feature stores are looked for")] = "cache",
    runs_dir: Annotated[str, typer.Option(help="where finished runs are looked for")] = "runs",
) -> None:
    """Check a pipeline (keys, types, names, grids) and say what it would compute, without computing it."""
    from aftpipe.api import validate

    typer.echo(validate(pipeline, cache_dir=cache_dir, runs_dir=runs_dir))


def _list(registry: Any, width: int = 14) -> None:
    for name, doc in registry.describe():
        typer.echo(f"{name:{width}s} {doc}")


@app.command()
def methods() -> None:
    """List the transfer methods (AFT and the baselines it must beat)."""
    from aftpipe.methods import METHODS

    _list(METHODS)


@app.command()
def students() -> None:
    """List the student models (`name:` entries take a config, timm name or path)."""
    from aftpipe.students import STUDENTS

    _list(STUDENTS)


@app.command()
def datasets() -> None:
    """List the datasets aftpipe knows (`name:` entries take a path)."""
    from aftpipe.data import DATASETS, default_data_dir

    _list(DATASETS)
    typer.echo(f"\ndata dir: {default_data_dir() or '(none found: pass --data-dir or set AFTPIPE_DATA_DIR)'}")


@app.command()
def sources() -> None:
    """List the feature sources (`name:` entries take a hub id, a name or a local path)."""
    from aftpipe.sources import SOURCES

    _list(SOURCES, 10)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


@app.command()
def inspect(
    store: Annotated[str, typer.Argument(help="a store: cache/<dataset>/<source> or its .h5 file")],
    json_out: Annotated[bool, typer.Option("--json", help="print the whole manifest as JSON")] = False,
) -> None:
    """Print a store's manifest summary: source, dataset, splits with shapes and dtype, bytes on disk."""
    from rich.console import Console
    from rich.table import Table

    from aftpipe.api import open_features

    st = open_features(store)
    if json_out:
        print(json.dumps(st.manifest, indent=1, sort_keys=True))
        return
    con = Console()
    src, ds, built = st.source, st.dataset, st.built
    con.print(f"[bold]{st.path}[/]  ({st.storage['format']}, {st.storage['dtype']}, {_human(st.nbytes_on_disk())} on "
              f"disk, state: {st.state})")
    con.print(f"source:  {src.get('library')} {src.get('model_id')}  pooling={src.get('pooling')} "
              f"layer={src.get('layer', '-')} dim={src.get('dim')} params={st.foundation_params:,} "
              f"forward={src.get('forward_dtype')}")
    if src.get("path"):
        con.print(f"         path {src['path']}")
    for name, sha in (src.get("weights_sha256") or {}).items():
        con.print(f"         {name} sha256 {sha[:16]}…")
    con.print(f"dataset: {ds['name']} ({ds['modality']}, {ds['num_classes']} classes, metric {ds['metric']})"
              + (f"  {json.dumps(ds['info'])}" if ds.get("info") else ""))
    con.print(f"built:   {built['created']} on {built['device']}; packages "
              + ", ".join(f"{k} {v}" for k, v in (built["packages"] or {}).items()))
    t = Table("split", "rows", "dim", "shards (done/all)", "fingerprint", "extract time", "ex/s")
    for i in st.split_infos():
        t.add_row(i.name, f"{i.n:,}", str(i.d), f"{i.shards_done}/{len(i.shards)}", i.fingerprint[:16],
                  f"{i.wall_s:.1f}s", f"{i.examples_per_s or '-'}")
    con.print(t)


@app.command()
def verify(store: Annotated[str, typer.Argument(help="a store: cache/<dataset>/<source> or its .h5 file")]) -> None:
    """Re-hash every shard of every split against the manifest's checksums; exit 1 on any mismatch."""
    from aftpipe.api import verify_store

    report = verify_store(store)
    for name, (done, total) in report.unfinished.items():
        typer.echo(f"{name}: unfinished ({done}/{total} shards)")
    if not report.ok:
        for name, shards in report.bad.items():
            if shards:
                typer.echo(f"{name}: shards {shards} do not match their checksums", err=True)
        typer.echo(f"error: {report.path} is corrupt; re-extract it with --overwrite", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {report.path}: {report.shards_checked} shards in {len(report.bad)} splits match their checksums")


FLAGS = {"sources": "--source", "out": "--out"}  # config fields whose flag is not simply --field-name


def _flag(path: tuple) -> str:
    """The CLI flag of a config field path: ("method_options", "beta") → --beta, ("sources", 1) → --source."""
    name = next((p for p in reversed(path) if isinstance(p, str)), "")
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we parallelise with DataLoader workers instead
    try:
        app()
    except ConfigError as e:
        sep = " " if e.message.startswith(("must", "expected", "is ")) else ": "
        typer.echo(f"error: {_flag(e.path)}{sep}{e.message}", err=True)
        sys.exit(2)
    except AftpipeError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
