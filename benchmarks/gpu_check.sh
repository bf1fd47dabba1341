#!/usr/bin/env bash
# The GPU check, in one go on a machine with CUDA GPUs (run from anywhere; appends its rows to BENCHMARKS.md
# when WRITE=BENCHMARKS.md is set):
#
#   bash benchmarks/gpu_check.sh                  # every visible GPU
#   CPU=1 bash benchmarks/gpu_check.sh            # the same steps with tiny models on 2 CPU processes (a dry run)
#
# 1. extraction of a BERT-base-sized and a ViT-B/16-sized model (random weights; bf16 autocast on the GPU) on
#    one GPU vs the model's forward over the same batches (target: extract >= 0.9x the forward);
# 2. torchrun extraction on every GPU, bit-identical to the one-GPU store (`cmp` of every shard file), and its
#    rows/s against one GPU (target: N GPUs >= 0.9*N x one GPU);
# 3. a DDP training run on every GPU next to a one-GPU run at the same global batch.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORK="${WORK:-$(mktemp -d)}"
WRITE_ARGS=()
[ -n "${WRITE:-}" ] && WRITE_ARGS=(--write "$ROOT/$WRITE")

if [ "${CPU:-0}" = 1 ]; then
  DEVICE=cpu; NPROC=2; TINY=--tiny; ROWS=512; IMG_ROWS=256; BS=32; SHARD=64
  export OMP_NUM_THREADS=1
else
  DEVICE=cuda; TINY=; ROWS=${ROWS:-16384}; IMG_ROWS=${IMG_ROWS:-1797}; BS=${BS:-256}; SHARD=1024
  NPROC=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  if [ "$NPROC" -lt 1 ]; then echo "gpu_check: no CUDA GPU visible (CPU=1 runs the dry run)" >&2; exit 1; fi
  "$PY" -c "import torch; [print(f'gpu {i}: {torch.cuda.get_device_name(i)}') for i in range(torch.cuda.device_count())]"
fi
echo "== work folder $WORK; device $DEVICE; $NPROC processes"

echo "== random models"
"$PY" benchmarks/random_models.py "$WORK/models" $TINY
BERT="hf:$WORK/models/bert-base"; VIT="timm:$WORK/models/vit-b16"

echo "== 1. extract vs the model's forward over the same batches, one device"
(cd benchmarks && "$PY" extract_speed.py --source "$BERT" --dataset sst2 --split train --rows "$ROWS" \
   --batch-size "$BS" --device "$DEVICE" --rounds 2 "${WRITE_ARGS[@]}")
(cd benchmarks && "$PY" extract_speed.py --source "$VIT" --dataset digits --split train --rows "$IMG_ROWS" \
   --batch-size "$BS" --device "$DEVICE" --rounds 2 "${WRITE_ARGS[@]}")

echo "== 2. $NPROC processes vs 1: bit-identical stores, and rows/s"
extract() {  # extract NPROC CACHE: sst2 train with BERT-base; prints rank 0's result line
  local n=$1 cache=$2 launcher=()
  [ "$n" -gt 1 ] && launcher=(-m torch.distributed.run --standalone --nproc_per_node "$n")
  "$PY" "${launcher[@]}" -m aftpipe extract --dataset sst2 --source "$BERT" --splits train --limit "$ROWS" \
    --shard-rows "$SHARD" --batch-size "$BS" --device "$DEVICE" --cache-dir "$cache" --quiet 2>&1 | grep "shards written"
}
extract 1 "$WORK/one"
extract "$NPROC" "$WORK/many"
ONE=$(find "$WORK/one" -maxdepth 2 -mindepth 2 -type d); MANY=$(find "$WORK/many" -maxdepth 2 -mindepth 2 -type d)
for f in $(cd "$ONE" && find . -path '*/c/*' -type f | sort); do
  cmp -s "$ONE/$f" "$MANY/$f" || { echo "gpu_check: shard $f differs between 1 and $NPROC processes" >&2; exit 1; }
done
echo "bit-identical: every shard file of $NPROC processes equals 1 process's"
(cd benchmarks && "$PY" extract_scaling.py --source "$BERT" --rows "$ROWS" --shard-rows "$SHARD" --batch-size "$BS" \
   --procs "$NPROC" --threads "${OMP_NUM_THREADS:-4}" --device "$DEVICE" --repeats 1 "${WRITE_ARGS[@]}")

echo "== 3. DDP training on $NPROC processes vs 1, same global batch"
DATA="$WORK/data"; mkdir -p "$DATA"
"$PY" - "$DATA" <<'PYEOF'
import sys
from aftpipe.data import load_dataset
out = sys.argv[1]
ds = load_dataset("sst2")
for split, name in (("train", "train"), ("dev", "test")):
    s = ds.split(split)
    rows = ["text\tlabel"] + [f"{t.replace(chr(9), ' ')}\t{y}" for t, y in zip(list(s.inputs)[:4096], s.labels[:4096])]
    open(f"{out}/{name}.tsv", "w").write("\n".join(rows) + "\n")
PYEOF
"$PY" -m aftpipe extract --dataset "tsv:$DATA" --source "$BERT" --device "$DEVICE" --cache-dir "$WORK/cache" --quiet
STORE="$WORK/cache/data/hf-bert-base"
train() {
  local n=$1 out=$2 launcher=()
  [ "$n" -gt 1 ] && launcher=(-m torch.distributed.run --standalone --nproc_per_node "$n")
  "$PY" "${launcher[@]}" -m aftpipe train --dataset "tsv:$DATA" --features "$STORE" --method aft --student textcnn \
    --batch-size 128 --epochs 3 --device "$DEVICE" --out "$out" --quiet | tail -1
}
echo "1 process:  $(train 1 "$WORK/run-1")"
echo "$NPROC processes: $(train "$NPROC" "$WORK/run-$NPROC")"
echo "== done; outputs in $WORK"
