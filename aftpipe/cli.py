"""The `aftpipe` command line: a thin typer layer; every command builds a config and calls one API function.

`extract` and `train` take their options from the config dataclasses themselves: every field with a help line is
an option with the field's default, type, `--help` panel and aliases, so nothing is written twice.
User errors (`AftpipeError`) print one line and exit 2, naming options by their flags (`speaking_to_cli`); a
config error names the flag to change. Ctrl-C tears the progress display down, says on one line what was kept,
and exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

import typer
from typer.core import TyperCommand, TyperGroup

from aftpipe.config import (DATA, METHOD, MODEL, OPTIMISATION, OUTPUT, SYSTEM, Config, ConfigError, DistillConfig,
                            ExtractConfig, TrainConfig, flag_of)
from aftpipe.errors import AftpipeError, speaking_to_cli

PANELS = (DATA, MODEL, METHOD, OPTIMISATION, OUTPUT, SYSTEM)
HELP_ALL = "aftpipe.help_all"  # set in the context while --help-all prints every option


class _CleanHelp:
    """`--help` is listed without a type (typer would print `<bool>` beside it), and in the last panel of a
    command whose options are grouped in panels (not alone in an `Options` panel above them). Arguments are
    named by their metavar alone (`STORE`, not `STORE <str>`)."""

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if p.param_type_name == "argument":
                p.display_type_rich = lambda ctx: None
            if ctx.meta.get(HELP_ALL):
                p.hidden = False
        return params

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)  # type: ignore[misc]
        if opt is not None:
            opt.metavar = ""
            shown = [p for p in getattr(self, "params", []) if not p.hidden or ctx.meta.get(HELP_ALL)]
            panels = [p.rich_help_panel for p in shown if getattr(p, "rich_help_panel", None)]
            opt.rich_help_panel = panels[-1] if panels else None
        return opt


class Command(_CleanHelp, TyperCommand):
    pass


class Group(_CleanHelp, TyperGroup):
    pass


app = typer.Typer(
    help="aftpipe: cache foundation-model features once, train small models against them (Adaptive Feature Transfer).",
    epilog="AFTPIPE_CPU_KERNELS=portable pins torch's CPU kernels to ones that Intel and AMD x86-64 CPUs run alike "
           "(the same numbers on both, slower; README: \"What reproduces\").",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from aftpipe import __version__

        typer.echo(f"aftpipe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[Optional[bool], typer.Option("--version", help="print the version and exit", metavar="",
                                                          callback=_version, is_eager=True)] = None) -> None:
    """aftpipe: cache foundation-model features once, train small models against them (Adaptive Feature Transfer)."""


def _cli_type(tp: Any) -> Any:
    """How a config field's type is typed on the command line: a Literal as a string (the config names the
    choices when it refuses one), a tuple as a repeatable option, a mapping as repeatable KEY=VALUE."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return Optional[_cli_type(next(a for a in args if a is not type(None)))]
    if origin is Literal:
        return str
    if origin is tuple:
        return list[_cli_type(args[0])]
    if origin is dict:
        return list[str]
    return tp


def _metavar(tp: Any) -> str:
    """What a value of type `tp` is called in --help: INT, FLOAT, TEXT, the choices of a Literal, none for a flag."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return _metavar(next(a for a in args if a is not type(None)))
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin is tuple:
        return _metavar(args[0])
    if origin is dict:
        return "KEY=VALUE"
    return {bool: "", int: "INT", float: "FLOAT"}.get(tp, "TEXT")


def _fields(cls: type, panel: str | None = None) -> Iterator[tuple[dataclasses.Field, Any, str | None]]:
    """(field, type, panel) of every command-line field of `cls` and of the configs nested in it; a nested
    config's fields take its panel unless they name their own."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        own = f.metadata.get("panel") or panel
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], Config):
            yield from _fields(hints[f.name], own)
        elif f.metadata.get("help"):
            yield f, hints[f.name], own


