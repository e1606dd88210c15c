"""The validate step: GX 1.x suites on the demo snapshots, stored results and reports, and clear failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_ops import lineage
from mlops_ops.context import RunContext
from mlops_ops.demo import DATA_DIR, SUITE_PATH
from mlops_ops.errors import DataError, SpecError, ValidationFailed
from mlops_ops.specs import DatasetRef, IngestResult, IngestSpec, ValidateResult, ValidateSpec
from mlops_ops.steps import ingest, validate
from mlops_ops.store import local_path, store_for
from tests.conftest import isolated_home

# The first validation in a process imports Great Expectations (~10 s); the module shares it.
pytestmark = pytest.mark.slow

SUITE = str(SUITE_PATH)
EXPECTATIONS = len(json.loads(SUITE_PATH.read_text())["expectations"])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with isolated_home(tmp_path_factory.mktemp("mlops")) as path:
        yield path


@pytest.fixture(scope="module")
def snapshots(home: Path) -> dict[str, IngestResult]:
    """The three demo files, ingested once."""
    return {
        kind: ingest.run(
            IngestSpec(source=str(DATA_DIR / f"{name}.csv"), target="churned"),
            RunContext(pipeline="test", run_id=kind, step="ingest"),
            store_for(),
        )
        for kind, name in (("base", "churn"), ("drift", "churn_drift"), ("corrupt", "churn_corrupt"))
    }


def run_validate(dataset: Any, suite: str = SUITE, run_id: str = "r1") -> ValidateResult:
    spec = ValidateSpec(dataset=dataset, suite=suite)
    return validate.run(spec, RunContext(pipeline="test", run_id=run_id, step="validate"), store_for())


@pytest.fixture(scope="module")
def base_result(snapshots: dict[str, IngestResult]) -> ValidateResult:
    return run_validate(snapshots["base"], run_id="base")


@pytest.fixture(scope="module")
def corrupt_failure(snapshots: dict[str, IngestResult]) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        run_validate(snapshots["corrupt"], run_id="corrupt")
    return caught.value


def text(uri: str) -> str:
    path = local_path(uri)
    assert path is not None and path.is_file(), f"no file at {uri}"
    return path.read_text()


# --------------------------------------------------------------------------------------------- passing


def test_base_data_passes_and_its_result_and_report_are_stored(
    base_result: ValidateResult, snapshots: dict[str, IngestResult]
) -> None:
    assert base_result.success and base_result.failures == []
    assert base_result.suite == "churn_suite"
    assert base_result.evaluated == EXPECTATIONS
    assert base_result.dataset_digest == snapshots["base"].snapshot.digest
    outcome = json.loads(text(base_result.result_uri))
    assert outcome["success"] is True and len(outcome["results"]) == EXPECTATIONS
    assert outcome["meta"]["mlops"]["dataset_digest"] == base_result.dataset_digest
    report = text(base_result.report_uri)
    assert report.startswith("# Validation of dataset")
    assert f"**PASSED**: {EXPECTATIONS} of {EXPECTATIONS} expectations met, 0 failed." in report


def test_drifted_data_still_passes(snapshots: dict[str, IngestResult]) -> None:
    assert run_validate(snapshots["drift"], run_id="drift").success


def test_the_mlflow_run_has_metrics_tags_and_both_artifacts(base_result: ValidateResult) -> None:
    client = lineage.client()
    assert base_result.mlflow_run_id is not None
    run = client.get_run(base_result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"evaluated": EXPECTATIONS, "failed": 0}
    assert run.data.tags["mlops.validation.success"] == "true"
    assert run.data.tags["mlops.validation.result_uri"] == base_result.result_uri
    names = {a.path for a in client.list_artifacts(base_result.mlflow_run_id, "validation")}
    assert names == {"validation/result.json", "validation/report.md"}


def test_a_rerun_reuses_the_stored_result_under_the_same_keys(
    base_result: ValidateResult, snapshots: dict[str, IngestResult], caplog: pytest.LogCaptureFixture
) -> None:
    stored = text(base_result.result_uri)
    with caplog.at_level("INFO", logger="mlops_ops.steps.validate"):
        again = run_validate(snapshots["base"], run_id="base")
    assert again == base_result
    assert "reusing the validation of this dataset and suite" in caplog.text
    assert text(base_result.result_uri) == stored
    # Another pipeline run gets its own MLflow run but the same stored result.
    other = run_validate(snapshots["base"], run_id="base-again")
    assert other.result_uri == base_result.result_uri and other.mlflow_run_id != base_result.mlflow_run_id


def test_validation_keeps_progress_bars_and_gx_chatter_off_stderr(
    snapshots: dict[str, IngestResult], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    suite = json.loads(SUITE_PATH.read_text())
    suite["name"] = "fresh_suite"  # a new suite digest, so GX really runs
    (tmp_path / "fresh.json").write_text(json.dumps(suite))
    capfd.readouterr()
    assert run_validate(snapshots["base"], suite=str(tmp_path / "fresh.json"), run_id="fresh").success
    err = capfd.readouterr().err
    assert "Calculating Metrics" not in err and "great_expectations" not in err


# --------------------------------------------------------------------------------------------- failing


def test_corrupt_data_fails_naming_every_failed_expectation(corrupt_failure: ValidationFailed) -> None:
    message = str(corrupt_failure)
    assert message.startswith(f"4 of {EXPECTATIONS} expectations failed in churn_suite: ")
    for line in (
        "expect_column_values_to_be_between on column 'age': 16 unexpected values (e.g. ",
        "expect_column_values_to_not_be_null on column 'monthly_charges': 16 unexpected values;",
        "expect_column_values_to_be_between on column 'support_calls': 16 unexpected values (e.g. ",
        "expect_column_values_to_be_in_set on column 'contract': 16 unexpected values (e.g. 'three-year')",
    ):
        assert line in message
    assert "\n" not in message and message.endswith("fix the data, or revise the suite if the data is right")


def test_a_failed_validation_is_written_and_logged_before_it_raises(
    corrupt_failure: ValidationFailed, snapshots: dict[str, IngestResult]
) -> None:
    client = lineage.client()
    runs = client.search_runs(
        [lineage.experiment_id("test")],
        "tags.`mlops.step` = 'validate' and tags.`mlops.run_key` = 'test/corrupt'",
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["mlops.validation.success"] == "false"
    assert run.data.metrics["failed"] == 4
    report = text(run.data.tags["mlops.validation.report_uri"])
    assert (
        "**FAILED**" in report and "| expect_column_values_to_be_in_set | contract | 16 | e.g. 'three-year' |" in report
    )
    outcome = json.loads(text(run.data.tags["mlops.validation.result_uri"]))
    assert outcome["success"] is False
    assert outcome["statistics"]["unsuccessful_expectations"] == 4
    assert outcome["meta"]["mlops"]["dataset_digest"] == snapshots["corrupt"].snapshot.digest


def test_a_wrong_type_reports_the_observed_dtype(home: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(DATA_DIR / "churn.csv").astype({"age": "float64"})
    frame.to_csv(tmp_path / "float_age.csv", index=False, float_format="%.1f")
    snapshot = ingest.run(
        IngestSpec(source=str(tmp_path / "float_age.csv"), target="churned"),
        RunContext(pipeline="test", run_id="float", step="ingest"),
        store_for(),
    )
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_in_type_list on column 'age'.*float64"):
        run_validate(snapshot, run_id="float")


# ---------------------------------------------------------------------------------------- bad suites


def test_a_missing_suite_is_a_spec_error(snapshots: dict[str, IngestResult], tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"suite '.*nope\.json' not found; .*'mlops-ops suite infer DATA --out FILE'"):
        run_validate(snapshots["base"], suite=str(tmp_path / "nope.json"))


def test_a_suite_that_is_not_json_is_a_spec_error(snapshots: dict[str, IngestResult], tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match=r"bad\.json' is not valid JSON: .*; fix the file"):
        run_validate(snapshots["base"], suite=str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SpecError, match=r"has no 'expectations' list"):
        run_validate(snapshots["base"], suite=str(tmp_path / "list.json"))


def test_an_unknown_expectation_is_a_spec_error_naming_it(snapshots: dict[str, IngestResult], tmp_path: Path) -> None:
    suite = {
        "name": "typo",
        "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "age"}},
            {"type": "expect_column_values_to_be_postive", "kwargs": {"column": "age"}},
        ],
    }
    (tmp_path / "typo.json").write_text(json.dumps(suite))
    with pytest.raises(
        SpecError, match=r"expectation 2 \('expect_column_values_to_be_postive'\) of suite 'typo' is invalid"
    ):
        run_validate(snapshots["base"], suite=str(tmp_path / "typo.json"))


def test_a_snapshot_whose_bytes_do_not_match_its_digest_is_a_data_error(
    snapshots: dict[str, IngestResult], tmp_path: Path
) -> None:
    real = snapshots["base"].snapshot
    forged = DatasetRef(uri=real.uri, digest="0" * 64, rows=real.rows, columns=real.columns)
    with pytest.raises(DataError, match=r"has sha256 .*, not 000000000000\.\.\. as recorded; run ingest again"):
        run_validate(forged)


# --------------------------------------------------------------------------------------- inferred suite


def test_a_suite_inferred_from_reference_data_passes_on_it(snapshots: dict[str, IngestResult], tmp_path: Path) -> None:
    from mlops_ops.suite import write_suite

    out = write_suite(str(DATA_DIR / "churn.csv"), tmp_path / "inferred.json", target="churned")
    result = run_validate(snapshots["base"], suite=out, run_id="inferred")
    assert result.success and result.suite == "inferred"
