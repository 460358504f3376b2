# One-word runners. `make demo` and `make test` create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
# PyTorch with a torchvision built for it, installed before the package so that pip does not pick
# a torch of its own. torchvision's wheels on PyPI need the torch release they were built with:
# torch 2.14.1 with torchvision 0.29.1 (any machine, CUDA or not; both run on the CPU). On a
# CPU-only machine without torchvision, the CPU build alone also works: TORCH=torch==2.13.0
# (and leave out the vision extra: EXTRAS=dev,serve,...).
TORCH ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,serve,onnx,faiss,tensorboard,hub,vision
# The wheel check installs the wheel beside the CPU build of an older torch and no extras, so the
# package is checked against a second torch release too.
WHEEL_TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean wheel-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

# Trains on the background alphabets of the built-in glyphs (rendered from matplotlib's fonts on
# first use) and measures one-shot accuracy on its evaluation alphabets, never seen in training.
demo: setup
	$(BIN)/siamnet data info glyphs
	$(BIN)/siamnet data show glyphs --out runs/demo-pairs.png
	$(BIN)/siamnet train --data glyphs --time-budget 90 --out runs/demo --overwrite
	$(BIN)/siamnet evaluate runs/demo --figures runs/demo/figures

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

# Build the wheel and sdist into dist/, twine-check them, install the wheel (not editable) into a
# fresh virtual environment and run siamnet from it.
wheel-check: setup
	BUILD_PYTHON=$(BIN)/python PYTHON=$(PYTHON) TORCH="$(WHEEL_TORCH)" .ci/wheel_check.sh

clean:
	rm -rf $(VENV) runs build *.egg-info