def _options(cls: type) -> list[inspect.Parameter]:
    """One typer option per command-line field of `cls`: its default, type, help line, panel and aliases."""
    params = []
    for f, tp, panel in _fields(cls):
        if f.default is not dataclasses.MISSING:
            default = list(f.default) if isinstance(f.default, tuple) else f.default
        elif f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            default = [f"{k}={v}" for k, v in made.items()] if isinstance(made, dict) else made
        else:
            default = inspect.Parameter.empty
        metavar = f.metadata.get("metavar")
        name = flag_of(f.name)
        if tp is bool and default is True:  # a flag that is on by default needs its off switch
            name += f"/--no-{name[2:]}"
        option = typer.Option(name, *f.metadata.get("aliases", ()), help=f.metadata["help"], rich_help_panel=panel,
                              metavar=_metavar(tp) if metavar is None else metavar,
                              # -h lists the required and the common ones, --help-all all
                              hidden=not (f.metadata.get("common") or default is inspect.Parameter.empty))
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[_cli_type(tp), option]))
    order = {p: i for i, p in enumerate(PANELS)}  # panels in a fixed order, fields in theirs within each
    return sorted(params, key=lambda p: order.get(p.annotation.__metadata__[0].rich_help_panel, len(order)))


def _split_items(values: list[str]) -> tuple[str, ...]:
    return tuple(x.strip() for item in values for x in item.split(",") if x.strip())


def _build(cls: type, values: dict[str, Any]) -> Any:
    """`cls` from the parsed options; repeatable options may also be comma-separated (`--splits train,dev`),
    and a mapping is given as KEY=VALUE items (`--split-map validation=test`)."""
    hints, kw = get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and issubclass(tp, Config):
            kw[f.name] = _build(tp, values)
        elif f.name in values:
            v = values[f.name]
            if get_origin(tp) is dict:
                pairs = [item.partition("=") for item in _split_items(v)]
                bad = next((k for k, sep, _ in pairs if not sep), None)
                if bad is not None:
                    raise ConfigError(f.name, f"expected KEY=VALUE items, got `{bad}`")
                v = {k.strip(): val.strip() for k, _, val in pairs}
            elif isinstance(v, list):  # numbers (`--student-lr 3e-3 --student-lr 1e-2`) come parsed already
                v = _split_items(v) if all(isinstance(x, str) for x in v) else tuple(v)
            kw[f.name] = v
    return cls(**kw)


def _help_all(ctx: Any, _param: Any, value: bool) -> None:
    """--help-all: the command's help with every option, not only the common ones."""
    if value and not ctx.resilient_parsing:
        ctx.meta[HELP_ALL] = True
        ctx.command.epilog = None  # the line that points here
        typer.echo(ctx.get_help(), nl=False)
        raise typer.Exit()


def config_command(cls: type) -> Callable[[Callable[..., None]], Any]:
    """Register `fn(cfg, **own_options)` as a command whose options are every field of config `cls` (help,
    default, type, panel and aliases read from the dataclass, like transformers' HfArgumentParser) plus `fn`'s own.

    `-h` lists the fields marked `common` and `fn`'s own options, `--help-all` every option."""

    def decorate(fn: Callable[..., None]) -> Any:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in list(inspect.signature(fn, eval_str=True).parameters.values())[1:]]
        generated = _options(cls)
        names = {p.name for p in generated}
        hidden = sum(p.annotation.__metadata__[0].hidden for p in generated)
        help_all = inspect.Parameter("help_all", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--help-all", help="show every option", metavar="", is_eager=True, callback=_help_all,
                               rich_help_panel=SYSTEM)])

        def command(help_all: bool = False, **kw: Any) -> None:  # help_all: handled by its callback
            fn(_build(cls, {k: kw.pop(k) for k in list(kw) if k in names}), **kw)

        command.__signature__ = inspect.Signature(generated + own + [help_all])  # type: ignore[attr-defined]
        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        epilog = f"{hidden} more options: aftpipe {fn.__name__} --help-all"
        return app.command(cls=Command, epilog=epilog)(command)

    return decorate


@contextlib.contextmanager
def long_running(quiet: bool, unit: str, log_every: float) -> Iterator[Any]:
    """The progress display of a long command. On Ctrl-C the display is torn down first (cursor restored),
    then one line says what was kept and how to continue, and the exit status is 130. (typer would turn the
    interrupt into a silent exit 130 before `main` saw it.)"""
    from aftpipe.errors import Interrupted
    from aftpipe.progress import make_progress

    try:
        with make_progress(quiet, unit, log_every) as progress:
            yield progress
    except KeyboardInterrupt as e:
        typer.echo(str(e) if isinstance(e, Interrupted) else "interrupted; re-run the same command to resume", err=True)
        raise typer.Exit(130) from None


# options every long-running command has
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress display, only log lines", metavar="",
                                     rich_help_panel=SYSTEM)]
