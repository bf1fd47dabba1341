"""The CLI pins torch's CPU kernels before torch loads, leaves the user's own settings alone, and can be told not to."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from aftpipe import cpu_kernels
from aftpipe.errors import AftpipeError

REPO = Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture
def before_torch(monkeypatch):
    """As if torch were not imported yet (as in a fresh `aftpipe` process)."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)


def test_torchs_own_kernels_by_default(before_torch):
    env: dict[str, str] = {}
    assert cpu_kernels.use_portable_kernels(env) == {} and env == {}


def test_portable_when_asked(before_torch):
    env: dict[str, str] = {cpu_kernels.CHOICE: "portable"}
    added = cpu_kernels.use_portable_kernels(env)
    env.pop(cpu_kernels.CHOICE)
    assert env == added
    if X86:
        assert env["MKL_CBWR"] == "COMPATIBLE" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
        assert env.get("ATEN_CPU_CAPABILITY") == ("avx2" if cpu_kernels._has_avx2() else None)
    else:
        assert env == {}


def test_the_users_own_settings_win(before_torch):
    env = {cpu_kernels.CHOICE: "portable", "MKL_CBWR": "AVX512", "ATEN_CPU_CAPABILITY": "default"}
    added = cpu_kernels.use_portable_kernels(env)
    assert env["MKL_CBWR"] == "AVX512" and env["ATEN_CPU_CAPABILITY"] == "default"
    assert "MKL_CBWR" not in added and "ATEN_CPU_CAPABILITY" not in added


def test_native_sets_nothing(before_torch):
    env = {cpu_kernels.CHOICE: "native"}
    assert cpu_kernels.use_portable_kernels(env) == {} and env == {cpu_kernels.CHOICE: "native"}


def test_nothing_once_torch_is_loaded():
    import torch  # noqa: F401  (the kernels are chosen: a variable set now would reach child processes only)

    env: dict[str, str] = {}
    assert cpu_kernels.use_portable_kernels(env) == {} and env == {}


def test_unknown_choice_is_a_user_error():
    with pytest.raises(AftpipeError, match="AFTPIPE_CPU_KERNELS=fast is not a kernel choice"):
        cpu_kernels.use_portable_kernels({cpu_kernels.CHOICE: "fast"})


def test_a_cli_run_uses_mkls_reproducible_mode(tmp_path):
    """End to end: after `aftpipe` with AFTPIPE_CPU_KERNELS=portable in a fresh process, torch's matmuls run in
    MKL's COMPATIBLE mode (MKL_VERBOSE prints the mode of each call) and ATen's kernels are AVX2 ones."""
    code = ("import sys, runpy; sys.argv = ['aftpipe', 'methods']\n"
            "try:\n    runpy.run_module('aftpipe', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import json, torch\nx = torch.ones(64, 64)\nx @ x\n"
            "print(json.dumps(torch.backends.cpu.get_cpu_capability()))")
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", cpu_kernels.CHOICE)}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "MKL_VERBOSE": "1", "PYTHONPATH": str(REPO),
                                                              cpu_kernels.CHOICE: "portable"},
                          capture_output=True, text=True, cwd=tmp_path, check=True)
    assert ("CNR:COMPATIBLE" in done.stdout) == X86, done.stdout[-2000:]  # no MKL off x86-64
    if X86 and cpu_kernels._has_avx2():
        assert json.loads(done.stdout.strip().splitlines()[-1]) == "AVX2"
