"""Spec models: gates, estimator allow-list, metric names, and upstream manifests as inputs."""

from __future__ import annotations

import pytest

from mlops_ops.errors import SpecError
from mlops_ops.specs import EvaluateSpec, Gate, TrainSpec, ValidateSpec
from mlops_ops.steps.registry import parse_spec

REF = {"uri": "file:///x.parquet", "digest": "ab" * 32, "rows": 10}
INGEST = {"source": "x.csv", "snapshot": REF, "train": REF | {"rows": 8}, "eval": REF | {"rows": 2}}
CANDIDATE = {
    "mlflow_run_id": "r1",
    "model_uri": "models:/m-1",
    "task": "classification",
    "target": "y",
    "estimator": "sklearn.linear_model.LogisticRegression",
    "dataset_digest": "d",
    "dataset_uri": "u",
}


def test_gate_parses_expression_and_checks_metrics() -> None:
    gate = Gate.model_validate("roc_auc >= 0.8")
    assert (gate.metric, gate.op, gate.value) == ("roc_auc", ">=", 0.8)
    assert gate.check({"roc_auc": 0.81}) is None
    assert gate.check({"roc_auc": 0.7}) == "roc_auc = 0.7000, required >= 0.8"
    assert gate.check({}).startswith("roc_auc was not computed")


def test_gate_rejects_malformed_expression() -> None:
    with pytest.raises(SpecError, match="not of the form 'metric >= number'"):
        parse_spec("evaluate", {"dataset": REF, "candidate": CANDIDATE, "registered_model": "m", "gates": ["auc ~ 1"]})


def test_threshold_on_unknown_metric_is_named() -> None:
    with pytest.raises(SpecError, match="unknown metric 'auroc' for classification; known: accuracy, f1"):
        parse_spec(
            "evaluate", {"dataset": REF, "candidate": CANDIDATE, "registered_model": "m", "gates": ["auroc >= 0.8"]}
        )


def test_regression_metric_on_classifier_is_rejected() -> None:
    with pytest.raises(SpecError, match="unknown metric 'rmse'"):
        parse_spec(
            "evaluate", {"dataset": REF, "candidate": CANDIDATE, "registered_model": "m", "compare_metric": "rmse"}
        )


@pytest.mark.parametrize("estimator", ["sklearn", "sklearn.utils._testing.check_output", "os.system()", "a..b"])
def test_estimator_path_must_be_public_dotted_names(estimator: str) -> None:
    with pytest.raises(SpecError, match="is not a public import path"):
        parse_spec("train", {"dataset": REF, "target": "y", "estimator": estimator})


def test_a_spec_cannot_widen_the_estimator_allow_list() -> None:
    spec = {"dataset": REF, "target": "y", "estimator": "os.system", "allowed_estimator_prefixes": ["os."]}
    with pytest.raises(SpecError, match="allowed_estimator_prefixes cannot be set by a spec"):
        parse_spec("train", spec)


def test_ingest_result_selects_the_right_partition() -> None:
    assert ValidateSpec.model_validate({"dataset": INGEST, "suite": "s.json"}).dataset.rows == 10
    assert TrainSpec.model_validate({"dataset": INGEST, "target": "y"}).dataset.rows == 8
    spec = EvaluateSpec.model_validate({"dataset": INGEST, "candidate": CANDIDATE, "registered_model": "m"})
    assert spec.dataset.rows == 2
    assert spec.comparison() == "roc_auc"


def test_training_on_failed_validation_is_refused() -> None:
    failed = {
        "success": False,
        "dataset_digest": "d",
        "suite": "s",
        "evaluated": 3,
        "result_uri": "r",
        "report_uri": "p",
    }
    with pytest.raises(SpecError, match="failed validation; refusing to train"):
        parse_spec("train", {"dataset": REF, "target": "y", "validation": failed})


def test_unknown_field_is_reported_with_its_name() -> None:
    with pytest.raises(SpecError, match=r"invalid ingest spec: sourse: Extra inputs are not permitted"):
        parse_spec("ingest", {"source": "a.csv", "sourse": "typo"})


def test_promote_compares_on_the_metric_the_evaluation_manifest_names() -> None:
    from mlops_ops.specs import PromoteSpec
    from mlops_ops.steps.promote import compare_metric

    evaluation = {
        "passed": True,
        "candidate": CANDIDATE,
        "candidate_metrics": {"accuracy": 0.9},
        "dataset_digest": "d",
    }
    named = PromoteSpec.model_validate(
        {"evaluation": evaluation | {"compare_metric": "accuracy"}, "registered_model": "m"}
    )
    older = PromoteSpec.model_validate({"evaluation": evaluation, "registered_model": "m"})  # a manifest without it
    assert (compare_metric(named), compare_metric(older)) == ("accuracy", "roc_auc")