LogEvery = Annotated[float, typer.Option(help="without a terminal (log files, CI, Slurm): seconds between progress "
                                              "lines", rich_help_panel=SYSTEM, metavar="SECONDS")]


@config_command(ExtractConfig)
def extract(cfg: ExtractConfig, quiet: Quiet = False, log_every: LogEvery = 30.0) -> None:
    """Run feature sources over a dataset once and write per-example features to stores under --cache-dir.

    Re-running the same command resumes: finished shards are skipped and the result is bit-identical.

    Examples (a known dataset, your own file with two sources, a CSV whose columns have other names):

    aftpipe extract --dataset sst2 --source minilm --splits train,dev
    aftpipe extract --dataset tsv:data/reviews.tsv --source minilm --source tfidf
    aftpipe extract --dataset csv:tickets.csv --text-col body --label-col queue
    """
    from aftpipe.api import extract as run_extract
    from aftpipe.distributed import is_main_process

    with long_running(quiet, "ex", log_every) as progress:
        results = run_extract(cfg, progress)
        for r in results if is_main_process() else ():  # several processes: rank 0 reports the job
            rate = f"{r.rows_computed / max(r.wall_s, 1e-9):,.0f} ex/s" if r.rows_computed else "cached"
            progress.log(f"{r.path}  {r.split}: ({r.rows}, {r.dim})  shards written {r.shards_done}, "
                         f"skipped {r.shards_skipped}  {r.wall_s:.1f}s  {rate}")


@config_command(TrainConfig)
def train(cfg: TrainConfig, quiet: Quiet = False, log_every: LogEvery = 30.0) -> None:
    """Train a small student against cached features with AFT or a baseline; writes its run folder to --out.

    Examples (AFT against MiniLM's features; the baseline without them, on 500 labels):

    aftpipe train --dataset sst2 --features cache/sst2/minilm --out runs/aft
    aftpipe train --dataset sst2 --method none --labels 500 --out runs/none-500
    """
    from aftpipe.api import train as run_train
    from aftpipe.distributed import is_main_process

    with long_running(quiet, "step", log_every) as progress:
        r = run_train(cfg, progress)
    if is_main_process():  # several processes: rank 0 reports the run
        typer.echo(json.dumps({"test": r.test, "holdout": r.holdout, "params": r.params,
                               "ms_per_step": round(r.ms_per_step, 2) if r.ms_per_step == r.ms_per_step else None,
                               "wall_s": round(r.wall_s, 1)}))


@app.command(cls=Command)
def evaluate(run: Annotated[str, typer.Argument(help="a finished run directory", metavar="RUN")]) -> None:
    """Reload a run's checkpoint and score it on its test split again (should match metrics.json)."""
    from aftpipe.api import check_run

    typer.echo(json.dumps(check_run(run)))


