# One-word runners. `make demo` and `make test` create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch, installed before the package so that pip does not pull a CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean wheel-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,serve,onnx,faiss,tensorboard,hub]"
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
	BUILD_PYTHON=$(BIN)/python PYTHON=$(PYTHON) TORCH="$(TORCH)" .ci/wheel_check.sh

clean:
	rm -rf $(VENV) runs build *.egg-info
