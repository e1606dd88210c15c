"""mlops_training on Airflow as deployed: PostgreSQL, the scheduler on the LocalExecutor, the REST API.

The deployment gets no MLflow tracking URI and no S3 credentials in its environment: they come from the
``mlflow_default`` and ``s3_default`` Airflow connections, made through the REST API as an admin would.
Runs are triggered with ``POST /api/v2/dags/mlops_training/dagRuns`` and a ``conf`` - what the UI's
trigger form sends - against the MLflow server (PostgreSQL, artifacts proxied to S3) and the data in S3.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlops_ops.demo import DATA_DIR
from tests.servers.airflow_server import AirflowApi, AirflowServer, add_connections
from tests.servers.embedded import EmbeddedDemo, clean_env, lineage

if TYPE_CHECKING:
    from tests.servers.mlflow_server import MlflowServer
    from tests.servers.s3 import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "mlops_training"
TASKS = ("ingest", "validate", "train", "evaluate", "approve", "promote")
MODEL = "churn-deployed"
RACE_MODEL = "churn-race"
RUN_TIMEOUT_SECONDS = 600.0
#: A file the attack payloads below would create if anything they name were called.
CANARY = Path(tempfile.gettempdir()) / f"mlops-canary-{uuid.uuid4().hex}"
ATTACKS = {
    "shell estimator": {
        "estimator": "sklearn.utils._testing.check_output",
        "estimator_params": {"args": ["sh", "-c", f"touch {CANARY}"]},
    },
    "makedirs estimator": {"estimator": "sklearn.datasets._base.makedirs", "estimator_params": {"name": str(CANARY)}},
    "os estimator": {"estimator": "os.system", "estimator_params": {"command": f"touch {CANARY}"}},
}
HISTORY_TAGS = {"mlops.alias.champion.previous", "mlops.alias.champion.moved_at", "mlops.alias.champion.reason"}
#: Credentials of the MLflow connection. The test server does not check them (MLflow's auth app needs
#: Flask-WTF, which is not a dependency), but the steps receive them and they must never show up anywhere.
MLFLOW_LOGIN, MLFLOW_PASSWORD, MLFLOW_TOKEN = "mlops-ci", "mlflow-pw-7c1d9e2f4a", "mlflow-tok-5b8e0a3c6d"


# ------------------------------------------------------------------------------------------------ helpers


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


@dataclass
class Run:
    """A DAG run triggered through the REST API, and what it took."""

    run_id: str
    conf: dict[str, Any]
    triggered: float
    state: str = "queued"
    seconds: float = 0.0
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)


class Deployment:
    """The deployed stack as the tests drive it: trigger, wait, read task instances, logs and XComs."""

    def __init__(self, airflow: AirflowServer, data_uri: str) -> None:
        self.airflow = airflow
        self.data_uri = data_uri
        self._api: AirflowApi | None = None
        self._api_at = 0.0

    @property
    def api(self) -> AirflowApi:
        # Tokens expire (24 h by default); a fresh one per ten minutes keeps long sessions simple.
        if self._api is None or time.monotonic() - self._api_at > 600:
            self._api, self._api_at = self.airflow.api(), time.monotonic()
        return self._api

    def trigger(self, **conf: Any) -> Run:
        """Trigger the DAG as the UI's form does: the form's fields as ``conf``, no logical date."""
        form = {"data_uri": self.data_uri, **conf}
        started = time.monotonic()
        created = self.api.post(
            f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": form, "note": "test_deployed"}
        )
        return Run(run_id=created["dag_run_id"], conf=form, triggered=started)

    def wait(self, *runs: Run) -> None:
        """Poll each run until it finishes; record its state, wall time and task instances."""
        pending = list(runs)
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while pending and time.monotonic() < deadline:
            for run in list(pending):
                state = self.api.get(f"/dags/{DAG_ID}/dagRuns/{run.run_id}")["state"]
                if state in ("success", "failed"):
                    run.state, run.seconds = state, time.monotonic() - run.triggered
                    run.tasks = self.task_instances(run)
                    pending.remove(run)
            time.sleep(0.5)
        assert not pending, f"runs still running after {RUN_TIMEOUT_SECONDS:.0f}s: {[r.run_id for r in pending]}"

    def task_instances(self, run: Run) -> dict[str, dict[str, Any]]:
        found = self.api.get(f"/dags/{DAG_ID}/dagRuns/{run.run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti for ti in found}

    def log(self, run: Run, task: str, try_number: int) -> list[dict[str, Any]]:
        path = f"/dags/{DAG_ID}/dagRuns/{run.run_id}/taskInstances/{task}/logs/{try_number}"
        content = self.api.get(path, params={"full_content": "true"}, headers={"Accept": "application/json"})
        return list(content["content"])

    def all_logs(self, run: Run) -> str:
        return "\n".join(
            json.dumps(line) for task, ti in run.tasks.items() for n in range(1, ti["try_number"] + 1)
            for line in self.log(run, task, n)
        )  # fmt: skip

    def xcoms(self, run: Run) -> dict[str, Any]:
        values = {}
        for task in run.tasks:
            path = f"/dags/{DAG_ID}/dagRuns/{run.run_id}/taskInstances/{task}/xcomEntries/return_value"
            response = self.api.request("GET", path, ok=(200, 404))
            if response.status_code == 200:
                values[task] = response.json()["value"]
        return values


def report(label: str, run: Run) -> str:
    """One run's timing as Airflow recorded it, for the test log and the closing note."""
    lines = [f"{label}: {run.run_id} {run.state}, trigger to {run.state} {run.seconds:.1f}s (REST API, polled)"]
    for task in TASKS:
        ti = run.tasks.get(task)
        if ti is None:
            continue
        duration = f"{ti['duration']:.1f}s" if ti.get("duration") is not None else "-"
        lines.append(f"  {task:<9} {ti['state'] or 'none':<15} try {ti['try_number']}  {duration}")
    return "\n".join(lines)


