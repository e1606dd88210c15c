"""mlops_training end to end in real Airflow (the embedded default: SQLite, local folders, local runner).

Runs ``mlops-ops demo`` - what ``make demo`` runs - so Airflow executes the DAG and each step runs as its
own ``mlops-ops step`` process. The report is checked against what Airflow and MLflow recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlops_ops import __version__
from mlops_ops.demo import SUITE_PATH
from mlops_ops.demo.runstate import MetadataDB
from tests.servers.embedded import MODEL, EmbeddedDemo, clean_env, lineage, quickstart

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = ("ingest", "validate", "train", "evaluate", "promote")


@pytest.fixture(scope="module")
def home(embedded_demo: EmbeddedDemo) -> Path:
    return embedded_demo.home


@pytest.fixture(scope="module")
def first(embedded_demo: EmbeddedDemo) -> subprocess.CompletedProcess[str]:
    code, output = embedded_demo.finish()
    return subprocess.CompletedProcess(["mlops-ops", "demo"], code, output, "")


def chain_of(home: Path) -> dict[str, Any]:
    return lineage(MODEL, clean_env(MLOPS_HOME=str(home)))


def client(home: Path) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion(home: Path) -> str:
    return str(client(home).get_model_version_by_alias(MODEL, "champion").version)


def airflow_db(home: Path) -> MetadataDB:
    return MetadataDB(f"sqlite:///{home / 'airflow' / 'airflow.db'}")


def last_run(home: Path) -> tuple[str, dict[str, Any]]:
    db = airflow_db(home)
    run = db.run_after("mlops_training", db.last_run_number("mlops_training") - 1)
    assert run is not None
    return run.run_id, db.tasks("mlops_training", run.run_id)


def test_demo_batch_is_promoted_with_complete_lineage(home: Path, first: subprocess.CompletedProcess[str]) -> None:
    assert first.returncode == 0, first.stdout[-3000:]
    run_id, tasks = last_run(home)
    assert f"Run {run_id} of mlops_training: success in " in first.stdout
    for step in STEPS:  # a line as each step started and one as it ended, in order
        assert f"  {step:<9} running  try 1" in first.stdout
        assert f"  {step:<9} success  " in first.stdout and tasks[step].state == "success"
    assert "  ingest    success" in first.stdout.split("  validate  running")[0]
    assert "  promote     churn-classifier v1 took @champion: passed gates, first champion" in first.stdout
    assert "  registry    churn-classifier@champion is v1 in MLflow now" in first.stdout
    assert airflow_db(home).paused(["mlops_training", "mlops_scoring", "mlops_retraining"]) == []

    chain = chain_of(home)
    assert chain["version"] == "1" and chain["aliases"] == ["champion"]
    assert (chain["pipeline"], chain["pipeline_run"]) == ("mlops_training", run_id)
    data = chain["data"]
    assert data["source_uri"].endswith("mlops_ops/demo/data/churn.csv")
    digests = {data["snapshot"]["sha256"], data["train_partition"]["sha256"], data["eval_partition"]["sha256"]}
    assert len(digests) == 3 and all(len(d) == 64 for d in digests)
    assert chain["train_run"]["datasets"][0]["digest"] == data["train_partition"]["sha256"][:36]
    suite = json.loads(SUITE_PATH.read_text())
    assert chain["validation"]["expectations"] == len(suite["expectations"]) and chain["validation"]["failed"] == 0
    assert chain["training"]["estimator"] == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert chain["training"]["params"] == {"learning_rate": 0.1, "max_iter": 100} and chain["training"]["seed"] == 42
    assert chain["airflow"] == {"dag_id": "mlops_training", "run_id": run_id, "task_id": "train", "try_number": 1}
    assert chain["package_version"] == __version__
    evaluation = chain["evaluation"]
    assert evaluation["gates"] == ["roc_auc >= 0.75"] and evaluation["passed"] is True
    assert evaluation["champion_version"] is None and evaluation["candidate_metrics"]["roc_auc"] > 0.75


def test_corrupt_batch_fails_at_validation_with_its_error(home: Path, first: subprocess.CompletedProcess[str]) -> None:
    done = quickstart(home, "--data", "corrupt")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    run_id, tasks = last_run(home)
    assert tasks["validate"].state == "failed" and tasks["train"].state == "upstream_failed"
    assert f"Run {run_id} of mlops_training: failed in " in done.stdout
    failed = [line for line in done.stdout.splitlines() if line.startswith("  validate  failed ")]
    assert len(failed) == 1 and "ValidationFailed: 4 of 29 expectations failed in churn_suite: " in failed[0]
    assert "on column 'age'" in failed[0] and "unexpected values" in failed[0]
    assert "  train     upstream_failed not run: an upstream step failed" in done.stdout
    assert "  registry    churn-classifier@champion is v1 in MLflow now" in done.stdout
    assert champion(home) == "1"


def test_a_rerun_after_drift_reports_the_real_champion(home: Path, first: subprocess.CompletedProcess[str]) -> None:
    drift = quickstart(home, "--data", "drift")
    assert drift.returncode == 0, drift.stdout[-3000:]
    assert "  drift       this batch has drifted: v1 roc_auc " in drift.stdout
    after_drift = champion(home)
    assert f"  registry    churn-classifier@champion is v{after_drift} in MLflow now" in drift.stdout

    done = quickstart(home, "--data", "base")
    assert done.returncode == 0, done.stdout[-3000:]
    # Ingest, validate and train of the base batch are the first run's results, reused without a process.
    for name in ("ingest", "validate", "train"):
        assert any(
            line.startswith(f"  {name:<9} success ") and "  reused: " in line for line in done.stdout.splitlines()
        )
    assert "  reused      ingest, validate, train: results of an identical earlier run (run " in done.stdout
    now = champion(home)
    assert f"  registry    churn-classifier@champion is v{now} in MLflow now" in done.stdout
    promote = [line for line in done.stdout.splitlines() if line.startswith("  promote     ")]
    reason = (
        client(home)
        .get_run(
            airflow_db(home).result("mlops_training", last_run(home)[0], "promote")["mlflow_run_id"]  # type: ignore[index]
        )
        .data.tags["mlops.promote.reason"]
    )
    assert len(promote) == 1 and promote[0].endswith(reason)
    assert ("took @champion" in promote[0]) == (now != after_drift)
    versions = sorted(str(v.version) for v in client(home).search_model_versions(f"name = '{MODEL}'"))
    assert versions == sorted({"1", after_drift})  # the base training is reused: no new version


def test_a_regression_table_from_outside_the_project_trains_with_the_task_defaults(tmp_path: Path) -> None:
    """scikit-learn's diabetes table (442 patients, a real study) as a user's CSV: only target and task given."""
    from sklearn.datasets import load_diabetes

    data = tmp_path / "data" / "diabetes.csv"
    data.parent.mkdir()
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(data, index=False)
    home = tmp_path / "home"
    conf = '{"target": "target", "task": "regression", "registered_model": "diabetes"}'
    done = quickstart(home, "--data", str(data), "--conf", conf)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "  train     success " in done.stdout and "HistGradientBoostingRegressor" in done.stdout
    assert "  promote     diabetes v1 took @champion: passed gates, first champion (r2=" in done.stdout
    run_id, tasks = last_run(home)
    assert {t.state for t in tasks.values()} == {"success"}
    evaluation = airflow_db(home).result("mlops_training", run_id, "evaluate")
    assert evaluation is not None and evaluation["passed"] and evaluation["compare_metric"] == "r2"
    recorded = lineage("diabetes", clean_env(MLOPS_HOME=str(home)))
    assert recorded["training"]["estimator"] == "sklearn.ensemble.HistGradientBoostingRegressor"


def test_a_training_on_reused_ingest_and_validation_keeps_its_whole_lineage(tmp_path: Path) -> None:
    """Only the training changed: ingest and validate are the first run's, and the lineage still names them."""
    assert quickstart(tmp_path, "--data", "base").returncode == 0
    conf = {"estimator_params": {"max_iter": 60, "learning_rate": 0.1}, "min_improvement": -1.0}
    done = quickstart(tmp_path, "--data", "base", "--conf", json.dumps(conf))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "  reused      ingest, validate: results of an identical earlier run" in done.stdout
    assert "took @champion from v1" in done.stdout
    env = clean_env(MLOPS_HOME=str(tmp_path))
    new = lineage(MODEL, env)
    shown = subprocess.run(
        [sys.executable, "-m", "mlops_ops.cli", "lineage", MODEL, "--version", "1", "--json"],
        env=env, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    old = json.loads(shown.stdout)
    assert new["version"] == "2" and new["training"] != old["training"]
    assert new["data"]["source_uri"] == old["data"]["source_uri"] and new["data"]["source_uri"]
    assert new["data"]["snapshot"] == old["data"]["snapshot"] and new["data"]["snapshot"]["sha256"]
    assert new["validation"]["suite"] == old["validation"]["suite"] == str(SUITE_PATH)