@app.command(cls=Command)
def predict(
    run: Annotated[str, typer.Argument(help="a finished run directory (the --out of `aftpipe train`)", metavar="RUN")],
    input_: Annotated[str, typer.Option("--input", "-i", help="a .tsv, .csv, .jsonl or .parquet file with a text "
                                        "column, a folder of images, or - for one text per line on stdin",
                                        metavar="PATH", rich_help_panel=DATA)],
    text_col: Annotated[Optional[str], typer.Option(help="text column (default: text, sentence or content)",
                                                    metavar="TEXT", rich_help_panel=DATA)] = None,
    label_col: Annotated[Optional[str], typer.Option(help="label column; when the file has it, the run's metric on "
                                                     "those rows is printed (default: label)", metavar="TEXT",
                                                     rich_help_panel=DATA)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="refuse an image that does not decode instead of "
                                         "skipping it", metavar="", rich_help_panel=DATA)] = False,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="file to write: .jsonl for JSON Lines, "
                                                  "else CSV (default, or -: CSV on stdout)", metavar="FILE",
                                                  rich_help_panel=OUTPUT)] = None,
    format: Annotated[str | None, typer.Option(help="csv or jsonl (default: by --output's extension)",
                                                  metavar="csv|jsonl", rich_help_panel=OUTPUT)] = None,
    include_text: Annotated[bool, typer.Option("--include-text", help="add each input's text to the output",
                                               metavar="", rich_help_panel=OUTPUT)] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing --output file (never the input, "
                                            "nor a file of a run folder or store)", metavar="",
                                            rich_help_panel=OUTPUT)] = False,
    batch_size: Annotated[int, typer.Option(help="inputs per forward pass", metavar="INT",
                                            rich_help_panel=SYSTEM)] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto", metavar="TEXT",
                                        rich_help_panel=SYSTEM)] = "cpu",
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (default: torch's own choice)",
                                                   metavar="INT", rich_help_panel=SYSTEM)] = None,
    quiet: Quiet = False,
    log_every: LogEvery = 30.0,
) -> None:
    """Predict every row of a file with a trained model: a CSV of id, label and one prob_<label> column per class
    (or JSON Lines of {id, label, score, probs}); with the label column, the run's metric on the rows it knows."""
    from aftpipe.api import DatasetOptions, predict_file
    from aftpipe.predict import describe_unknown

    with long_running(quiet, "ex", log_every) as progress:
        r = predict_file(run, input_, output, batch_size=batch_size, strict=strict, device=device, progress=progress,
                         options=DatasetOptions(text_col=text_col, label_col=label_col), overwrite=overwrite,
                         threads=threads, include_text=include_text, format=format)
        if r.output is not None:
            progress.log(f"{r.rows:,} predictions → {r.output}")
        if r.blank:
            where = "blank line" if input_ == "-" else "blank text"
            progress.log(f"skipped {r.blank:,} {where}{'s' if r.blank > 1 else ''}")
        if r.skipped:
            shown = ", ".join(r.skipped[:5]) + (", …" if len(r.skipped) > 5 else "")
            progress.log(f"skipped {len(r.skipped)} unreadable image{'s' if len(r.skipped) > 1 else ''}: {shown} "
                         "(--strict refuses them)")
        unknown = f"; {describe_unknown(r)}" if r.unknown else ""
        if r.scores:
            progress.log("  ".join(f"{k} {v:.4f}" for k, v in r.scores.items())
                         + f" on the {r.labelled:,} labelled rows{unknown}")
        elif r.unknown:
            progress.log(f"no score: {describe_unknown(r)} (the model's labels: "
                         f"{', '.join(map(str, r.labels))})")


@config_command(DistillConfig)
def distill(cfg: DistillConfig, quiet: Quiet = False, log_every: LogEvery = 30.0) -> None:
    """Make a small model from a labeled dataset: fine-tune a foundation model on the labels, distil it into a
    small student over the unlabeled rows, export it to ONNX and report both side by side, all into --out.

    Stages are cached in --out: a killed distill resumes, a re-run changes nothing, a changed option redoes its own.

    Examples (SST-2 with 2,000 labels and three student seeds; your own file, one text and one label column):

        aftpipe distill --dataset sst2 --labels 2000 --seeds 3 --out models/sst2

        aftpipe distill --dataset tsv:tickets.tsv --out models/tickets"""
    from aftpipe.api import distill as run_distill

    with long_running(quiet, "step", log_every) as progress:
        report = run_distill(cfg, progress)
    typer.echo((Path(report["out"]) / "report.md").read_text())


@app.command(cls=Command)
def export(
    run: Annotated[str, typer.Argument(help="a finished run directory of a student", metavar="RUN")],
    *,  # keyword-only: the options in the order of their --help panels
    data_dir: Annotated[Optional[str], typer.Option(help="folder with the dataset files, for the check on the test "
                                                    "split (default: the run's)", metavar="DIR",
                                                    rich_help_panel=DATA)] = None,
    out: Annotated[str, typer.Option(help="folder to create: model.onnx, tokenizer.json, config.json, README.md",
                                     metavar="DIR", rich_help_panel=OUTPUT)],
    format: Annotated[str, typer.Option(help="export format", metavar="onnx", rich_help_panel=OUTPUT)] = "onnx",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing --out folder", metavar="",
                                            rich_help_panel=OUTPUT)] = False,
) -> None:
    """Export a trained student to ONNX (dynamic batch and sequence axes) for runtimes without torch.

    The export is checked before it is written: ONNX Runtime's logits on 64 test rows must equal the torch
    student's within 1e-4 with the same argmax."""
    from aftpipe.api import export_model
    from aftpipe.progress import human_bytes

    r = export_model(run, out, format=format, overwrite=overwrite, data_dir=data_dir)
    typer.echo(f"{r.path}: {human_bytes(r.bytes)}; ONNX Runtime's logits match the torch student's within "
               f"{r.max_abs_diff:.1e} on {r.rows} rows of `{r.split}`")


