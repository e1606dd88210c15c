"""Every DAG file imports cleanly in Airflow's DagBag and loads no heavy library at parse time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

HEAVY = (
    "sklearn",
    "pandas",
    "numpy",
    "mlflow",
    "great_expectations",
    "kubernetes",
    "boto3",
    "pyarrow",
    "matplotlib",
    "kubernetes_asyncio",
)
DAG_FILES = sorted((REPO / "dags").glob("*.py"))

PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("probe_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(sorted(m for m in sys.argv[2:] if m in sys.modules)))
"""


def test_there_are_dags() -> None:
    assert {"mlops_training.py", "mlops_scoring.py", "mlops_retraining.py"} <= {p.name for p in DAG_FILES}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dagbag_has_no_import_errors(path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(path))
    assert bag.import_errors == {}
    assert bag.dags, f"{path.name} defines no DAG"


@pytest.mark.slow
@pytest.mark.parametrize("target", [*DAG_FILES, REPO / "mlops_ops" / "operators" / "__init__.py"], ids=lambda p: p.name)
def test_parse_loads_no_heavy_library(target: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(target), *HEAVY], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_provider_is_registered() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "providers", "list", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    start = done.stdout.index("[")
    names = {p["package_name"] for p in json.loads(done.stdout[start:])}
    assert "mlops-ops" in names


# --------------------------------------------------------------------------- continuous training DAGs


