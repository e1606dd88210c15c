"""Typed spec and result of the retraining gate: should this run train at all (pydantic v2, no heavy imports)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlops_ops.specs.core import StepResult, StepSpec

_ALIAS = r"^[A-Za-z_][A-Za-z0-9_-]*$"


class GateSpec(StepSpec):
    """Decide whether a retraining run of ``registered_model`` trains, by cooldown, new rows, or ``force``.

    The cooldown counts from the model's last training activity: the last move of ``alias``, the last
    version registered, or the last run this gate let through (a training that evaluation then rejected
    still counts, so a burst of retrain requests starts one training, not one each).
    """

    registered_model: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    alias: str = Field(default="champion", pattern=_ALIAS)
    cooldown_hours: float = Field(default=6.0, ge=0, description="Hours since the last training; 0 turns it off.")
    min_rows: int = Field(default=0, ge=0, description="Rows the new batch must hold; 0 turns the check off.")
    data_uri: str | None = Field(default=None, description="The new batch (CSV or Parquet) whose rows are counted.")
    force: bool = Field(default=False, description="Train whatever the cooldown and the row count say.")
    trigger: str = Field(
        default="", max_length=2000, description="What asked for this run, recorded with the decision."
    )


class GateResult(StepResult):
    """The decision, and why."""

    step: Literal["gate"] = "gate"
    registered_model: str
    go: bool
    reason: str
    last_training_at: str | None = Field(default=None, description="ISO time of the last training activity.")
    last_training: str | None = Field(default=None, description="What that activity was.")
    rows: int | None = Field(default=None, description="Rows of the new batch, when they were counted.")
    data_uri: str | None = None
    forced: bool = False
    mlflow_run_id: str | None = None
