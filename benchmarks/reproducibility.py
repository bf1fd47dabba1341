"""Which CPU settings change aftpipe's numbers? The demo's runs, shortened, and an extraction under each setting.

    python benchmarks/reproducibility.py [--settings NAME ...] [--rows 2560] [--epochs 5] [--tokt-steps 150]
                                         [--extract-rows 512] [--speed 3] [--write BENCHMARKS.md]

Each setting is a set of environment variables read when torch loads — which kernels ATen's vectorised ops
(ATEN_CPU_CAPABILITY), oneDNN (ONEDNN_MAX_CPU_ISA) and MKL, which runs float32 matmuls in PyTorch's x86 wheels
(MKL_CBWR), may use — and a torch thread count. First a MiniLM store of the first --rows SST-2 training
sentences and the dev set is extracted (under the first setting). Then, under each setting, as separate
processes: the demo's `none` and `tokt` runs with seed 0 on that store (`aftpipe train` with the options
`aftpipe run pipelines/demo.yaml` gives them, shortened to --epochs / --tokt-steps), and an extraction of the
first --extract-rows sentences. Every row is compared with the first setting's: test accuracy, the largest
weight difference, and how many of the stored float16 feature values differ. A setting that matches the
reference on this CPU may still differ on another; one that differs here moves the numbers.

--speed N: then N alternating pairs of the same `none` run and extraction, torch's own kernels
(AFTPIPE_CPU_KERNELS=native, the default) vs the portable ones (AFTPIPE_CPU_KERNELS=portable): the cost of pinning, as a ratio.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _markdown import machine, replace_block

REPO = Path(__file__).resolve().parents[1]
KNOBS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "AFTPIPE_CPU_KERNELS")
PORTABLE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
NATIVE = {"AFTPIPE_CPU_KERNELS": "native"}  # aftpipe sets no kernel variable of its own (its default)

# name → (environment, torch threads)
SETTINGS: dict[str, tuple[dict[str, str], int]] = {
    "native": (NATIVE, 1),
    "native, 2 threads": (NATIVE, 2),
    "ATEN_CPU_CAPABILITY=default": ({**NATIVE, "ATEN_CPU_CAPABILITY": "default"}, 1),
    "ATEN_CPU_CAPABILITY=avx2": ({**NATIVE, "ATEN_CPU_CAPABILITY": "avx2"}, 1),
    "ATEN_CPU_CAPABILITY=avx512": ({**NATIVE, "ATEN_CPU_CAPABILITY": "avx512"}, 1),
    "ONEDNN_MAX_CPU_ISA=AVX2": ({**NATIVE, "ONEDNN_MAX_CPU_ISA": "AVX2"}, 1),
    "ONEDNN_MAX_CPU_ISA=AVX512_CORE": ({**NATIVE, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, 1),
    "MKL_CBWR=COMPATIBLE": ({**NATIVE, "MKL_CBWR": "COMPATIBLE"}, 1),
    "MKL_CBWR=AVX2": ({**NATIVE, "MKL_CBWR": "AVX2"}, 1),
    "MKL_CBWR=AVX512": ({**NATIVE, "MKL_CBWR": "AVX512"}, 1),
    # MKL picks its code by the CPU's vendor: a shim that tells it the CPU is an Intel one (on an AMD CPU) shows
    # whether the numbers would differ on an Intel CPU of the same ISA, and whether the pinning removes that
    "MKL told it runs on Intel (shim)": ({**NATIVE, "LD_PRELOAD": "{intel-shim}"}, 1),
    "MKL told it runs on Intel, portable": ({**PORTABLE, "LD_PRELOAD": "{intel-shim}"}, 1),
    "portable (all three pinned)": (PORTABLE, 1),
    "portable, 2 threads": (PORTABLE, 2),
    "AFTPIPE_CPU_KERNELS=portable": ({"AFTPIPE_CPU_KERNELS": "portable"}, 1),
}

# settings compared with each other too, not only with the first: (setting, the one it should equal)
PAIRS = (("MKL told it runs on Intel (shim)", "native"),
         ("MKL told it runs on Intel, portable", "portable (all three pinned)"),
         ("portable, 2 threads", "portable (all three pinned)"),
         ("AFTPIPE_CPU_KERNELS=portable", "portable (all three pinned)"))


def environment(extra: dict[str, str], threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KNOBS}
    if extra.get("LD_PRELOAD") == "{intel-shim}":
        extra = {**extra, "LD_PRELOAD": intel_shim()}
    return {**env, **extra, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO)}


@functools.cache
def intel_shim() -> str:
    """A library whose CPU-vendor checks, loaded before the MKL inside torch, say "Intel" (built with `cc`)."""
    folder = Path(tempfile.mkdtemp(prefix="mkl-intel-shim-"))
    (folder / "shim.c").write_text("int mkl_serv_intel_cpu_true(void) { return 1; }\n"
                                   "int mkl_serv_intel_cpu(void) { return 1; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(folder / "shim.so"), str(folder / "shim.c")], check=True)
    return str(folder / "shim.so")


def aftpipe(args: list[str], env: dict[str, str]) -> float:
    """Run `aftpipe ARGS` in a fresh process (the variables take effect as torch loads); returns the CPU seconds
    it used (user + system: on a shared machine a steadier measure of its work than the wall clock)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "aftpipe", *args, "--quiet"], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"aftpipe {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def train_args(method: str, out: Path, args: argparse.Namespace, threads: int) -> list[str]:
    """The demo's seed-0 run of `method` (`aftpipe validate pipelines/demo.yaml` plans the same options)."""
    common = ["train", "--dataset", "sst2", "--features", str(args.store), "--method", method,
              "--epochs", str(args.epochs), "--labels", "2000", "--seed", "0", "--threads", str(threads),
              "--out", str(out), "--stored-rows-only"]  # the store holds the first --rows training sentences
    if method == "tokt":
        return [*common, "--steps", str(args.tokt_steps), "--lr", "0.01", "--unlabeled"]
    return [*common, "--lr", "0.003"]


