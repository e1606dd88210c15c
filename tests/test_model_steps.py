"""Train, evaluate and promote through the CLI, on real data with a real MLflow (SQLite) registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from mlops_ops.cli import main
from mlops_ops.demo import DATA_DIR
from tests.conftest import isolated_home

pytestmark = pytest.mark.slow
MODEL = "churn-test"


def cli(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, f"exit {result.exit_code}: {result.stderr[-3000:]}"
    return result


def step(name: str, spec: dict[str, Any], *extra: str, code: int = 0) -> Any:
    result = cli("step", name, "--spec", json.dumps(spec), "--pipeline", "test", "--run-id", "r1", *extra, code=code)
    return json.loads(result.stdout) if code == 0 else result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with isolated_home(tmp_path_factory.mktemp("mlops")) as path:
        yield path


@pytest.fixture(scope="module")
def ingested(home: Path) -> dict[str, Any]:
    return step("ingest", {"source": str(DATA_DIR / "churn.csv"), "target": "churned"})  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def trained(ingested: dict[str, Any]) -> dict[str, Any]:
    spec = {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": 50}}
    return step("train", spec)  # type: ignore[no-any-return]


def test_train_logs_model_and_dataset(trained: dict[str, Any], ingested: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    assert trained["model_uri"].startswith("models:/")
    assert trained["dataset_digest"] == ingested["train"]["digest"]
    assert 0.5 < trained["metrics"]["roc_auc"] <= 1.0
    run = MlflowClient().get_run(trained["mlflow_run_id"])
    assert run.data.params["estimator"] == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert run.data.params["model.max_iter"] == "50"
    assert run.data.tags["mlops.step"] == "train" and run.data.tags["mlops.pipeline"] == "test"
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["train"]
    assert inputs[0].dataset.digest == ingested["train"]["digest"][:36]


def test_identical_training_is_reused_not_repeated(trained: dict[str, Any], ingested: dict[str, Any]) -> None:
    again = step(
        "train", {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": 50}}, "--run-id", "r2"
    )
    assert again["cached"] is True
    assert again["model_uri"] == trained["model_uri"]
    assert again["mlflow_run_id"] == trained["mlflow_run_id"]


def test_refit_fits_again_where_an_identical_training_would_be_reused(
    trained: dict[str, Any], ingested: dict[str, Any]
) -> None:
    spec = {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": 50}, "refit": True}
    again = step("train", spec, "--run-id", "r-refit")
    assert again["cached"] is False
    assert again["mlflow_run_id"] != trained["mlflow_run_id"] and again["model_uri"] != trained["model_uri"]
    assert again["metrics"] == trained["metrics"]  # the same data, spec and seed give the same model


def test_evaluate_then_promote_then_lineage(trained: dict[str, Any], ingested: dict[str, Any]) -> None:
    evaluation = step(
        "evaluate", {"dataset": ingested, "candidate": trained, "registered_model": MODEL, "gates": ["roc_auc >= 0.7"]}
    )
    assert evaluation["passed"] is True and evaluation["champion_version"] is None
    assert evaluation["dataset_digest"] == ingested["eval"]["digest"]
    promoted = step("promote", {"evaluation": evaluation, "registered_model": MODEL})
    assert (promoted["version"], promoted["alias"], promoted["moved"]) == ("1", "champion", True)

    # A retry of the same promotion finds the same version and moves nothing.
    retried = step("promote", {"evaluation": evaluation, "registered_model": MODEL})
    assert (retried["version"], retried["moved"]) == ("1", False)

    chain = json.loads(cli("lineage", MODEL, "--json").stdout)
    assert chain["version"] == "1" and chain["aliases"] == ["champion"]
    assert chain["dataset"]["digest"] == ingested["train"]["digest"]
    assert chain["train_run"]["run_id"] == trained["mlflow_run_id"]
    assert chain["evaluate_run"]["run_id"] == evaluation["mlflow_run_id"]
    assert chain["train_run"]["parent_run_id"] == chain["evaluate_run"]["parent_run_id"]
    assert chain["alias_history"]["champion.previous"] == "none"
    text = cli("lineage", MODEL).stdout
    assert f"{MODEL} version 1 (champion)" in text and ingested["train"]["digest"] in text

    # Second candidate: compared with the champion on the same rows.
    second = step(
        "evaluate", {"dataset": ingested, "candidate": trained, "registered_model": MODEL, "min_improvement": 0.5}
    )
    assert second["champion_version"] == "1"
    assert second["champion_metrics"]["roc_auc"] == pytest.approx(second["candidate_metrics"]["roc_auc"])
    assert second["passed"] is False
    assert "does not beat the champion's" in second["reasons"][0]
    # The champion is this candidate's own model: its scores are the candidate's, and both are plotted.
    from mlflow import MlflowClient

    client = MlflowClient()
    assert second["champion_metrics"] == second["candidate_metrics"]
    report = client.download_artifacts(second["mlflow_run_id"], "evaluation/report.md")
    assert "Note: champion v1 is this candidate's model" in Path(report).read_text()
    plots = {a.path for a in client.list_artifacts(second["mlflow_run_id"], "evaluation")}
    assert {
        "evaluation/roc.png",
        "evaluation/confusion_matrix_candidate.png",
        "evaluation/confusion_matrix_champion.png",
    } <= plots

    # Another model as the candidate: the champion is loaded and scored on the same rows.
    other = step("train", {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": 5}})
    third = step("evaluate", {"dataset": ingested, "candidate": other, "registered_model": MODEL})
    assert third["champion_version"] == "1"
    assert third["champion_metrics"] == pytest.approx(second["candidate_metrics"])
    assert third["candidate_metrics"] != third["champion_metrics"]
    report = client.download_artifacts(third["mlflow_run_id"], "evaluation/report.md")
    assert "this candidate's model" not in Path(report).read_text()


def test_failed_gate_registers_nothing(trained: dict[str, Any], ingested: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    evaluation = step(
        "evaluate",
        {
            "dataset": ingested,
            "candidate": trained,
            "registered_model": "never-registered",
            "gates": ["accuracy >= 0.999"],
        },
    )
    assert evaluation["passed"] is False
    assert evaluation["reasons"][0].startswith("accuracy = ")
    error = step("promote", {"evaluation": evaluation, "registered_model": "never-registered"}, code=5)
    assert "PromotionRejected: candidate rejected by evaluation: accuracy = " in error
    assert "nothing was registered and no alias moved" in error
    assert MlflowClient().search_registered_models(filter_string="name = 'never-registered'") == []


def test_missing_target_column(ingested: dict[str, Any]) -> None:
    error = step("train", {"dataset": ingested, "target": "churn"}, code=3)
    assert "DataError: target column 'churn' is not in the data; columns are: age, tenure_months" in error


def test_unseen_labels_at_evaluation(home: Path, trained: dict[str, Any], tmp_path: Path) -> None:
    frame = pd.read_csv(DATA_DIR / "churn.csv").head(200)
    frame.loc[::3, "churned"] = 7
    path = tmp_path / "unseen.csv"
    frame.to_csv(path, index=False)
    odd = step("ingest", {"source": str(path), "target": "churned", "split": {"stratify": False}})
    error = step("evaluate", {"dataset": odd, "candidate": trained, "registered_model": MODEL}, code=3)
    assert "labels [7] were not seen in training" in error


def test_non_sklearn_estimator_exits_2(ingested: dict[str, Any]) -> None:
    error = step("train", {"dataset": ingested, "target": "churned", "estimator": "subprocess.Popen"}, code=2)
    assert "estimator 'subprocess.Popen' is not allowed: only scikit-learn estimators are" in error


def test_estimator_with_bad_parameters(ingested: dict[str, Any]) -> None:
    error = step("train", {"dataset": ingested, "target": "churned", "estimator_params": {"max_itr": 5}}, code=2)
    assert "rejects its parameters {'max_itr': 5}" in error


def test_estimator_with_a_wrongly_typed_parameter(ingested: dict[str, Any]) -> None:
    error = step("train", {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": "lots"}}, code=2)
    assert "rejects its parameters {'max_iter': 'lots'}" in error and "max_iter" in error


def test_regression_pipeline(ingested: dict[str, Any]) -> None:
    model = step(
        "train",
        {
            "dataset": ingested,
            "target": "monthly_charges",
            "task": "regression",
            "estimator": "sklearn.linear_model.Ridge",
        },
    )
    assert set(model["metrics"]) == {"rmse", "mae", "r2"}
    evaluation = step(
        "evaluate", {"dataset": ingested, "candidate": model, "registered_model": "charges", "gates": ["rmse <= 1000"]}
    )
    assert evaluation["passed"] is True


def test_retry_of_a_step_reuses_its_run_and_model(trained: dict[str, Any], ingested: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    spec = {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": 50}}
    retried = step("train", spec, "--try-number", "2")  # same pipeline run and spec: an Airflow retry or "Clear"
    assert retried["mlflow_run_id"] == trained["mlflow_run_id"]
    assert retried["model_uri"] == trained["model_uri"]
    run = MlflowClient().get_run(trained["mlflow_run_id"])
    assert run.data.tags["mlops.try_number"] == "2"
    experiment = run.info.experiment_id
    train_runs = MlflowClient().search_runs([experiment], "tags.`mlops.step` = 'train' and tags.`mlops.run_id` = 'r1'")
    assert len({r.info.run_id for r in train_runs if r.data.tags.get("mlops.spec_digest")}) == len(train_runs)
