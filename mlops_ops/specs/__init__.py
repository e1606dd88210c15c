"""Typed specs and result manifests of every step (pydantic v2, no heavy imports).

A step takes a spec and returns a result manifest. Results are small (URIs, digests, counts, metrics,
MLflow ids) so they travel through XCom and pod arguments as ``model_dump(mode="json")``.
"""

from __future__ import annotations

from mlops_ops.specs.core import (
    ALL_METRICS,
    DEFAULT_COMPARE_METRIC,
    DEFAULT_ESTIMATORS,
    DEFAULT_GATES,
    METRICS,
    DatasetRef,
    EvaluateResult,
    EvaluateSpec,
    Failure,
    Gate,
    IngestResult,
    IngestSpec,
    PromoteResult,
    PromoteSpec,
    SplitSpec,
    StepResult,
    StepSpec,
    TaskType,
    TrainResult,
    TrainSpec,
    ValidateResult,
    ValidateSpec,
    validate_spec,
)

__all__ = [
    "ALL_METRICS",
    "DEFAULT_COMPARE_METRIC",
    "DEFAULT_ESTIMATORS",
    "DEFAULT_GATES",
    "METRICS",
    "DatasetRef",
    "EvaluateResult",
    "EvaluateSpec",
    "Failure",
    "Gate",
    "IngestResult",
    "IngestSpec",
    "PromoteResult",
    "PromoteSpec",
    "SplitSpec",
    "StepResult",
    "StepSpec",
    "TaskType",
    "TrainResult",
    "TrainSpec",
    "ValidateResult",
    "ValidateSpec",
    "validate_spec",
]
