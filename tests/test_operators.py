"""Operators in a real Airflow run: templates rendered from the run's context, specs each runner receives.

The DAG runs under ``dag.test()`` (real task runner, real XCom, real Jinja) with a recording runner in
place of the local process, so these tests check the Airflow adapters without doing the ML work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.context import RunContext
from mlops_ops.operators import base as operator_base
from mlops_ops.runners import StepFailed, StepInvocation
from tests.conftest import REPO

REF = {"uri": "file:///d.parquet", "digest": "ab" * 32, "rows": 10, "columns": {"y": "int64"}}
TRAIN_SPEC = {"task": "classification", "target": "y", "estimator": "sklearn.linear_model.LogisticRegression"}


def manifest(step: str, spec: dict[str, Any], passed: bool) -> dict[str, Any]:
    """A result manifest that the next step's spec accepts."""
    if step == "ingest":
        return {"step": "ingest", "source": spec["source"], "snapshot": REF, "train": REF, "eval": REF}
    if step == "validate":
        return {
            "step": "validate",
            "success": True,
            "dataset_digest": REF["digest"],
            "suite": "s",
            "evaluated": 3,
            "result_uri": "file:///r.json",
            "report_uri": "file:///r.md",
        }
    if step == "train":
        return {
            "step": "train",
            "mlflow_run_id": "run-train",
            "model_uri": "models:/m-1",
            "task": spec["task"],
            "target": spec["target"],
            "estimator": spec["estimator"],
            "dataset_digest": REF["digest"],
            "dataset_uri": REF["uri"],
        }
    if step == "evaluate":
        return {
            "step": "evaluate",
            "passed": passed,
            "reasons": [] if passed else ["roc_auc = 0.6000, required >= 0.75"],
            "candidate": spec["candidate"],
            "candidate_metrics": {"roc_auc": 0.6},
            "dataset_digest": REF["digest"],
            "mlflow_run_id": "run-eval",
        }
    return {
        "step": "promote",
        "model_name": spec["registered_model"],
        "version": "1",
        "alias": spec["alias"],
        "moved": True,
    }


class RecordingRunner:
    """Stands in for the local process: records what it was asked to run and answers with a manifest."""

    def __init__(self, passed: bool = True, fail: str | None = None) -> None:
        self.calls: list[StepInvocation] = []
        self.passed, self.fail = passed, fail

    def run(self, invocation: StepInvocation, log: Callable[[str], None], context: Any = None) -> dict[str, Any]:
        self.calls.append(invocation)
        log(f"recorded {invocation.step}")
        if invocation.step == self.fail:
            raise StepFailed(
                4,
                "ValidationFailed: 1 of 3 expectations failed: expect_column_values_to_not_be_null "
                "on column 'age': 7 unexpected values",
            )
        return manifest(invocation.step, invocation.spec, self.passed)

    def by_step(self) -> dict[str, StepInvocation]:
        return {c.step: c for c in self.calls}


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Callable[..., RecordingRunner]:
    def install(**kwargs: Any) -> RecordingRunner:
        runner = RecordingRunner(**kwargs)
        monkeypatch.setattr(operator_base, "get_runner", lambda name, **options: runner)
        return runner

    return install


@pytest.fixture(scope="module")
def dag(airflow_db: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO / "dags" / "mlops_training.py"))
    assert bag.import_errors == {}
    return bag.get_dag("mlops_training")


