"""Airflow operators for the steps (thin adapters over the step specs and runners)."""

from __future__ import annotations

from mlops_ops.operators.base import MlopsStepOperator
from mlops_ops.operators.steps import (
    EvaluateOperator,
    IngestOperator,
    PromoteOperator,
    StepOperator,
    TrainOperator,
    ValidateOperator,
)

__all__ = [
    "EvaluateOperator",
    "IngestOperator",
    "MlopsStepOperator",
    "PromoteOperator",
    "StepOperator",
    "TrainOperator",
    "ValidateOperator",
]
