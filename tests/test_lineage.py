"""The lineage package: runs that follow the pipeline's state, and the one guarded door to MLflow."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlops_ops import lineage
from mlops_ops.context import RunContext
from mlops_ops.errors import PromotionRejected, TrackingError, TrackingUnavailable
from mlops_ops.lineage import tags
from mlops_ops.specs import DatasetRef, EvaluateResult, PromoteResult, TrainResult, ValidateResult
from tests.conftest import isolated_home

if TYPE_CHECKING:
    import pandas as pd


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    with isolated_home(tmp_path / "mlops") as path:
        yield path


def _parent(ctx: RunContext) -> tuple[str, str]:
    client = lineage.client()
    runs = client.search_runs(
        [lineage.experiment_id(ctx.pipeline)],
        f"tags.`{tags.ROLE}` = 'pipeline' and tags.`{tags.RUN_KEY}` = '{ctx.run_key}'",
    )
    (run,) = runs
    return run.info.status, run.data.tags[tags.STATE]


def test_the_parent_run_ends_with_the_state_of_the_step_that_ended_last(home: Path) -> None:
    first = RunContext(pipeline="p", run_id="r1", step="ingest")
    with lineage.step_run(first) as run:
        assert _parent(first) == ("RUNNING", "running")
        run.tag(**{tags.DATASET_URI: "file:///x"})
    assert _parent(first) == ("FINISHED", "success")

    failing = first.model_copy(update={"step": "train"})
    with pytest.raises(RuntimeError), lineage.step_run(failing):
        raise RuntimeError("boom")
    assert _parent(first) == ("FAILED", "failed")

    retried = failing.model_copy(update={"try_number": 2})
    with lineage.step_run(retried):
        pass
    assert _parent(first) == ("FINISHED", "success")

    promote = first.model_copy(update={"step": "promote"})
    with pytest.raises(PromotionRejected), lineage.step_run(promote):
        raise PromotionRejected("gates failed")
    assert _parent(first) == ("FINISHED", "skipped")

    children = lineage.client().search_runs([lineage.experiment_id("p")], f"tags.`{tags.ROLE}` = 'step'")
    assert sorted((r.data.tags[tags.STEP], r.info.status) for r in children) == [
        ("ingest", "FINISHED"),
        ("promote", "FINISHED"),
        ("train", "FINISHED"),  # the retry reopened the failed try's run and finished it
    ]


def _recorded_schema(frame: pd.DataFrame) -> str | None:
    """The schema (JSON) that ``log_dataset`` records for ``frame``."""
    ctx = RunContext(pipeline="schema", run_id=f"r{len(frame)}", step="ingest")
    with lineage.step_run(ctx) as run:
        run.log_dataset(frame, name="churn", uri="file:///churn.csv", digest="0" * 64, context="ingest")
    (recorded,) = lineage.client().get_run(run.run_id).inputs.dataset_inputs
    return recorded.dataset.schema


@pytest.mark.parametrize(("rows", "missing_at"), [(4, 1), (1500, 1400)], ids=["small", "missing-after-the-sample"])
def test_the_recorded_dataset_schema_types_each_column_and_marks_missing_values(
    home: Path, rows: int, missing_at: int
) -> None:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(
        {
            "age": np.arange(rows, dtype="int64"),
            "income": np.linspace(1.0, 2.0, rows),
            "plan": [f"p{i % 3}" for i in range(rows)],
            "visits": pd.array(range(rows), dtype="Int64"),
        }
    )
    frame.loc[missing_at, ["income", "plan", "visits"]] = [np.nan, None, pd.NA]
    assert json.loads(_recorded_schema(frame) or "null") == {
        "mlflow_colspec": [
            {"type": "long", "name": "age", "required": True},
            {"type": "double", "name": "income", "required": False},
            {"type": "string", "name": "plan", "required": False},
            {"type": "long", "name": "visits", "required": False},
        ]
    }


def test_a_frame_mlflow_cannot_type_is_recorded_without_a_schema(home: Path) -> None:
    import pandas as pd

    assert _recorded_schema(pd.DataFrame({"z": [1 + 2j, 3j]})) is None


def test_one_client_per_process_and_no_tracking_uri_left_in_the_environment(home: Path) -> None:
    import os

    assert lineage.client() is lineage.client()
    # MLflow's set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ; child processes must not inherit it.
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ


def _flaky(failures: int, exc: Exception) -> object:
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise exc
        return "ok"

    return call


_FIRST_USE = (
    "from mlops_ops import lineage\n"
    "lineage.client().search_experiments(max_results=1)\n"
    "print(lineage.experiment_id('parallel-' + __import__('sys').argv[1]))\n"
)


def test_steps_that_start_together_on_a_new_home_open_its_database_one_at_a_time(tmp_path: Path) -> None:
    """MLflow creates a SQLite database's tables on first use with no lock; four processes at once all failed
    (``table ... already exists``) before the lock beside the database."""
    env = os.environ | {"MLOPS_HOME": str(tmp_path / "mlops"), "PYTHONPATH": str(Path.cwd())}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FIRST_USE, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outcomes = [(proc.returncode, out, err) for proc in procs for out, err in [proc.communicate(timeout=300)]]
    assert [code for code, _, _ in outcomes] == [0, 0, 0, 0], [err[-400:] for _, _, err in outcomes]
    assert len({out.strip() for _, out, _ in outcomes}) == 4  # four experiments, one database
    assert (tmp_path / "mlops" / "mlflow.db.lock").exists()


def test_transient_failures_are_retried_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLOPS_MLFLOW_RETRY_SECONDS", "10")
    outage = MlflowException("API request to http://mlflow:5000/api failed with exception Connection refused")
    with caplog.at_level(logging.WARNING, logger="mlops_ops.lineage"):
        assert lineage.guard(_flaky(2, outage)) == "ok"  # type: ignore[arg-type]
    assert sum("did not answer" in r.getMessage() for r in caplog.records) == 2


def test_an_outage_longer_than_the_budget_is_one_infrastructure_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLOPS_MLFLOW_RETRY_SECONDS", "1")
    outage = MlflowException("API request to http://mlflow:5000/api failed with exception Connection refused")
    with pytest.raises(TrackingUnavailable, match="unreachable after 1s of retries") as caught:
        lineage.guard(_flaky(1000, outage))  # type: ignore[arg-type]
    assert caught.value.exit_code == 6


def test_a_refusal_is_not_retried() -> None:
    from mlflow.exceptions import MlflowException

    refused = MlflowException("Registered Model with name=x not found", error_code="RESOURCE_DOES_NOT_EXIST")
    call = _flaky(1, refused)
    with pytest.raises(TrackingError, match="not found") as caught:
        lineage.guard(call)  # type: ignore[arg-type]
    assert caught.value.exit_code == 1


# ------------------------------------------------------------------------------------------ recorders
# The expected keys are spelled out: they are what the lineage chain, history and the Models view read.

_DATA = DatasetRef(uri="file:///data/train.parquet", digest="d" * 64, rows=10)
_TRAINED = TrainResult(
    mlflow_run_id="train-run",
    model_uri="models:/m-1",
    task="classification",
    target="churned",
    estimator="logistic_regression",
    dataset_digest=_DATA.digest,
    dataset_uri=_DATA.uri,
    validation_result_uri="file:///validation/result.json",
)

#: Tags every step run carries (``step_run``): not what a recorder wrote.
_IDENTITY = {tags.RUN_KEY, tags.ROLE, tags.STEP, tags.PIPELINE, tags.PIPELINE_RUN_ID, tags.TRY_NUMBER}
_IDENTITY |= {tags.PACKAGE_VERSION, tags.STATE, tags.SPEC_DIGEST, tags.STEP_IMAGE}


def _recorded(step: str, record: Callable[[lineage.StepRun], None]) -> dict[str, str]:
    with lineage.step_run(RunContext(pipeline="records", run_id="r1", step=step)) as run:
        record(run)
    return {k: v for k, v in run.tags().items() if k.startswith("mlops.") and k not in _IDENTITY}


def test_each_step_recorder_writes_its_tags(home: Path) -> None:
    validated = ValidateResult(
        success=True,
        dataset_digest=_DATA.digest,
        suite="s",
        evaluated=3,
        result_uri="file:///r",
        report_uri="file:///m",
    )
    promoted = PromoteResult(model_name="m", version="3", alias="champion", moved=False, reason="x" * 6000)
    data = {"mlops.dataset.uri": _DATA.uri, "mlops.dataset.digest": _DATA.digest}
    assert _recorded("ingest", lambda r: lineage.record_dataset(r, uri=_DATA.uri, digest=_DATA.digest)) == data
    assert _recorded("validate", lambda r: lineage.record_validation(r, validated, _DATA)) == data | {
        "mlops.validation.success": "true",
        "mlops.validation.result_uri": "file:///r",
        "mlops.validation.report_uri": "file:///m",
    }
    trained = _recorded(
        "train", lambda r: lineage.record_training(r, fingerprint="f", dataset=_DATA, validation_uri=None)
    )
    assert trained == data | {"mlops.train.fingerprint": "f"}
    assert _recorded("reuse", lambda r: lineage.record_reused_training(r, source_run_id="a", model_uri="m")) == {
        "mlops.train.cached_from": "a",
        "mlops.model_uri": "m",
    }
    evaluated = _recorded(
        "evaluate", lambda r: lineage.record_evaluation(r, passed=True, candidate_run_id="c", champion_version=None)
    )
    assert evaluated == {
        "mlops.evaluation.passed": "True",
        "mlops.candidate.run_id": "c",
        "mlops.champion.version": "none",
    }
    gated = _recorded("gate", lambda r: lineage.record_gate(r, model="m", go=False, reason="cooldown"))
    assert gated == {"mlops.gate.model": "m", "mlops.gate.go": "false", "mlops.gate.reason": "cooldown"}
    assert _recorded("promote", lambda r: lineage.record_promotion(r, promoted)) == {
        "mlops.promote.model": "m",
        "mlops.promote.version": "3",
        "mlops.promote.alias": "champion",
        "mlops.promote.moved": "False",
        "mlops.promote.reason": "x" * 5000,
    }


def test_a_versions_lineage_leads_back_to_its_data_training_and_evaluation() -> None:
    evaluation = EvaluateResult(
        passed=True,
        candidate=_TRAINED,
        candidate_metrics={"roc_auc": 0.912345678},
        dataset_digest="e" * 64,
        mlflow_run_id="eval-run",
    )
    assert lineage.version_lineage(evaluation, RunContext(pipeline="p", run_id="r7", step="promote")) == {
        "mlops.dataset.uri": _DATA.uri,
        "mlops.dataset.digest": _DATA.digest,
        "mlops.train.run_id": "train-run",
        "mlops.evaluate.run_id": "eval-run",
        "mlops.eval_dataset.digest": "e" * 64,
        "mlops.pipeline": "p",
        "mlops.run_id": "r7",
        "mlops.validation.result_uri": "file:///validation/result.json",
        "mlops.validation.success": "true",
        "mlops.metric.roc_auc": "0.912346",
    }


def test_a_superseded_version_is_recorded_and_read_back(home: Path) -> None:
    client = lineage.client()
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source="file:///model")
    lineage.tag_version("m", "1", {"mlops.metric.rmse": "1.5", "mlops.eval_dataset.digest": "d"})
    lineage.supersede("m", "1", "champion", by="2", reason="r" * 6000)
    record = lineage.version_record("m", "1")
    assert record.tags["mlops.alias.champion.superseded_by"] == "2"
    assert record.tags["mlops.alias.champion.superseded_reason"] == "r" * 5000
    assert "mlops.alias.champion.superseded_at" in record.tags and record.replaced_by("champion") is None
    assert record.evaluated("rmse") == lineage.Evaluated("1", "1.5", "d")


@pytest.mark.parametrize(
    ("other", "values"),
    [
        (lineage.Evaluated("4", "0.8", "d"), ("0.9", "0.8")),
        (lineage.Evaluated("4", "0.8", "e"), None),
        (lineage.Evaluated("4", None, "d"), None),
    ],
    ids=["same-rows", "other-rows", "missing-metric"],
)
def test_two_evaluations_compare_only_on_the_same_rows(
    other: lineage.Evaluated, values: tuple[str, str] | None
) -> None:
    assert lineage.Evaluated("3", "0.9", "d").comparable_with(other) == values
    assert lineage.Evaluated("3", "0.9", None).comparable_with(lineage.Evaluated("4", "0.8", None)) is None