def secrets_of(s3_server: S3Server) -> dict[str, str]:
    return {
        "S3 secret key": s3_server.secret_key,
        "MLflow password": MLFLOW_PASSWORD,
        "MLflow token": MLFLOW_TOKEN,
    }


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def embedded_lineage(embedded_demo: EmbeddedDemo) -> dict[str, Any]:
    """The lineage the embedded default recorded for its champion."""
    return embedded_demo.lineage()


@pytest.fixture(scope="module")
def deployment(
    embedded_demo: EmbeddedDemo, airflow_server: AirflowServer, mlflow_server: MlflowServer, s3_server: S3Server
) -> Deployment:
    """The stack with the demo data in S3, the two connections made through the REST API, the DAG unpaused."""
    data_key = "data/churn.csv"
    s3_server.client().upload_file(str(DATA_DIR / "churn.csv"), s3_server.bucket, data_key)
    api = airflow_server.api()
    credentials = {"login": MLFLOW_LOGIN, "password": MLFLOW_PASSWORD, "token": MLFLOW_TOKEN}
    add_connections(api, mlflow_server, s3_server, mlflow_credentials=credentials)
    deadline = time.monotonic() + 120
    while api.request("GET", f"/dags/{DAG_ID}", ok=(200, 404)).status_code == 404:
        assert time.monotonic() < deadline, f"{DAG_ID} was not parsed in 120s\n{airflow_server.logs()}"
        time.sleep(1)
    assert api.patch(f"/dags/{DAG_ID}", {"is_paused": False})["is_paused"] is False
    errors = api.get("/importErrors")["import_errors"]
    assert errors == [], errors
    print(
        f"\nstart-up: SeaweedFS {s3_server.startup_seconds:.1f}s, MLflow server {mlflow_server.startup_seconds:.1f}s, "
        f"airflow db migrate {airflow_server.migrate_seconds:.1f}s, Airflow components {airflow_server.startup_seconds:.1f}s"
    )
    return Deployment(airflow_server, f"s3://{s3_server.bucket}/{data_key}")


@pytest.fixture(scope="module")
def first_run(deployment: Deployment, embedded_lineage: dict[str, Any]) -> Run:
    """One run on the demo data, alone on the machine (the embedded default has finished by now)."""
    run = deployment.trigger(registered_model=MODEL)
    deployment.wait(run)
    print("\n" + report("deployed mlops_training", run))
    return run


