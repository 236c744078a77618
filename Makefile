# vit-digits: `make serve` serves the shipped model on :8000, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build to install: the one version in requirements/torch.txt. Here (x86_64, Python 3.11)
# it comes from the local wheel cache; elsewhere pip downloads it. A CPU-only machine can add
# TORCH_SPEC="-r requirements/torch.txt --index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= -r requirements/torch.txt
HOST ?= 0.0.0.0
PORT ?= 8000
# Two stages of one virtual environment: serving needs only the serving dependencies (ONNX Runtime,
# FastAPI, ...: about 250 MB, no torch); testing, training and exports add torch and the dev tools.
SERVE_STAMP := $(VENV)/.serve-installed
STAMP := $(VENV)/.installed

.PHONY: venv serve test check fast-unit lint typecheck unit docs train evaluate trust card export lock bench docker-smoke clean

$(SERVE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(SERVE_STAMP)

$(STAMP): $(SERVE_STAMP) client/pyproject.toml requirements/torch.txt
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[train,dev]' -e './client[numpy,pillow]'
	touch $(STAMP)

venv: $(STAMP)

serve: $(SERVE_STAMP)
	VIT_DIGITS_HOST=$(HOST) VIT_DIGITS_PORT=$(PORT) $(PY) -m app

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: venv
	$(PY) -m mypy

# The whole suite, spread over processes: most server tests spend their time waiting, so two
# processes on two cores share them well (docs/DEVELOPMENT.md has the times).
TEST_WORKERS ?= 2
unit: venv
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

test: lint typecheck unit

# the inner loop: lint, types and the unit tests that start no server, train no model and drive no
# browser, side by side (mypy and pytest each keep one core busy)
check: venv
	$(MAKE) --no-print-directory -j3 lint typecheck fast-unit

fast-unit: venv
	$(PY) -m pytest -q -m "not slow and not browser and not docker"

# docs/SETTINGS.md's table from app/settings.py (tests/app/test_settings_doc.py fails when they differ)
docs: venv
	$(PY) -m app.settings_doc

train: venv
	$(PY) -m training ship --data-dir ../shared/data/mnist --output checkpoints/vit-digits.safetensors

evaluate: venv
	$(PY) -m training evaluate --data-dir ../shared/data/mnist

# the shipped model's trust report with its per-picture records, committed in docs/results/trust
trust: venv
	$(PY) -m training trust --data-dir ../shared/data/mnist --out-dir docs/results/trust

export: venv
	$(PY) -m training export checkpoints/vit-digits.safetensors

# The serving image's dependencies, pinned with hashes for Linux x86_64 / CPython 3.11 (the image's).
# requirements/gpu.lock: the same plus the torch extra, for Dockerfile.gpu.
LOCK := $(VENV)/bin/uv pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--generate-hashes --no-annotate --quiet --custom-compile-command "make lock"
lock: venv
	$(LOCK) -o requirements/serve.lock
	$(LOCK) --extra torch -c requirements/torch.txt -o requirements/gpu.lock

card: venv
	$(PY) -m training card --data-dir ../shared/data/mnist --notes checkpoints/NOTES.md --trust docs/results/trust

docker-smoke: venv
	bash tests/docker/smoke.sh

bench: venv
	$(PY) bench/train_throughput.py
	$(PY) bench/serve_load.py

clean:
	rm -rf $(VENV) .cache .mypy_cache .pytest_cache .ruff_cache