def extract_args(cache: Path, rows: int, splits: str = "train") -> list[str]:
    return ["extract", "--dataset", "sst2", "--source", "minilm", "--splits", splits, "--limit", str(rows),
            "--cache-dir", str(cache)]


def weights(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "student.safetensors"))


def features(cache: Path) -> np.ndarray:
    from aftpipe.store import open_features

    return np.asarray(open_features(cache / "sst2" / "minilm").split("train")[:])


def differences(work: Path, ref: Path, args: argparse.Namespace) -> dict:
    """The largest weight difference of each run and the count of differing feature values, `work` vs `ref`."""
    out: dict = {}
    for method in args.methods:
        a, b = weights(work / method), weights(ref / method)
        out[f"{method}_dw"] = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    if args.extract_rows:
        a, b = features(work / "cache"), features(ref / "cache")
        out["extract_diff"], out["extract_values"] = int((a != b).sum()), int(a.size)
    return out


def measure(name: str, work: Path, ref: Path, args: argparse.Namespace) -> dict:
    """One setting's runs and extraction, compared with the reference setting's (in `ref`; itself for the first)."""
    extra, threads = SETTINGS[name]
    env = environment(extra, threads)
    row: dict = {"setting": name, "threads": threads}
    for method in args.methods:
        if not (work / method / "metrics.json").exists():  # kept from an earlier --keep run otherwise
            aftpipe(train_args(method, work / method, args, threads), env)
        row[method] = json.loads((work / method / "metrics.json").read_text())["test"]["accuracy"]
    if args.extract_rows:
        aftpipe(extract_args(work / "cache", args.extract_rows), env)
    return {**row, **differences(work, ref, args)}