@pytest.fixture(scope="module")
def later_runs(deployment: Deployment, first_run: Run, s3_server: S3Server) -> dict[str, Run]:
    """Two runs with a bad conf, two runs raced on another model and a masking probe, all triggered at once."""
    # A target column named after two credentials: the step's error quotes it, so the task log shows
    # whether Airflow's masker (fed by the operator from the connections) redacts them.
    probe = f"x-{MLFLOW_PASSWORD}-{s3_server.secret_key}"
    runs = {
        "masking probe": deployment.trigger(registered_model=MODEL, target=probe),
        "unknown target": deployment.trigger(registered_model=MODEL, target="churn_flag"),
        "malformed params": deployment.trigger(registered_model=MODEL, estimator_params={"max_iterations": 10}),
        "race a": deployment.trigger(registered_model=RACE_MODEL, estimator_params={"max_iter": 60, "learning_rate": 0.1}),
        "race b": deployment.trigger(registered_model=RACE_MODEL, estimator_params={"max_iter": 60, "learning_rate": 0.05}),
    }  # fmt: skip
    runs |= {label: deployment.trigger(registered_model=MODEL, **conf) for label, conf in ATTACKS.items()}
    deployment.wait(*runs.values())
    for label, run in runs.items():
        print("\n" + report(label, run))
    return runs


# -------------------------------------------------------------------------------------------------- tests


def test_training_triggered_through_the_rest_api_succeeds(first_run: Run) -> None:
    assert first_run.state == "success", report("run", first_run)
    assert {task: ti["state"] for task, ti in first_run.tasks.items()} == dict.fromkeys(TASKS, "success")


def test_lineage_is_complete_and_shaped_like_the_embedded_defaults(
    first_run: Run, mlflow_server: MlflowServer, embedded_lineage: dict[str, Any], s3_server: S3Server
) -> None:
    chain = lineage(MODEL, clean_env(**mlflow_server.env()))
    assert chain["version"] == "1" and chain["aliases"] == ["champion"]
    assert chain["pipeline"] == DAG_ID and chain["pipeline_run"] == first_run.run_id
    assert chain["dataset"]["uri"].startswith(f"s3://{s3_server.bucket}/airflow/")
    assert chain["validation"]["result_uri"].startswith(f"s3://{s3_server.bucket}/airflow/")
    assert chain["source"].startswith("models:/") or chain["source"].startswith("mlflow-artifacts:/")
    train, evaluate = chain["train_run"], chain["evaluate_run"]
    assert train["status"] == evaluate["status"] == "FINISHED"
    assert train["parent_run_id"] == evaluate["parent_run_id"]
    assert train["datasets"][0]["digest"] == chain["dataset"]["digest"][:36]
    assert all(value is not None for value in chain.values())
    assert shape(chain) == shape(embedded_lineage)


def test_model_artifacts_are_proxied_to_s3(first_run: Run, s3_server: S3Server) -> None:
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="mlflow/")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert any(key.endswith("MLmodel") for key in keys), keys[:20]


@pytest.mark.parametrize(
    ("label", "task", "message"),
    [
        ("unknown target", "ingest", "DataError: target column 'churn_flag' is not in 's3://"),
        ("malformed params", "train", "SpecError: estimator 'sklearn.ensemble.HistGradientBoostingClassifier' "
                                      "rejects its parameters {'max_iterations': 10}"),
    ],
)  # fmt: skip
def test_a_bad_conf_fails_with_a_one_line_error_in_the_task_log(
    deployment: Deployment, later_runs: dict[str, Run], label: str, task: str, message: str
) -> None:
    run = later_runs[label]
    assert run.state == "failed", report(label, run)
    ti = run.tasks[task]
    assert ti["state"] == "failed" and ti["try_number"] == 1  # a user's mistake is not retried
    assert all(run.tasks[t]["state"] in (None, "upstream_failed") for t in TASKS[TASKS.index(task) + 1 :])
    lines = deployment.log(run, task, 1)
    events = [str(line.get("event", "")) for line in lines]
    # The step's own line, and the task's failure as the UI shows it: one line each, saying what to fix.
    assert f"mlops-ops: error: {message}" in "\n".join(events), "\n".join(events[-40:])
    (failure,) = [line for line in lines if line.get("event") == "Task failed with exception"]
    (error,) = failure["error_detail"]
    assert error["exc_type"] == "AirflowFailException"
    assert error["exc_value"].startswith(f"step {task} failed: {message}") and "\n" not in error["exc_value"]


@pytest.mark.parametrize("label", list(ATTACKS))
def test_an_estimator_that_is_no_estimator_class_is_refused_and_nothing_runs(
    deployment: Deployment, later_runs: dict[str, Run], label: str
) -> None:
    run = later_runs[label]
    assert run.state == "failed", report(label, run)
    assert run.tasks["train"]["state"] == "failed" and run.tasks["train"]["try_number"] == 1  # not retried
    lines = deployment.log(run, "train", 1)
    (failure,) = [line for line in lines if line.get("event") == "Task failed with exception"]
    (error,) = failure["error_detail"]
    assert error["exc_type"] == "AirflowFailException" and "\n" not in error["exc_value"]
    assert ATTACKS[label]["estimator"] in error["exc_value"]
    assert "is not a public import path" in error["exc_value"] or "is not allowed" in error["exc_value"]
    assert not CANARY.exists()


