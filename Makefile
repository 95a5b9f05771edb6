# fedgate: `make demo` and `make test` set themselves up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint check clean proto errors-table bench flower-env fuzz postgres chromium experiment

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing fedgate and its dependencies into $(VENV) (first run only)..."
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c constraints.txt -e '.[dev,report,bench,ray]' 2>&1 | grep -v 'is ignored' || true
	@$(BIN)/python -c "import fedgate, torch, torchvision" && touch $@

# The dashboard's URL is the first line it prints (hence no echo of the command);
# DEMO_ARGS=--keep-serving leaves the server (and its dashboard) up after the run.
demo: $(STAMP)
	@$(BIN)/fedgate demo $(DEMO_ARGS)

test: $(STAMP)
	@bash tools/postgres.sh || echo "make test: no PostgreSQL (see above); its tests skip, saying why"
	@bash tools/chromium.sh || echo "make test: no Chromium (see above); the browser tests skip, saying why"
	$(BIN)/python -m pytest

# PostgreSQL for the store's tests: installed from the distribution's packages if missing
# (as root with apt), its cluster started, role fedgate/fedgate with CREATEDB. Idempotent.
# `make test` tries it and goes on without it; CI (.ci/run) requires it.
postgres:
	bash tools/postgres.sh

# Debian's Chromium for the dashboard's browser tests (Playwright drives it headless):
# installed with apt when /usr/bin/chromium is missing and we are root. `make test` tries
# it and goes on without it; CI (.ci/run) requires it.
chromium:
	bash tools/chromium.sh

# Longer fuzzing than `make test` runs: every codec's decoder (hypothesis) and the REST API
# (schemathesis against a live server), with many more examples each.
fuzz: $(STAMP)
	FEDGATE_FUZZ=1 $(BIN)/python -m pytest -q tests/codecs/test_fuzz.py \
		tests/transport/rest/test_schemathesis.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

clean:
	rm -rf $(VENV) .venv-flower .pytest_cache .mypy_cache .ruff_cache runs

proto: $(STAMP)
	$(BIN)/python tools/gen_proto.py

# The README's errors table, from fedgate/transport/errors_table.py (a test fails if stale).
errors-table: $(STAMP)
	$(BIN)/python tools/errors_table.py

# Flower, for the flower bench suite, in a virtualenv of its own: flwr pins protobuf<7 and
# fastapi/uvicorn/starlette minors that fedgate's .venv cannot take (bench/flower/requirements.txt).
# Without it the suite measures fedgate alone and says to run this.
FLOWER_VENV := .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed-stamp

$(FLOWER_STAMP): bench/flower/requirements.txt
	@test -x $(FLOWER_VENV)/bin/python || $(PYTHON) -m venv $(FLOWER_VENV)
	@echo "installing torch (CPU) and flwr into $(FLOWER_VENV) (first run only)..."
	$(FLOWER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r bench/flower/requirements.txt 2>&1 | grep -v 'is ignored' || true
	@$(FLOWER_VENV)/bin/python -c "import torch; from flwr.server import start_server; \
		from flwr.client import start_client" && touch $@

flower-env: $(FLOWER_STAMP)

# The digits experiment (grid + centralized line) and its report, in runs/experiment/.
experiment: $(STAMP)
	$(BIN)/fedgate experiment bench/experiments/digits-small.toml --out runs/experiment --threads 1
	$(BIN)/fedgate report runs/experiment

# Every bench suite and the report (about 14 minutes on 2 cores); results in runs/bench/.
BENCH := runs/bench
bench: $(STAMP) $(FLOWER_STAMP)
	$(BIN)/fedgate bench codecs --out $(BENCH)/codecs.json
	$(BIN)/fedgate bench transports --out $(BENCH)/transports.json
	$(BIN)/fedgate bench rounds --out $(BENCH)/rounds.json
	$(BIN)/fedgate bench accuracy --out $(BENCH)/accuracy.json
	$(BIN)/fedgate bench flower --out $(BENCH)/flower.json
	$(BIN)/fedgate report $(BENCH)/codecs.json $(BENCH)/transports.json $(BENCH)/rounds.json \
		$(BENCH)/accuracy.json \
		$(BENCH)/flower.json --out $(BENCH)/report