@pytest.fixture(scope="module")
def bag(airflow_db: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    found = DagBag(str(REPO / "dags"))
    assert found.import_errors == {}
    return found


def _assets(condition: Any) -> list[Any]:
    return list(condition.objects) if hasattr(condition, "objects") else [condition]


def _edges(dag: Any) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def test_the_three_pipelines_are_defined(bag: Any) -> None:
    assert {"mlops_training", "mlops_scoring", "mlops_retraining"} <= set(bag.dag_ids)


def render(template: str, params: dict[str, Any]) -> str:
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment().from_string(template).render(params=params)


def test_training_and_retraining_share_one_chain(bag: Any) -> None:
    chain = {("ingest", "validate"), ("validate", "train"), ("train", "evaluate"), ("evaluate", "promote")}
    chain |= {("evaluate", "approve"), ("approve", "promote")}  # the approval, waiting only under its policy
    training, retraining = bag.get_dag("mlops_training"), bag.get_dag("mlops_retraining")
    assert chain <= _edges(training) and chain <= _edges(retraining)
    assert ("gate", "ingest") in _edges(retraining)
    for dag in (training, retraining):
        assert dag.task_dict["promote"].task_group.group_id == "training"
        assert dag.task_dict["approve"].policy == "{{ params.promotion_policy }}"
        assert "approval" in dag.params.get_param("promotion_policy").schema["enum"]
        evaluate = dag.task_dict["evaluate"]
        [gate] = evaluate.gates
        # The form's empty gate fields stand for the task's gate; a given metric keeps its direction.
        for params, gated in (
            ({"task": "classification", "gate_metric": "", "gate_threshold": None}, ("roc_auc >= 0.75", "roc_auc")),
            ({"task": "regression", "gate_metric": "", "gate_threshold": None}, ("r2 >= 0.0", "r2")),
            ({"task": "regression", "gate_metric": "rmse", "gate_threshold": 30}, ("rmse <= 30", "rmse")),
            ({"task": "classification", "gate_metric": "f1", "gate_threshold": 0}, ("f1 >= 0", "f1")),
        ):
            rendered = (render(str(gate), params), render(evaluate.compare_metric, params))
            assert rendered == gated
    # The training form is the same in both (retraining adds the gate's fields).
    assert set(training.params) | {"cooldown_hours", "min_rows", "force"} == set(retraining.params)


def test_a_literal_task_gets_its_default_gate_literally() -> None:
    from mlops_ops.pipelines.chain import task_gate

    assert task_gate("", "", "regression") == ("r2", "0.0")
    assert task_gate("", "", "classification") == ("roc_auc", "0.75")
    assert task_gate("rmse", "3", "regression") == ("rmse", "3")
    assert task_gate("{{ params.m }}", "", "regression") == ("{{ (params.m) or 'r2' }}", "0.0")
    with pytest.raises(ValueError, match="task must be one of"):
        task_gate("", "", "clustering")


def test_metric_directions_come_from_the_metrics_table() -> None:
    from mlops_ops.pipelines.chain import LOWER_IS_BETTER
    from mlops_ops.specs import METRICS

    assert set(LOWER_IS_BETTER) == {m for g in METRICS.values() for m, higher in g.items() if not higher}


def test_scoring_is_scheduled_and_asset_triggered(bag: Any) -> None:
    from airflow.sdk import AssetOrTimeSchedule

    dag = bag.get_dag("mlops_scoring")
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    (asset,) = _assets(dag.timetable.asset_condition)
    assert asset.name == "inbox-batches" and asset.uri.startswith("file://")
    (watcher,) = asset.watchers
    assert type(watcher.trigger).__name__ == "InboxTrigger"
    assert _edges(dag) >= {("ingest", "validate_enabled"), ("validate_enabled", "validate"), ("score", "drift")}
    assert dag.task_dict["score"].trigger_rule == "none_failed"
    assert [o.name for o in dag.task_dict["drift"].outlets] == ["retrain-requests"]
    assert {"data_uri", "registered_model", "alias", "validate", "drift_share", "runner"} <= set(dag.params)


def test_retraining_is_scheduled_weekly_and_on_requests_or_labelled_data(bag: Any) -> None:
    dag = bag.get_dag("mlops_retraining")
    assert dag.timetable.timetable.expression == "0 3 * * 1"
    names = {a.name for a in _assets(dag.timetable.asset_condition)}
    assert names == {"retrain-request/churn-classifier", "inbox-labelled"}
    assert dag.max_active_runs == 1
    assert dag.params["cooldown_hours"] > 0 and dag.params["force"] is False


def test_landed_uri_picks_the_newest_batch_of_the_triggering_events() -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from mlops_ops.pipelines.assets import landed_uri

    old = SimpleNamespace(
        timestamp=datetime(2026, 1, 1, tzinfo=UTC), extra={"from_trigger": True, "payload": {"uri": "file:///a.csv"}}
    )
    new = SimpleNamespace(timestamp=datetime(2026, 1, 2, tzinfo=UTC), extra={"data_uri": "s3://b/new.csv"})
    assert landed_uri({"inbox": [old], "retrain": [new]}, "default.csv") == "s3://b/new.csv"
    assert landed_uri({}, "default.csv") == "default.csv"
    assert landed_uri(None, "default.csv") == "default.csv"


def test_trigger_summary_names_each_asset_once() -> None:
    from airflow.sdk import Asset, AssetAlias

    from mlops_ops.pipelines.assets import trigger_summary

    events = {
        Asset("retrain-request/m", uri="mlops://retrain-request/m"): [1, 2],
        AssetAlias("retrain-requests"): [1, 2],
    }
    assert trigger_summary(events) == "retrain-request/m x2"
    assert trigger_summary({}) == ""


def test_inbox_trigger_lands_a_complete_batch_once(tmp_path: Path) -> None:
    import asyncio

    from mlops_ops.pipelines.inbox import InboxTrigger

    (tmp_path / "batch.csv").write_text("a,b\n1,2\n")
    (tmp_path / ".partial.csv").write_text("a,b\n")
    trigger = InboxTrigger(directory=str(tmp_path), poke_interval=0.05, settle_seconds=0)

    async def first() -> Any:
        async for event in trigger.run():
            return event.payload
        return None

    payload = asyncio.run(first())
    assert payload["name"] == "batch.csv" and payload["uri"] == (tmp_path / "landed" / "batch.csv").as_uri()
    assert not (tmp_path / "batch.csv").exists() and (tmp_path / ".partial.csv").exists()
    assert trigger.serialize() == (
        "mlops_ops.pipelines.inbox.InboxTrigger",
        {"directory": str(tmp_path), "poke_interval": 0.05, "settle_seconds": 0},
    )


@pytest.mark.parametrize("dag_id", ["mlops_scoring", "mlops_retraining"])
def test_a_new_deployment_waits_for_the_next_cron_time(bag: Any, dag_id: str) -> None:
    """No catch-up run of the cron time just past when the DAG first appears (or is unpaused)."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction
    from airflow.utils import timezone

    timetable = DagSerialization.from_dict(DagSerialization.to_dict(bag.get_dag(dag_id))).timetable
    first = timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=None, latest=None, catchup=False)
    )
    assert first is not None and first.run_after > timezone.utcnow()