def test_params_that_are_not_json_are_refused_before_a_run_exists(
    deployment: Deployment, later_runs: dict[str, Run]
) -> None:
    runs = deployment.api.get(f"/dags/{DAG_ID}/dagRuns")["total_entries"]
    conf = {"data_uri": deployment.data_uri, "estimator_params": "{max_iter: 10"}
    refused = deployment.api.request(
        "POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}, ok=(400,)
    )
    detail = refused.json()["detail"].splitlines()[0]
    assert detail == "Invalid input for param estimator_params: '{max_iter: 10' is not of type 'object'"
    assert deployment.api.get(f"/dags/{DAG_ID}/dagRuns")["total_entries"] == runs


def test_credentials_from_the_connections_are_masked_in_task_logs(
    deployment: Deployment, later_runs: dict[str, Run]
) -> None:
    run = later_runs["masking probe"]
    assert run.state == "failed", report("masking probe", run)
    events = [str(line.get("event", "")) for line in deployment.log(run, "ingest", 1)]
    assert "mlops-ops: error: DataError: target column 'x-***-***' is not in 's3://" in "\n".join(events), events[-20:]


def test_a_bad_conf_moves_no_alias(later_runs: dict[str, Run], mlflow_server: MlflowServer) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    assert [str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")] == ["1"]
    assert client.get_registered_model(MODEL).aliases == {"champion": "1"}


def test_two_runs_at_once_leave_one_consistent_champion(
    later_runs: dict[str, Run], mlflow_server: MlflowServer
) -> None:
    from mlflow import MlflowClient

    racers = [later_runs["race a"], later_runs["race b"]]
    assert [run.state for run in racers] == ["success", "success"], [report("race", run) for run in racers]
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{RACE_MODEL}'")}
    aliases = client.get_registered_model(RACE_MODEL).aliases
    assert set(aliases) == {"champion"} and aliases["champion"] in versions
    # Walk the history back from the champion: each move names the version it replaced, which names it back.
    current, chain = aliases["champion"], []
    while current != "none":
        tags = versions[current].tags
        assert set(tags) >= HISTORY_TAGS, tags
        chain.append(current)
        previous = tags["mlops.alias.champion.previous"]
        if previous != "none":
            assert versions[previous].tags["mlops.alias.champion.replaced_by"] == current
        current = previous
    assert len(chain) == len(set(chain))
    print(f"\n{RACE_MODEL}: versions {sorted(versions)}, champion v{aliases['champion']}, alias history {chain}")
    # A version that never held the alias was told why.
    for number, version in versions.items():
        if number not in chain:
            assert "mlops.alias.champion.superseded_by" in version.tags, version.tags


def test_no_credential_in_task_logs_xcom_rendered_fields_or_mlflow(
    deployment: Deployment, first_run: Run, later_runs: dict[str, Run], mlflow_server: MlflowServer, s3_server: S3Server
) -> None:
    from mlflow import MlflowClient

    seen: dict[str, str] = {}
    for run in [first_run, *later_runs.values()]:
        seen[f"{run.run_id} task logs"] = deployment.all_logs(run)
        seen[f"{run.run_id} XComs"] = json.dumps(deployment.xcoms(run))
        seen[f"{run.run_id} task instances"] = json.dumps(deployment.task_instances(run))
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for found in client.search_runs(experiments, max_results=1000):
        seen[f"MLflow run {found.info.run_id}"] = json.dumps([found.data.params, found.data.tags])
    for model in (MODEL, RACE_MODEL):
        for version in client.search_model_versions(f"name = '{model}'"):
            seen[f"{model} v{version.version}"] = json.dumps(version.tags)
    assert any("running step ingest" in text for text in seen.values()), "the task logs were not read"
    leaks = [
        f"{what} in {where}"
        for where, text in seen.items()
        for what, secret in secrets_of(s3_server).items()
        if secret in text
    ]
    assert leaks == []


def test_components_got_no_credentials_in_their_environment(airflow_server: AirflowServer) -> None:
    env = airflow_server.env
    assert not [name for name in env if name.startswith(("AWS_", "MLFLOW_"))]
    assert env["MLOPS_ARTIFACT_ROOT"].startswith("s3://")
