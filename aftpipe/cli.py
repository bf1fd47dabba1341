"""The `aftpipe` command line: a thin typer layer; every command builds a config and calls one API function.

`extract` and `train` take their options from the config dataclasses themselves: every field with a help line is
an option with the field's default and type, so nothing is written twice.
User errors (`AftpipeError`) print one line and exit 2; a config error names the flag to change. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

import typer

from aftpipe.config import Config, ConfigError, ExtractConfig, TrainConfig
from aftpipe.errors import AftpipeError

app = typer.Typer(
    help="aftpipe: cache foundation-model features once, train small models against them (Adaptive Feature Transfer).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)


def _cli_type(tp: Any) -> Any:
    """How a config field's type is typed on the command line: a Literal as a string (the config names the
    choices when it refuses one), a tuple as a repeatable option."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return Optional[_cli_type(next(a for a in args if a is not type(None)))]
    if origin is Literal:
        return str
    if origin is tuple:
        return list[args[0]]
    return tp


def _options(cls: type) -> list[inspect.Parameter]:
    """One typer option per field of `cls` (and of the configs nested in it) that has a help line; its
    default is the field's own."""
    hints, params = get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], Config):
            params += _options(hints[f.name])
        elif f.metadata.get("help"):
            default = inspect.Parameter.empty if f.default is dataclasses.MISSING else (
                list(f.default) if isinstance(f.default, tuple) else f.default)
            decls = (f.metadata["flag"],) if f.metadata.get("flag") else ()
            option = typer.Option(*decls, help=f.metadata["help"])
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=Annotated[_cli_type(hints[f.name]), option]))
    return params


def _build(cls: type, values: dict[str, Any]) -> Any:
    """`cls` from the parsed options; repeatable options may also be comma-separated (`--splits train,dev`)."""
    hints, kw = get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], Config):
            kw[f.name] = _build(hints[f.name], values)
        elif f.name in values:
            v = values[f.name]
            kw[f.name] = tuple(x.strip() for item in v for x in item.split(",") if x.strip()) if isinstance(v, list) else v
    return cls(**kw)


def config_command(cls: type) -> Callable[[Callable[..., None]], Any]:
    """Register `fn(cfg, **own_options)` as a command whose options are every field of config `cls` (help,
    default and type read from the dataclass, like transformers' HfArgumentParser) plus `fn`'s own."""

    def decorate(fn: Callable[..., None]) -> Any:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in list(inspect.signature(fn, eval_str=True).parameters.values())[1:]]
        generated = _options(cls)
        names = {p.name for p in generated}

        def command(**kw: Any) -> None:
            fn(_build(cls, {k: kw.pop(k) for k in list(kw) if k in names}), **kw)

        command.__signature__ = inspect.Signature(generated + own)  # type: ignore[attr-defined]
        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        return app.command()(command)

    return decorate


@config_command(ExtractConfig)
def extract(cfg: ExtractConfig, quiet: Annotated[bool, typer.Option(help="no progress bars, only log lines")] = False) -> None:
    """Run feature sources over a dataset once and write per-example features to stores under --cache-dir.

    Re-running the same command resumes: finished shards are skipped and the result is bit-identical.
    """
    from aftpipe.api import extract as run_extract
    from aftpipe.progress import RichProgress

    progress = RichProgress(quiet=quiet)
    for r in run_extract(cfg, progress):
        rate = f"{r.rows_computed / max(r.wall_s, 1e-9):,.0f} ex/s" if r.rows_computed else "cached"
        progress.log(f"{r.path}  {r.split}: ({r.rows}, {r.dim})  shards written {r.shards_done}, "
                     f"skipped {r.shards_skipped}  {r.wall_s:.1f}s  {rate}")


@config_command(TrainConfig)
def train(cfg: TrainConfig, quiet: Annotated[bool, typer.Option(help="no progress bar")] = False) -> None:
    """Train a small student against cached features with AFT or a baseline; writes metrics.json to --out."""
    from aftpipe.api import train as run_train
    from aftpipe.progress import RichProgress

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


@app.command("inspect")
def inspect_(
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
def verify(
    store: Annotated[str, typer.Argument(help="a store: cache/<dataset>/<source> or its .h5 file")],
    repair: Annotated[bool, typer.Option(help="recompute exactly the damaged or missing shards (and rewrite damaged "
                                              "metadata) by re-running the extraction the manifest records")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars during --repair")] = False,
) -> None:
    """Check a store in full: each split's array metadata and index against the manifest, every shard's file and
    bytes against its checksum. Prints every problem by name and exits 1 when there is any."""
    from aftpipe.api import repair_store, verify_store
    from aftpipe.progress import RichProgress

    report = verify_store(store)
    if repair and not report.ok:
        for d in report.damage:
            typer.echo(f"found: {d}")
        for r in repair_store(store, RichProgress(quiet=quiet)):
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
    typer.echo(f"ok: {report.path}: {report.shards_checked} shards in {len(report.splits)} splits match the manifest "
               "(metadata, index, checksums)")


FLAGS = {"sources": "--source", "out": "--out"}  # config fields whose flag is not simply --field-name


def _flag(path: tuple) -> str:
    """The CLI flag of a config field path: ("method_options", "beta") → --beta, ("sources", 1) → --source."""
    name = next((p for p in reversed(path) if isinstance(p, str)), "")
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _click_errors() -> tuple[type[Exception], type[Exception]]:
    """(ClickException, NoArgsIsHelpError): typer vendors click from 0.2x on, older typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions  # type: ignore[no-redef]
    return exceptions.ClickException, getattr(exceptions, "NoArgsIsHelpError", ())  # type: ignore[return-value]


def main() -> None:
    ClickException, NoArgsIsHelpError = _click_errors()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we parallelise with DataLoader workers instead
    try:
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
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(130)
    except ConfigError as e:
        sep = " " if e.message.startswith(("must", "expected", "is ")) else ": "
        typer.echo(f"error: {_flag(e.path)}{sep}{e.message}", err=True)
        sys.exit(2)
    except AftpipeError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