@app.command("run", cls=Command)
def run_(
    pipeline: Annotated[str, typer.Argument(help="a pipeline YAML, e.g. pipelines/demo.yaml", metavar="PIPELINE")],
    cache_dir: Annotated[str, typer.Option(help="where feature stores are found or extracted", metavar="DIR",
                                           rich_help_panel=DATA)] = "cache",
    results_dir: Annotated[str, typer.Option(help="results land in <results-dir>/<pipeline>/", metavar="DIR",
                                             rich_help_panel=OUTPUT)] = "results",
    runs_dir: Annotated[str, typer.Option(help="run directories land in <runs-dir>/<pipeline>/", metavar="DIR",
                                          rich_help_panel=OUTPUT)] = "runs",
    report_to: Annotated[list[str], typer.Option(help="also log every run to tensorboard or wandb (repeatable)",
                                                 metavar="TRACKER", rich_help_panel=OUTPUT)] = [],  # noqa: B006
    jobs: Annotated[Optional[int], typer.Option(
        help="runs trained at once, in worker processes of one thread each; the results are the same for any N "
             "(default: one per CPU core, at most 8; 1 on a GPU)", metavar="N", rich_help_panel=SYSTEM)] = None,
    quiet: Quiet = False,
    log_every: LogEvery = 30.0,
) -> None:
    """Run a pipeline: extract missing stores, tune β/lr on the hold-out, train every seed, write results.

    Finished runs are skipped, so an interrupted sweep resumes and a finished one changes nothing."""
    from aftpipe.api import run_pipeline

    with long_running(quiet, "step", log_every) as progress:
        out = run_pipeline(pipeline, cache_dir=cache_dir, results_dir=results_dir, runs_dir=runs_dir,
                           progress=progress, report_to=_split_items(report_to), jobs=jobs)
    typer.echo((out / "results.md").read_text())
    typer.echo(f"results: {out}/results.csv, {out}/results.md, {out}/plot.png, {out}/plot.svg")


@app.command("validate", cls=Command)
def validate_(
    pipeline: Annotated[str, typer.Argument(help="a pipeline YAML", metavar="PIPELINE")],
    cache_dir: Annotated[str, typer.Option(help="where feature stores are looked for", metavar="DIR")] = "cache",
    runs_dir: Annotated[str, typer.Option(help="where finished runs are looked for", metavar="DIR")] = "runs",
) -> None:
    """Check a pipeline (keys, types, names, grids) and say what it would compute, without computing it."""
    from aftpipe.api import validate

    typer.echo(validate(pipeline, cache_dir=cache_dir, runs_dir=runs_dir))


def _list(registry: Any, width: int = 14) -> None:
    """Each entry with its help line and, under it, the options it takes (its own `Options`)."""
    for name, doc in registry.describe():
        typer.echo(f"{name:{width}s} {doc}")
        own = getattr(registry[name], "Options", None)
        if own is not None:
            typer.echo(f"{'':{width}s} options: {' '.join(map(flag_of, own.field_names())) or 'none'}")


@app.command(cls=Command)
def methods() -> None:
    """List the transfer methods (AFT and the baselines it must beat)."""
    from aftpipe.methods import METHODS

    _list(METHODS)


@app.command(cls=Command)
def students() -> None:
    """List the student models (`name:` entries take a config, timm name or path)."""
    from aftpipe.students import STUDENTS

    _list(STUDENTS)


@app.command(cls=Command)
def datasets() -> None:
    """List the datasets aftpipe knows (`name:` entries take a path)."""
    from aftpipe.data import DATASETS, default_data_dir

    _list(DATASETS)
    typer.echo(f"\ndata dir: {default_data_dir() or '(none found: pass --data-dir or set AFTPIPE_DATA_DIR)'}")


@app.command(cls=Command)
def sources() -> None:
    """List the feature sources (`name:` entries take a hub id, a name or a local path)."""
    from aftpipe.sources import SOURCES

    _list(SOURCES, 10)


