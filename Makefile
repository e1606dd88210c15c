# Two commands do all the set-up: `make demo` runs the main job, `make test` runs the tests.
# Both create the environment from the lock file on first use (python3 is all they assume).

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
DATA ?= base
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: env test lint unit demo airflow-ui mlflow-ui clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	touch $@

env: $(VENV)/.synced

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: env
	$(BIN)/pytest

test: lint unit

demo: env
	$(BIN)/python -m mlops_ops.quickstart --data $(DATA)

airflow-ui: env
	$(BIN)/python -m mlops_ops.quickstart --ui

mlflow-ui: env
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath .mlops)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf .mlops

# The services of a team install on loopback, for trying the package against them (docs/services.md):
# SeaweedFS S3, an MLflow server and Airflow (API server, scheduler, DAG processor, triggerer) on the
# PostgreSQL at 127.0.0.1:5432, wired with the mlflow_default and s3_default connections. Ctrl-C stops it.
AIRFLOW_PORT ?= 8080
MLFLOW_PORT ?= 5000
S3_PORT ?= 8333
.PHONY: services
services: env
	$(BIN)/python -m tests.servers.airflow_server --airflow-port $(AIRFLOW_PORT) --mlflow-port $(MLFLOW_PORT) --s3-port $(S3_PORT)
