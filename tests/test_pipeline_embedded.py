"""mlops_training end to end in real Airflow (the embedded default: SQLite, local folders, local runner).

Runs ``python -m mlops_ops.quickstart`` - what ``make demo`` runs - so Airflow executes the DAG and
each step runs as its own ``mlops-ops step`` process.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.servers.embedded import MODEL, EmbeddedDemo, clean_env, lineage, quickstart

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def home(embedded_demo: EmbeddedDemo) -> Path:
    return embedded_demo.home


@pytest.fixture(scope="module")
def first(embedded_demo: EmbeddedDemo) -> subprocess.CompletedProcess[str]:
    code, output = embedded_demo.finish()
    return subprocess.CompletedProcess(["quickstart"], code, output, "")


def chain_of(home: Path) -> dict[str, Any]:
    return lineage(MODEL, clean_env(MLOPS_HOME=str(home)))


def test_demo_batch_is_promoted_with_complete_lineage(home: Path, first: subprocess.CompletedProcess[str]) -> None:
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert ": success in " in first.stdout
    assert "registry    churn-classifier v1 @champion (set)" in first.stdout
    chain = chain_of(home)
    assert chain["version"] == "1" and chain["aliases"] == ["champion"]
    assert chain["pipeline"] == "mlops_training" and str(chain["pipeline_run"]).startswith("manual__")
    assert chain["validation"]["result_uri"].startswith("file://")  # type: ignore[index]
    train, evaluate = chain["train_run"], chain["evaluate_run"]
    assert train["status"] == evaluate["status"] == "FINISHED"  # type: ignore[index]
    assert train["parent_run_id"] == evaluate["parent_run_id"]  # type: ignore[index]
    assert train["datasets"][0]["digest"] == chain["dataset"]["digest"][:36]  # type: ignore[index]

    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.get_run(train["parent_run_id"])  # type: ignore[index]
    assert parent.data.tags["mlops.run_id"] == chain["pipeline_run"]
    steps = {k.split(".")[2] for k in parent.data.tags if k.startswith("mlops.step.")}
    assert steps == {"ingest", "validate", "train", "evaluate", "promote"}
    child = client.get_run(parent.data.tags["mlops.step.train.run_id"])
    assert child.data.tags["airflow.task_id"] == "train"
    assert child.data.tags["airflow.run_id"] == chain["pipeline_run"]


def test_corrupt_batch_stops_at_validation(home: Path, first: subprocess.CompletedProcess[str]) -> None:
    done = quickstart(home, "--data", "corrupt")
    assert done.returncode == 1
    assert ": failed in " in done.stdout
    assert "step validate failed: ValidationFailed: " in done.stdout
    assert "on column 'age'" in done.stdout and "unexpected values" in done.stdout
    assert "train=not run" in done.stdout
    chain = chain_of(home)
    assert chain["version"] == "1" and chain["aliases"] == ["champion"]


def test_rerun_creates_no_duplicate_version(home: Path, first: subprocess.CompletedProcess[str]) -> None:
    done = quickstart(home, "--data", "base")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "churn-classifier v1 @champion (unchanged)" in done.stdout
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert [str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")] == ["1"]
