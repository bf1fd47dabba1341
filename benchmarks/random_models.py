"""Random-weight models of real sizes for speed checks (weights do not change a forward pass's cost).

    python benchmarks/random_models.py OUT [--tiny]

OUT/bert-base: BERT-base (12 layers, 768 wide, 110M parameters) with the uncased WordPiece tokenizer of
all-MiniLM-L6-v2 (the same 30,522-token vocabulary), a `--source hf:OUT/bert-base` folder. OUT/vit-b16:
timm's vit_base_patch16_224 (86M), a `--source timm:OUT/vit-b16` folder. `--tiny` writes 2-layer, 32-wide
stand-ins of both, for trying the scripts on a CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()

    import timm
    from timm.models import save_for_hf
    from transformers import AutoTokenizer, BertConfig, BertModel

    from aftpipe.sources import minilm_dir

    torch.manual_seed(0)
    bert = (BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
            if args.tiny else BertConfig())  # BertConfig's defaults are BERT-base
    BertModel(bert).save_pretrained(args.out / "bert-base")
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(args.out / "bert-base")
    vit = timm.create_model("test_vit" if args.tiny else "vit_base_patch16_224", pretrained=False, num_classes=0)
    save_for_hf(vit, args.out / "vit-b16")
    for name in ("bert-base", "vit-b16"):
        print(args.out / name)


if __name__ == "__main__":
    main()