@app.command("inspect", cls=Command)
def inspect_(
    store: Annotated[str, typer.Argument(help="a store: cache/<dataset>/<source> or its .h5 file", metavar="STORE")],
    json_out: Annotated[bool, typer.Option("--json", help="print the whole manifest as JSON")] = False,
) -> None:
    """Print a store's manifest summary: source, dataset, splits with shapes and dtype, bytes on disk."""
    from rich.console import Console
    from rich.table import Table

    from aftpipe.api import open_features
    from aftpipe.progress import human_bytes

    st = open_features(store)
    if json_out:
        print(json.dumps(st.manifest, indent=1, sort_keys=True))
        return
    con = Console()
    src, ds, built = st.source, st.dataset, st.built
    con.print(f"[bold]{st.path}[/]  ({st.storage['format']}, {st.storage['dtype']}, {human_bytes(st.nbytes_on_disk())} on "
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
    # the row counts on a line of their own too: a narrow terminal may fold the table's cells
    con.print("rows:    " + ", ".join(f"{i.name} {i.n:,}" for i in st.split_infos()), soft_wrap=True)
    t = Table("split", "rows", "dim", "shards (done/all)", "fingerprint", "extract time", "ex/s")
    for i in st.split_infos():
        t.add_row(i.name, f"{i.n:,}", str(i.d), f"{i.shards_done}/{len(i.shards)}", i.fingerprint[:16],
                  f"{i.wall_s:.1f}s", f"{i.examples_per_s or '-'}")
    con.print(t)


@app.command(cls=Command)
def verify(
    store: Annotated[str, typer.Argument(help="a store: cache/<dataset>/<source> or its .h5 file", metavar="STORE")],
    repair: Annotated[bool, typer.Option(help="recompute exactly the damaged or missing shards (and rewrite damaged "
                                              "metadata) by re-running the extraction the manifest records",
                                         metavar="")] = False,
    quiet: Quiet = False,
    log_every: LogEvery = 30.0,
) -> None:
    """Check a store in full: each split's array metadata and index against the manifest, every shard's file and
    bytes against its checksum, and a `model:` teacher's weights against the ones it was extracted from. Prints
    every problem by name and exits 1 when there is any."""
    from aftpipe.api import repair_store, verify_store

    report = verify_store(store)
    if repair and not report.ok:
        for d in report.damage:
            typer.echo(f"found: {d}")
        with long_running(quiet, "ex", log_every) as progress:
            results = repair_store(store, progress)
        for r in results:
            typer.echo(f"{r.split}: recomputed shards {list(r.recomputed) or 'none'}"
                       + (f" ({len(r.repaired)} problems repaired)" if r.repaired else ""))
        report = verify_store(store)
    if not report.ok:
        for d in report.damage:
            typer.echo(str(d), err=True)
        how = "resume it by re-running the extract command" if all(d.kind == "unfinished" for d in report.damage) \
            else f"repair it with `aftpipe verify {store} --repair`"
        typer.echo(f"error: {report.path} fails verification ({len(report.damage)} problems); {how}", err=True)
        raise typer.Exit(1)
    from aftpipe.api import open_features
    from aftpipe.sources.base import teacher_change

    changed = teacher_change(open_features(store))
    if changed:
        typer.echo(f"error: {changed}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {report.path}: {report.shards_checked} shards in {len(report.splits)} splits match the manifest "
               "(metadata, index, checksums)")


def _click_errors() -> tuple[type[Exception], type[Exception]]:
    """(ClickException, NoArgsIsHelpError): typer vendors click from 0.2x on, older typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions  # type: ignore[no-redef]
    return exceptions.ClickException, getattr(exceptions, "NoArgsIsHelpError", ())  # type: ignore[return-value]


def main() -> None:
    from aftpipe.cpu_kernels import use_portable_kernels
    from aftpipe.provenance import running_command

    ClickException, NoArgsIsHelpError = _click_errors()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we parallelise with DataLoader workers instead
    try:
        use_portable_kernels()  # before anything imports torch, when asked: the same numbers on every x86-64 CPU
        with speaking_to_cli(flag_of), running_command(["aftpipe", *sys.argv[1:]]):
            # not standalone: usage errors (unknown flag, a value that is not a number) come back to us, to be
            # printed as one line like every other error instead of typer's usage box
            code = app(prog_name="aftpipe", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except NoArgsIsHelpError as e:
        e.show()  # type: ignore[attr-defined]
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    except ClickException as e:
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(f"error: {e.format_message().rstrip('.')}{hint}", err=True)  # type: ignore[attr-defined]
        sys.exit(2)
    except ConfigError as e:
        sep = " " if e.message.startswith(("must", "expected", "is ", "does not")) else ": "
        typer.echo(f"error: {flag_of(e.path)}{sep}{e.message}", err=True)
        sys.exit(2)
    except AftpipeError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):  # outside a long-running command
        typer.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
