"""The CPU kernels torch may use, pinned so that Intel and AMD x86-64 CPUs compute a run the same way.

    use_portable_kernels()        # before torch is imported: what `aftpipe` does first when AFTPIPE_CPU_KERNELS=portable

PyTorch's x86 wheels pick their float kernels by the CPU they run on, and kernels of different vector widths
round differently: MKL runs the float32 matmuls and picks its code by the CPU's vendor; oneDNN and ATen's
vectorised ops use AVX-512 where the CPU has it, AVX2 where not. The demo run on an AMD EPYC and on an Intel
Xeon thus gave different numbers (`none` 0.6445 vs 0.6422 in the mean). Pinned here: MKL's
COMPATIBLE code path (its conditional numerical reproducibility mode, the same code on Intel and AMD), and AVX2
at most for oneDNN and ATen (every x86-64 server CPU since 2013 has it). The price is speed, measured in
BENCHMARKS.md ("Reproducibility across machines": a training step 1.65× as long, extraction 2×), so it is asked
for (AFTPIPE_CPU_KERNELS=portable; the Makefile's demo and benchmark targets do) rather than the default: by
default torch keeps its own, fastest choice.

What this cannot make identical: ARM or other CPUs (none of these libraries runs there), GPUs, other
versions of torch/MKL/oneDNN, and another thread count (MKL's reproducible mode holds for a fixed number of
threads: `aftpipe run` and `aftpipe train` use one unless told otherwise).
The variables are read once, when torch loads its kernels, so they are set before torch is imported;
a variable the user has set already is left as it is.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from aftpipe.errors import AftpipeError

CHOICE = "AFTPIPE_CPU_KERNELS"  # native (the default) or portable
PORTABLE = {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}
ATEN = ("ATEN_CPU_CAPABILITY", "avx2")  # only where the CPU has AVX2: ATen trusts the variable and would crash


def use_portable_kernels(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the variables that pin torch's CPU kernels (those not already set) and return what was set; nothing
    unless AFTPIPE_CPU_KERNELS=portable, off x86-64, or once torch is imported (its kernels are chosen by then, and
    only child processes would get the others: the numbers of a pipeline's workers and of its main process
    must not differ)."""
    choice = environ.get(CHOICE, "native")
    if choice not in ("portable", "native"):
        raise AftpipeError(f"{CHOICE}={choice} is not a kernel choice; set it to portable (the same numbers on "
                           "every x86-64 CPU) or native (torch's fastest kernels for this CPU), or unset it")
    if choice == "native" or "torch" in sys.modules or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    wanted = dict(PORTABLE)
    if _has_avx2():
        wanted[ATEN[0]] = ATEN[1]
    added = {k: v for k, v in wanted.items() if k not in environ}
    environ.update(added)
    return added


def in_effect() -> dict[str, Any]:
    """What this process computes with, for a run's record: the CPU, ATen's kernel level, MKL's and oneDNN's
    settings (None: the library's own choice) and torch's thread count."""
    import torch

    return {"cpu": cpu_name(), "aten": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ.get(k) for k in PORTABLE}, "threads": torch.get_num_threads()}


def cpu_name() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        return next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _has_avx2() -> bool:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        return False  # not Linux: ATen keeps its own choice
    return {"avx2", "fma"} <= set(flags.split(":", 1)[1].split())


__all__ = ["CHOICE", "PORTABLE", "cpu_name", "in_effect", "use_portable_kernels"]
