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
# Installed modules are compiled once, at install: a process then reads their bytecode instead of compiling
# every module it imports (1-3 s a process where PYTHONDONTWRITEBYTECODE is set, as on many CI machines).
export UV_COMPILE_BYTECODE := 1

.PHONY: env test check lint unit demo airflow-ui mlflow-ui clean

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
	$(BIN)/bandit -q -r mlops_ops -ll

unit: env
	$(BIN)/pytest

test: lint unit

# The inner loop: lint, types, import contracts and the tests that need no server and no Airflow run.
check: lint
	$(BIN)/pytest -q -m "not slow and not integration"

# make demo [DATA=base|drift|corrupt|/path/to/your.csv] [CONF='{"target": "species"}'] [MLOPS_HOME=.mlops]
# make demo SCENARIO=loop: train, score a drifted batch, detect drift, retrain, decide (continuous training)
# CONF reaches the command through the environment, so its quotes need no escaping here.
demo: env
	$(BIN)/mlops-ops demo --data '$(DATA)' $${CONF:+--conf "$$CONF"} $${SCENARIO:+--scenario "$$SCENARIO"}

# Airflow (API server, scheduler, DAG processor, triggerer) on the demo's home at http://127.0.0.1:8080;
# it prints the login (user admin) on every start.
airflow-ui: env
	$(BIN)/mlops-ops demo --ui airflow

# MLflow on the demo's tracking database at http://127.0.0.1:5000 (one worker, no job consumers).
mlflow-ui: env
	$(BIN)/mlops-ops demo --ui mlflow

clean:
	rm -rf .mlops

# The services of a team install on loopback, for trying the package against them (docs/services.md):
# SeaweedFS S3, an MLflow server and Airflow (API server, scheduler, DAG processor, triggerer) on the
# PostgreSQL at 127.0.0.1:5432 (or $MLOPS_POSTGRES_URL), wired with the mlflow_default and s3_default
# connections. Ctrl-C stops it; the servers also die if this command is killed (mlops_ops.devstack).
AIRFLOW_PORT ?= 8080
MLFLOW_PORT ?= 5000
S3_PORT ?= 8333
.PHONY: services
services: env
	$(BIN)/python -m mlops_ops.devstack --airflow-port $(AIRFLOW_PORT) --mlflow-port $(MLFLOW_PORT) --s3-port $(S3_PORT)
