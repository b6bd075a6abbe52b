# The two set-up commands of the README. `.ci/run` calls exactly these.
PYTHON ?= python3.11
VENV ?= .venv
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)

.PHONY: install test test-heavy demo peers

# Python deps (pinned in pyproject.toml), then `lineup setup`: Delta jars staged from Maven Central with
# checked sha256, and later the default model pack. Reruns are cheap: verified artefacts are kept.
install:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test,s3,heif]'
	$(VENV)/bin/lineup setup
	@# A fast local S3 server for bench/bench_storage.py (Go, gofakes3); the tests use moto from PyPI.
	$(GO) version >/dev/null 2>&1 && (cd tools/s3server && $(GO) build -o ../../.tools/s3server .) || \
	  echo "no Go toolchain: bench/bench_storage.py will use moto (slower, it shares the CPUs)" >&2
	@# Airflow lives in its own venv (its pins clash with ours); the example DAG's test drives it.
	$(PYTHON) -m venv .airflow-venv
	.airflow-venv/bin/pip install --quiet -r examples/airflow/requirements.txt
	@# Debian's Chromium renders the audit report in its test; apt needs root (CI runs as root).
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "install Debian's chromium (apt-get install chromium) for the audit report test" >&2

# Lint, format, types, layers, the docs site and the doctests first (about a minute), then the default
# suite (everything not marked heavy); fetches nothing.
test:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mkdocs build --strict --site-dir .site
	$(VENV)/bin/python -m pytest -q --doctest-modules jobs lineup
	$(VENV)/bin/python -m pytest -m "not heavy" --durations=25

# The long fault-injection tests (killed Python workers, a killed query): CI runs them after `make test`.
test-heavy:
	$(VENV)/bin/python -m pytest -m heavy --durations=10

# The main job, end to end on this machine: LFW from ../shared/data (or LINEUP_DATA_DIR) through every job.
demo:
	$(VENV)/bin/lineup demo

# autofaiss for bench/bench_peers.py only, in its own venv: its pins (numpy<2, hence an older pyarrow) clash
# with Lineup's; never a runtime dependency.
peers:
	$(PYTHON) -m venv .peers-venv
	.peers-venv/bin/pip install --quiet -r bench/peers/requirements.txt