def states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_templates_render_from_params_and_xcom(dag: Any, recorder: Callable[..., RecordingRunner]) -> None:
    runner = recorder()
    conf = {
        "data_uri": "s3://bucket/data.parquet",
        "estimator": "sklearn.linear_model.LogisticRegression",
        "estimator_params": {"C": 0.5},
        "gate_metric": "log_loss",
        "gate_threshold": 0.4,
        "promotion_policy": "challenger",
        "registered_model": "fraud",
    }
    run = dag.test(run_conf=conf)
    assert str(run.state) == "success", states(run)
    calls = runner.by_step()
    assert list(calls) == ["ingest", "validate", "train", "evaluate", "promote"]
    assert states(run)["approve"] == "success"  # no reviewer under the challenger policy

    assert calls["ingest"].spec["source"] == "s3://bucket/data.parquet"
    assert calls["ingest"].spec["target"] == "churned"
    assert calls["validate"].spec["dataset"] == REF  # the snapshot, taken from ingest's XCom
    assert calls["validate"].spec["suite"].endswith("mlops_ops/demo/churn_suite.json")
    train = calls["train"].spec
    assert train["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert train["estimator_params"] == {"C": 0.5}  # a dict, not its string
    assert train["validation"]["success"] is True
    evaluate = calls["evaluate"].spec
    assert evaluate["gates"] == [{"metric": "log_loss", "op": "<=", "value": 0.4}]
    assert evaluate["candidate"]["mlflow_run_id"] == "run-train"
    assert calls["promote"].spec["alias"] == "challenger"
    assert calls["promote"].spec["registered_model"] == "fraud"

    ctx: RunContext = calls["train"].ctx
    assert (ctx.pipeline, ctx.run_id, ctx.step, ctx.try_number) == ("mlops_training", run.run_id, "train", 1)
    assert calls["train"].env["AIRFLOW_CTX_DAG_RUN_ID"] == run.run_id
    assert calls["train"].result_uri.endswith(f"/{ctx.result_key()}")
    assert calls["train"].argv()[:3] == ["mlops-ops", "step", "train"]


def test_force_reaches_every_step_and_fits_again(dag: Any, recorder: Callable[..., RecordingRunner]) -> None:
    steps = [t for t in dag.tasks if isinstance(t, operator_base.MlopsStepOperator)]
    assert len(steps) == 5 and {t.force for t in steps} == {"{{ params.force }}"}
    assert dag.params["force"] is False
    runner = recorder()
    assert str(dag.test().state) == "success"
    assert runner.by_step()["train"].spec["refit"] is False  # unforced: an identical training is reused

    runner = recorder()
    run = dag.test(run_conf={"force": True})
    assert str(run.state) == "success", states(run)
    assert runner.by_step()["train"].spec["refit"] is True  # the step fits again instead of reusing a training


@pytest.mark.parametrize(
    ("value", "forced"), [(True, True), (False, False), ("True", True), ("false", False), (" TRUE ", True)]
)
def test_force_takes_a_bool_or_its_text(value: Any, forced: bool) -> None:
    from mlops_ops.operators import IngestOperator

    assert IngestOperator(task_id="i", source="s", force=value)._force() is forced


def test_force_refuses_anything_else() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_ops.operators import IngestOperator

    with pytest.raises(AirflowFailException, match="force must be true or false, not 'yes'"):
        IngestOperator(task_id="i", source="s", force="yes")._force()


def test_rejected_evaluation_skips_promotion(dag: Any, recorder: Callable[..., RecordingRunner]) -> None:
    runner = recorder(passed=False)
    run = dag.test()
    assert states(run)["promote"] == "skipped"
    assert "promote" not in runner.by_step()
    assert str(run.state) == "success"


def test_failed_validation_stops_before_training(dag: Any, recorder: Callable[..., RecordingRunner]) -> None:
    runner = recorder(fail="validate")
    run = dag.test()
    got = states(run)
    assert got["validate"] == "failed"
    assert {got[t] for t in ("train", "evaluate", "promote")} == {"upstream_failed"}
    assert list(runner.by_step()) == ["ingest", "validate"]  # failed validation is not retried
    assert str(run.state) == "failed"


def test_a_disallowed_estimator_fails_the_train_task_before_its_step_runs(
    dag: Any, recorder: Callable[..., RecordingRunner]
) -> None:
    runner = recorder()
    run = dag.test(run_conf={"estimator": "os.system"})
    got = states(run)
    assert got["train"] == "failed"
    assert "train" not in runner.by_step()


TEXT_DAG = """
from airflow.sdk import DAG
from mlops_ops.operators import PromoteOperator, StepOperator

with DAG("text_and_objects", schedule=None, params=PARAMS, render_template_as_native_obj=True):
    PromoteOperator(
        task_id="typed", evaluation="{{ params.evaluation }}", registered_model="m", reason="{{ params.reason }}"
    )
    StepOperator(
        task_id="generic",
        step="promote",
        spec={"evaluation": "{{ params.evaluation }}", "registered_model": "m", "reason": "{{ params.reason }}"},
    )
"""


def test_text_stays_text_and_objects_stay_objects(
    airflow_db: Path, recorder: Callable[..., RecordingRunner], tmp_path: Path
) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    runner = recorder()
    evaluation = manifest("evaluate", {"candidate": manifest("train", TRAIN_SPEC, True)}, True)
    params = {"reason": "[1, 2]", "evaluation": evaluation}
    (tmp_path / "text_dag.py").write_text(f"PARAMS = {params!r}\n" + TEXT_DAG)
    bag = DagBag(str(tmp_path / "text_dag.py"))
    assert bag.import_errors == {}
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    dag = bag.get_dag("text_and_objects")
    run = dag.test()
    assert str(run.state) == "success", states(run)
    assert sorted(c.ctx.step for c in runner.calls) == ["generic", "typed"]
    for call in runner.calls:
        assert call.spec["reason"] == "[1, 2]"  # a string that looks like a list stays a string
        assert call.spec["evaluation"]["passed"] is True  # an object rendered natively stays an object
