"""The UI side of mlops-ops: operator extra links, the Models view (plugin FastAPI app), its access rules."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.operators import links

MANIFESTS: dict[str, dict[str, Any]] = {
    "train": {"step": "train", "mlflow_run_id": "r-train"},
    "validate": {"step": "validate", "mlflow_run_id": "r-val"},
    "evaluate": {"step": "evaluate", "mlflow_run_id": "r-eval"},
    "promote": {"step": "promote", "mlflow_run_id": "r-prom", "model_name": "churn model", "version": "3"},
    "drift": {"step": "drift", "mlflow_run_id": "r-drift"},
    "failed": {},
}


def _links(manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setattr(links, "_manifest", lambda ti_key: manifest)
    op = type("Op", (), {"mlflow_conn_id": None})()
    return {link.name: link.get_link(op, ti_key=None) for link in links.STEP_LINKS}  # type: ignore[arg-type]


def test_every_step_links_to_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_UI_URL", "http://mlflow.example:5000/")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080/")
    found = {step: _links(manifest, monkeypatch) for step, manifest in MANIFESTS.items()}
    assert found["train"] == {
        "MLflow run": "http://mlflow.example:5000/#/runs/r-train",
        "Model version": "",
        "Validation report": "",
        "Evaluation plots": "",
        "Drift report": "",
    }
    assert found["validate"]["Validation report"] == "http://airflow.example:8080/mlops/runs/r-val/report"
    assert found["evaluate"]["Evaluation plots"] == "http://airflow.example:8080/mlops/runs/r-eval/report"
    assert found["drift"]["Drift report"] == "http://airflow.example:8080/mlops/runs/r-drift/report"
    assert found["promote"]["Model version"] == "http://mlflow.example:5000/#/models/churn%20model/versions/3"
    assert set(found["failed"].values()) == {""}


def test_mlflow_ui_url_comes_from_the_setting_then_the_connection_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLOPS_MLFLOW_UI_URL", raising=False)
    assert links.mlflow_ui_url(None) == links.DEFAULT_MLFLOW_UI_URL
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_UI_TEST", '{"conn_type": "mlflow", "host": "http://tracking:5000/"}')
    assert links.mlflow_ui_url("mlflow_ui_test") == "http://tracking:5000"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DB_TEST", '{"conn_type": "mlflow", "host": "sqlite:///x.db"}')
    assert links.mlflow_ui_url("mlflow_db_test") == links.DEFAULT_MLFLOW_UI_URL
    monkeypatch.setenv("MLOPS_MLFLOW_UI_URL", "https://mlflow.corp/")
    assert links.mlflow_ui_url("mlflow_ui_test") == "https://mlflow.corp"


def test_step_operators_carry_the_links() -> None:
    from mlops_ops.operators import EvaluateOperator, MlopsStepOperator

    names = [link.name for link in MlopsStepOperator.operator_extra_links]
    assert names == ["MLflow run", "Model version", "Validation report", "Evaluation plots", "Drift report"]
    assert EvaluateOperator.operator_extra_links == MlopsStepOperator.operator_extra_links


def test_the_links_survive_dag_serialization() -> None:
    """The API server shows the links the worker stored; serialization keeps their names and XCom keys."""
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from mlops_ops.operators import IngestOperator
    from mlops_ops.operators.base import MlopsStepOperator

    with DAG("links_serialized", schedule=None) as dag:
        IngestOperator(task_id="ingest", source="data.csv")
    task = DagSerialization.to_dict(dag)["dag"]["tasks"][0]["__var"]
    assert task["_operator_extra_links"] == {
        link.name: link.xcom_key for link in MlopsStepOperator.operator_extra_links
    }


# --------------------------------------------------------------------------------------------- the view

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


@dataclass
class Seeded:
    """A registry made as the pipeline makes it: two versions, champion moved twice, one review."""

    db: Path
    runs: dict[str, str]
    parent: str


def _step_runs(mlflow_client: Any, exp: str, pipeline_run: str, tmp: Path) -> tuple[str, dict[str, str]]:
    from mlops_ops.lineage import tags as t

    identity = {t.PIPELINE: "mlops_training", t.PIPELINE_RUN_ID: pipeline_run}
    parent = mlflow_client.create_run(exp, tags={**identity, t.ROLE: t.ROLE_PIPELINE}).info.run_id
    runs = {}
    for step in ("ingest", "validate", "train", "evaluate", "promote"):
        tags = {**identity, t.ROLE: t.ROLE_STEP, t.STEP: step, t.TRY_NUMBER: "1", "mlflow.parentRunId": parent}
        runs[step] = mlflow_client.create_run(exp, tags=tags, run_name=step).info.run_id
        mlflow_client.set_tag(parent, t.step_run_id(step), runs[step])
        mlflow_client.set_terminated(runs[step])
    mlflow_client.log_text(runs["validate"], "# Validation\n\n41 of 41 expectations passed.", "validation/report.md")
    mlflow_client.log_text(
        runs["evaluate"], "| metric | candidate |\n|-|-|\n| roc_auc | 0.91 |", "evaluation/report.md"
    )
    (tmp / "roc.png").write_bytes(PNG)
    mlflow_client.log_artifact(runs["evaluate"], str(tmp / "roc.png"), "evaluation")
    mlflow_client.log_metric(runs["train"], "roc_auc", 0.91)
    return parent, runs


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _seed(tmp_path_factory.mktemp("seeded"), monkeypatch)


def _seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    from mlops_ops import lineage
    from mlops_ops.lineage import tags as t
    from mlops_ops.lineage import views

    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("MLOPS_MLFLOW_UI_URL", "http://mlflow.test")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.test")
    mlflow_client = lineage.client()
    exp = mlflow_client.create_experiment("mlops_training", artifact_location=(tmp_path / "art").as_uri())
    mlflow_client.create_registered_model("churn")
    for number, pipeline_run in ((1, "manual__1"), (2, "manual__2")):
        parent, runs = _step_runs(mlflow_client, exp, pipeline_run, tmp_path)
        version_tags = {
            t.PIPELINE: "mlops_training",
            t.PIPELINE_RUN_ID: pipeline_run,
            t.TRAIN_RUN_ID: runs["train"],
            t.EVALUATE_RUN_ID: runs["evaluate"],
            t.EVAL_DATASET_DIGEST: "ab" * 32,
            t.DATASET_URI: "s3://bucket/churn.parquet",
            t.metric("roc_auc"): f"0.9{number}",
        }
        mlflow_client.create_model_version("churn", f"runs:/{runs['train']}/model", runs["train"], version_tags)
    lineage.move_alias("churn", "champion", "1", "passed evaluation")
    lineage.move_alias("churn", "champion", "2", "approved: better on the same rows", actor="alice")
    _, rejected = _step_runs(mlflow_client, exp, "manual__3", tmp_path)
    views.record_review(rejected["evaluate"], model="churn", decision="rejected", by="bob", comment="too risky")
    return Seeded(db, runs, parent)


@pytest.fixture
def view(seeded: Seeded) -> Any:
    """The plugin's app with Airflow's access check left out (it is tested on its own below)."""
    from fastapi.testclient import TestClient

    from mlops_ops.ui import app as ui_app

    app = ui_app.create_app()
    app.dependency_overrides[ui_app._allowed] = lambda: None
    return TestClient(app)


def test_the_models_page_lists_champion_and_challenger(view: Any) -> None:
    page = view.get("/models")
    assert page.status_code == 200, page.text
    assert 'href="http://airflow.test/mlops/models/churn"' in page.text
    assert 'href="http://airflow.test/mlops/models/churn/versions/2">version 2<' in page.text


def test_a_model_page_shows_versions_metrics_history_and_reviews(view: Any) -> None:
    page = view.get("/models/churn").text
    assert "<th>roc_auc</th>" in page and "<td>0.92</td>" in page and "<td>0.91</td>" in page
    assert "approved: better on the same rows" in page and "<td>alice</td>" in page
    assert '<span class="rejected">rejected</span>' in page and "<td>bob</td>" in page and "too risky" in page
    assert view.get("/models/nope").status_code == 404


def test_a_version_page_draws_the_chain_with_links_and_reports_inline(view: Any, seeded: Seeded) -> None:
    page = view.get("/models/churn/versions/2").text
    for step in ("ingest", "validate", "train", "evaluate", "promote"):
        assert f"data-step='{step}'" in page
    assert 'href="http://airflow.test/dags/mlops_training/runs/manual__2/tasks/train?try_number=1"' in page
    assert f'href="http://mlflow.test/#/runs/{seeded.runs["train"]}"' in page
    assert "41 of 41 expectations passed." in page
    assert "<td>0.91</td>" in page  # the evaluation report's table, rendered
    image = f"/runs/{seeded.runs['evaluate']}/images/evaluation/roc.png"
    assert f"src='http://airflow.test/mlops{image}'" in page
    assert view.get(image).content == PNG


def test_reports_serve_only_report_images_and_escape_what_they_show(view: Any, seeded: Seeded) -> None:
    evaluate = seeded.runs["evaluate"]
    assert view.get(f"/runs/{evaluate}/images/../../etc/passwd.png").status_code == 404
    assert view.get(f"/runs/{evaluate}/images/model/MLmodel").status_code == 404
    assert view.get(f"/runs/{seeded.runs['train']}/report").status_code == 404
    assert view.get(f"/runs/{seeded.runs['validate']}/report").status_code == 200
    missing = view.get("/models/%3Cscript%3E")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"


def test_pages_write_nothing(view: Any, seeded: Seeded) -> None:
    before = hashlib.sha256(seeded.db.read_bytes()).hexdigest()
    for path in ("/models", "/models/churn", "/models/churn/versions/1", f"/runs/{seeded.runs['evaluate']}/report"):
        assert view.get(path).status_code == 200
    assert hashlib.sha256(seeded.db.read_bytes()).hexdigest() == before
    assert view.post("/models").status_code == 405


def test_anonymous_requests_are_refused_when_auth_is_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, airflow_db: Path
) -> None:
    """The simple auth manager (not all-admins): no token, 401; a bad token, 403; a user's token, through."""
    from airflow.api_fastapi import app as airflow_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from mlops_ops.ui.app import create_app

    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "viewer:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "passwords.json"))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "x" * 32)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    airflow_app.purge_cached_app()
    manager = airflow_app.init_auth_manager()
    client = TestClient(create_app())
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403
    token = manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))
    assert client.get("/models", cookies={"_token": token}).status_code == 200
    assert client.get("/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    airflow_app.purge_cached_app()


# ----------------------------------------------------------------------------------------- approval

EVALUATION = {
    "step": "evaluate",
    "passed": True,
    "reasons": ["roc_auc 0.91 >= 0.75", "beats the champion by 0.02"],
    "candidate": {"mlflow_run_id": "r-train"},
    "candidate_metrics": {"roc_auc": 0.91, "accuracy": 0.85},
    "champion_version": "3",
    "champion_metrics": {"roc_auc": 0.89, "accuracy": 0.86},
    "mlflow_run_id": "r-eval",
}


def _approval(**kwargs: Any) -> Any:
    from mlops_ops.operators.approval import PromotionApprovalOperator

    return PromotionApprovalOperator(task_id="approve", registered_model="churn", **kwargs)


def test_the_reviewer_sees_candidate_against_champion_the_reasons_and_links(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_ops.operators.approval import summary

    monkeypatch.setenv("MLOPS_MLFLOW_UI_URL", "http://mlflow.test")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.test")
    body = summary(EVALUATION, "churn", None)
    assert "| metric | candidate | champion v3 |" in body
    assert "| roc_auc | 0.9100 | 0.8900 |" in body and "| accuracy | 0.8500 | 0.8600 |" in body
    assert "roc_auc 0.91 >= 0.75; beats the champion by 0.02" in body
    assert "(http://airflow.test/mlops/runs/r-eval/report)" in body
    assert "(http://mlflow.test/#/runs/r-train)" in body
    assert "(http://airflow.test/mlops/models/churn/versions/3)" in body


def test_approval_waits_only_under_the_approval_policy_and_after_a_pass() -> None:
    from datetime import timedelta

    op = _approval(evaluation=EVALUATION, policy="champion")
    assert op.execute({}) == {"approved": True, "required": False, "by": "", "comment": ""}
    failed = _approval(evaluation={**EVALUATION, "passed": False}, policy="approval")
    assert failed.execute({})["approved"] is False
    waiting = _approval(evaluation=EVALUATION)
    assert waiting.response_timeout == timedelta(days=3) and waiting.defaults == ["Reject"]
    assert waiting.options == ["Approve", "Reject"] and "comment" in waiting.params


def test_a_review_is_recorded_on_the_evaluation_run(seeded: Seeded, tmp_path: Path) -> None:
    from mlops_ops.lineage import views

    op = _approval(evaluation={**EVALUATION, "mlflow_run_id": seeded.runs["evaluate"]}, mlflow_conn_id=None)
    op.tracking_uri = f"sqlite:///{seeded.db}"
    op._record(False, "carol", "not on a Friday")
    found = [r for r in views.reviews("churn") if r["by"] == "carol"]
    assert found and found[0]["decision"] == "rejected" and found[0]["comment"] == "not on a Friday"
