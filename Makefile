# Two commands on a fresh machine:
#   make run    set up, then search (resnet-budget on a GPU, cpu-small on a CPU; SQLite store)
#   make test   set up, then run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The real search on a GPU; on a machine without one, the study sized for a CPU.
STUDY ?= $(shell $(BIN)/python -c "import torch; print('resnet-budget' if torch.cuda.is_available() else 'cpu-small')")
DATA ?= ../shared/data/cifar10-jpeg.tar.gz
ARGS ?=

.PHONY: setup run test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The local CPU wheel first, so that the torch requirement installs nothing more.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/search run --study $(STUDY) --data $(DATA) $(ARGS)

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check search space models trainers tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/space_dry_run.py
	$(BIN)/python benchmarks/data_load.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