def speed(work: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Alternating pairs of the same `none` run and extraction, native vs portable: CPU seconds of each."""
    out: dict[str, list[float]] = {k: [] for k in ("train native", "train portable", "extract native",
                                                   "extract portable")}
    for i in range(args.speed):
        for kind, extra in (("native", NATIVE), ("portable", {"AFTPIPE_CPU_KERNELS": "portable"})):
            env = environment(extra, 1)
            run = work / f"speed-{kind}-{i}"
            shutil.rmtree(run, ignore_errors=True)  # timed afresh, also with --keep
            out[f"train {kind}"].append(aftpipe(train_args("none", run, args, 1), env))
            out[f"extract {kind}"].append(aftpipe(extract_args(run / "cache", args.extract_rows), env))
    return out


def table(rows: list[dict], args: argparse.Namespace) -> str:
    head = ["setting", "threads"]
    for m in args.methods:
        head += [f"`{m}` s0 test acc", f"`{m}` max abs Δweight"]
    if args.extract_rows:
        head.append(f"MiniLM features differing (of {rows[0]['extract_values']:,})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["setting"], str(r["threads"])]
        for m in args.methods:
            cells += [f"{r[m]:.4f}", "reference" if r is rows[0] else _num(r[f"{m}_dw"])]
        if args.extract_rows:
            cells.append("reference" if r is rows[0] else f"{r['extract_diff']:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(x: float) -> str:
    return "**0**" if x == 0 else f"{x:.1e}"


def pairs_table(folder: dict[str, Path], args: argparse.Namespace) -> str:
    cols = [f"`{m}` max abs Δweight" for m in args.methods] + (["features differing"] if args.extract_rows else [])
    lines = ["| setting | compared with | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for a, b in PAIRS:
        if a in folder and b in folder:
            d = differences(folder[a], folder[b], args)
            cells = [_num(d[f"{m}_dw"]) for m in args.methods]
            if args.extract_rows:
                cells.append("**0**" if d["extract_diff"] == 0 else f"{d['extract_diff']:,}")
            lines.append(f"| {a} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_table(times: dict[str, list[float]]) -> str:
    med = {k: float(np.median(v)) for k, v in times.items()}
    n = len(times["train native"])
    return ("| CPU seconds of the whole process, median of " + str(n) + " | torch's own kernels (default) | portable "
            "| portable / own |\n|---|---|---|---|\n" + "\n".join(
                f"| {what} | {med[k + ' native']:.1f} | {med[k + ' portable']:.1f} | "
                f"{med[k + ' portable'] / med[k + ' native']:.2f}× |"
                for k, what in (("train", "the `none` run"), ("extract", "the extraction"))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), metavar="NAME",
                    help="the first is the reference (default: all)")
    ap.add_argument("--methods", nargs="+", default=["none", "tokt"])
    ap.add_argument("--rows", type=int, default=2560, help="training sentences in the runs' store")
    ap.add_argument("--epochs", type=int, default=5, help="`none`: 15 steps an epoch (the demo: 20)")
    ap.add_argument("--tokt-steps", type=int, default=150, help="the demo: 600")
    ap.add_argument("--extract-rows", type=int, default=512, help="0: no extraction")
    ap.add_argument("--speed", type=int, default=0, help="alternating native/portable pairs timed")
    ap.add_argument("--keep", help="keep the runs and stores in this folder")
    ap.add_argument("--write", help="put the tables in this Markdown file")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep).resolve() if args.keep else Path(tmp)
        first, threads = SETTINGS[args.settings[0]]
        aftpipe(extract_args(base / "store", args.rows, "train,dev"), environment(first, threads))
        args.store = base / "store" / "sst2" / "minilm"
        rows = []
        folder = {name: base / re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") for name in args.settings}
        for name in args.settings:
            rows.append(measure(name, folder[name], folder[args.settings[0]], args))
            print(json.dumps(rows[-1]), flush=True)
        text = table(rows, args) + "\n\nSettings that should give the same numbers, compared directly:\n\n" + \
            pairs_table(folder, args)
        times = speed(base, args) if args.speed else None
    if times:
        print(json.dumps(times))
        text += "\n\nThe cost, alternating native and portable runs (one thread each):\n\n" + speed_table(times)
    print(text)
    if args.write:
        import torch

        from aftpipe.cpu_kernels import cpu_name

        argv = sys.argv[1:]
        if "--write" in argv:
            del argv[argv.index("--write"):argv.index("--write") + 2]
        cmd = "python benchmarks/reproducibility.py " + shlex.join(argv)
        note = (f"`{cmd.strip()}` ({datetime.date.today()}, {cpu_name()}, {machine()}, torch {torch.__version__}, "
                f"{(time.perf_counter() - t0) / 60:.0f} min):")
        replace_block(args.write, "reproducibility", note + "\n\n" + text)


if __name__ == "__main__":
    main()
