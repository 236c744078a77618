# vit-digits: `make serve` serves the shipped model on :8000, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build to install. Here (x86_64, Python 3.11) these come from the local wheel cache;
# elsewhere pip downloads them. A CPU-only machine can use TORCH_SPEC="torch torchvision
# --index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
HOST ?= 0.0.0.0
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: venv serve test lint typecheck unit train evaluate trust card bench docker-smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

venv: $(STAMP)

serve: venv
	VIT_DIGITS_HOST=$(HOST) VIT_DIGITS_PORT=$(PORT) $(PY) -m app

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: venv
	$(PY) -m mypy

unit: venv
	$(PY) -m pytest

test: lint typecheck unit

train: venv
	$(PY) -m training ship --data-dir ../shared/data/mnist --output checkpoints/vit-digits.safetensors

evaluate: venv
	$(PY) -m training evaluate --data-dir ../shared/data/mnist

trust: venv
	$(PY) -m training trust --data-dir ../shared/data/mnist

card: venv
	$(PY) -m training card --data-dir ../shared/data/mnist --notes checkpoints/NOTES.md

docker-smoke: venv
	bash tests/docker/smoke.sh

bench: venv
	$(PY) bench/train_throughput.py
	$(PY) bench/serve_load.py

clean:
	rm -rf $(VENV) .cache .mypy_cache .pytest_cache .ruff_cache
