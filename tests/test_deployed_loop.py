"""The continuous-training loop on Airflow as deployed: a landed batch, drift, a retrain request, the gate.

Real scheduler, triggerer, DAG processor and API server on PostgreSQL, the MLflow server and S3 (the
``tests/servers`` fixtures). Nothing is triggered by hand except the first training:

1. ``mlops_training`` (REST API) makes the champion of ``churn-classifier``;
2. a drifted batch dropped into the inbox starts ``mlops_scoring`` through the ``inbox-batches`` Asset's
   watcher; its drift emits a ``retrain-request/churn-classifier`` event, which starts ``mlops_retraining``;
   the deployment's cooldown (the ``mlops_retraining_cooldown_hours`` Variable) is 0, so its gate trains;
3. the deployment sets the cooldown to 6 h; a second batch that drifts from the (new) champion's training
   data starts scoring and retraining again,
   and that retraining's gate refuses to train inside the cooldown: its chain is skipped and its note says why.

Every assertion is on what the REST API lists: DAG runs, their types and notes, task states, XComs, asset events.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlops_ops.demo import DATA_DIR
from tests.servers.airflow_server import AirflowApi, AirflowServer, add_connections

if TYPE_CHECKING:
    from tests.servers.mlflow_server import MlflowServer
    from tests.servers.s3 import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "churn-classifier"
DAGS = ("mlops_training", "mlops_scoring", "mlops_retraining")
COOLDOWN = "mlops_retraining_cooldown_hours"
TIMEOUT = 900.0
CHAIN = ("ingest", "validate", "train", "evaluate", "approve", "promote")


@dataclass
class Loop:
    """The deployment as the test drives it."""

    airflow: AirflowServer
    inbox: Path
    data_uri: str

    @property
    def api(self) -> AirflowApi:
        return self.airflow.api()

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"])

    def wait(self, what: str, found: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            time.sleep(2)
        raise AssertionError(f"{what}: not within {TIMEOUT:.0f}s\n{self.airflow.logs()}")

    def finished(self, dag_id: str, run_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            run = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in ("success", "failed") else None

        return dict(self.wait(f"{dag_id} {run_id} to finish", done))

    def new_run(self, dag_id: str, run_type: str, seen: set[str]) -> dict[str, Any]:
        def fresh() -> dict[str, Any] | None:
            runs = [r for r in self.runs(dag_id) if r["run_type"] == run_type and r["dag_run_id"] not in seen]
            return runs[0] if runs else None

        run = self.wait(f"a new {run_type} run of {dag_id}", fresh)
        return self.finished(dag_id, run["dag_run_id"])

    def tasks(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        found = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in found}

    def xcom(self, dag_id: str, run_id: str, task: str) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value"
        return self.api.get(path)["value"]

    def drop(self, name: str, source: Path) -> None:
        """Land a batch the way a producer should: write under a hidden name, then rename into the inbox."""
        folder = self.inbox / "batches"
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.part"
        shutil.copyfile(source, partial)
        partial.rename(folder / name)

    def set_cooldown(self, hours: str) -> None:
        body = {"key": COOLDOWN, "value": hours}
        if self.api.request("GET", f"/variables/{COOLDOWN}", ok=(200, 404)).status_code == 404:
            self.api.post("/variables", body, ok=(201,))
        else:
            self.api.patch(f"/variables/{COOLDOWN}", body)


@pytest.fixture(scope="module")
def loop(airflow_server: AirflowServer, mlflow_server: MlflowServer, s3_server: S3Server) -> Loop:
    """The stack wired up: connections (MLflow, S3, and the REST API for run notes), the three DAGs unpaused."""
    s3_server.client().upload_file(str(DATA_DIR / "churn.csv"), s3_server.bucket, "data/churn.csv")
    api = airflow_server.api()
    if api.request("GET", "/connections/mlflow_default", ok=(200, 404)).status_code == 404:
        add_connections(api, mlflow_server, s3_server)
    if api.request("GET", "/connections/airflow_api", ok=(200, 404)).status_code == 404:
        note_conn = {
            "connection_id": "airflow_api",
            "conn_type": "http",
            "host": airflow_server.api_url,
            "login": airflow_server.username,
            "password": airflow_server.password,
        }
        api.post("/connections", note_conn, ok=(201,))
    deadline = time.monotonic() + 180
    for dag_id in DAGS:
        while api.request("GET", f"/dags/{dag_id}", ok=(200, 404)).status_code == 404:
            assert time.monotonic() < deadline, f"{dag_id} was not parsed\n{airflow_server.logs()}"
            time.sleep(1)
        api.patch(f"/dags/{dag_id}", {"is_paused": False})
    assert api.get("/importErrors")["import_errors"] == []
    inbox = Path(airflow_server.env["MLOPS_HOME"]) / "inbox"
    return Loop(airflow_server, inbox, f"s3://{s3_server.bucket}/data/churn.csv")


@pytest.fixture(scope="module")
def story(loop: Loop) -> dict[str, Any]:
    """Run the whole story once; the tests below read what happened."""
    seen = {dag_id: {r["dag_run_id"] for r in loop.runs(dag_id)} for dag_id in DAGS}
    conf = {"data_uri": loop.data_uri, "registered_model": MODEL}
    created = loop.api.post("/dags/mlops_training/dagRuns", {"logical_date": None, "conf": conf})
    training = loop.finished("mlops_training", created["dag_run_id"])
    assert training["state"] == "success", loop.tasks("mlops_training", training["dag_run_id"])

    loop.set_cooldown("0")
    loop.drop("batch-1.csv", DATA_DIR / "churn_drift.csv")
    scoring_1 = loop.new_run("mlops_scoring", "asset_triggered", seen["mlops_scoring"])
    retraining_1 = loop.new_run("mlops_retraining", "asset_triggered", seen["mlops_retraining"])
    seen["mlops_scoring"].add(scoring_1["dag_run_id"])
    seen["mlops_retraining"].add(retraining_1["dag_run_id"])

    # The second batch must drift from the champion's training data: when the first retraining promoted
    # its candidate (trained on the drifted batch), the base batch is the one that now drifts.
    promoted = loop.tasks("mlops_retraining", retraining_1["dag_run_id"]).get("promote") == "success" and bool(
        loop.xcom("mlops_retraining", retraining_1["dag_run_id"], "promote")["moved"]
    )
    second = DATA_DIR / ("churn.csv" if promoted else "churn_drift.csv")
    loop.set_cooldown("6")
    loop.drop("batch-2.csv", second)
    scoring_2 = loop.new_run("mlops_scoring", "asset_triggered", seen["mlops_scoring"])
    retraining_2 = loop.new_run("mlops_retraining", "asset_triggered", seen["mlops_retraining"])
    time.sleep(10)  # a third retraining run, if the scheduler were to start one, would show by now
    return {
        "scoring": [scoring_1, scoring_2],
        "retraining": [retraining_1, retraining_2],
    }


def test_a_landed_batch_starts_scoring_through_its_asset(loop: Loop, story: dict[str, Any]) -> None:
    for run in story["scoring"]:
        assert run["state"] == "success", loop.tasks("mlops_scoring", run["dag_run_id"])
        tasks = loop.tasks("mlops_scoring", run["dag_run_id"])
        assert tasks == {"ingest": "success", "validate_enabled": "success", "validate": "skipped",
                         "score": "success", "drift": "success"}  # fmt: skip
        ingest = loop.xcom("mlops_scoring", run["dag_run_id"], "ingest")
        assert ingest["source"].startswith(f"{(loop.inbox / 'batches' / 'landed').as_uri()}/batch-")
    assert not [p for p in (loop.inbox / "batches").iterdir() if p.is_file()]  # both landed


def test_drift_emits_a_retrain_request_with_its_summary(loop: Loop, story: dict[str, Any]) -> None:
    events = loop.api.get("/assets/events", params={"source_dag_id": "mlops_scoring", "limit": 100})["asset_events"]
    requests = [e for e in events if e["uri"] == f"mlops://retrain-request/{MODEL}"]
    assert len(requests) == 2, events
    for event in requests:
        extra = event["extra"]
        assert extra["registered_model"] == MODEL and extra["drift_share"] >= 0.5 and extra["drifted_columns"]
        assert extra["requested_by"].startswith("mlops_scoring/")
    drift = loop.xcom("mlops_scoring", story["scoring"][0]["dag_run_id"], "drift")
    assert drift["retrain_advised"] is True


def test_the_request_starts_a_retraining_that_trains(loop: Loop, story: dict[str, Any]) -> None:
    run = story["retraining"][0]
    tasks = loop.tasks("mlops_retraining", run["dag_run_id"])
    assert run["state"] == "success", tasks
    assert tasks["gate"] == "success" and all(tasks[t] in ("success", "skipped") for t in CHAIN)
    assert tasks["train"] == "success" and tasks["evaluate"] == "success"
    gate = loop.xcom("mlops_retraining", run["dag_run_id"], "gate")
    assert gate["go"] is True
    assert gate["data_uri"].startswith((loop.inbox / "batches" / "landed").as_uri())
    assert run["note"].startswith(f"gate: training {MODEL}: ")


def test_a_second_batch_inside_the_cooldown_starts_no_second_training(loop: Loop, story: dict[str, Any]) -> None:
    run = story["retraining"][1]
    tasks = loop.tasks("mlops_retraining", run["dag_run_id"])
    assert run["state"] == "success", tasks
    assert tasks["gate"] == "success" and {tasks[t] for t in CHAIN} == {"skipped"}
    gate = loop.xcom("mlops_retraining", run["dag_run_id"], "gate")
    assert gate["go"] is False and gate["reason"].startswith("cooldown: ")
    assert run["note"].startswith(f"gate: not training {MODEL}: cooldown: ")
    triggered = [r for r in loop.runs("mlops_retraining") if r["run_type"] == "asset_triggered"]
    assert len(triggered) == 2, [(r["dag_run_id"], r["note"]) for r in triggered]
