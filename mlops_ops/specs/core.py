"""Typed specs and result manifests of the training steps (pydantic v2, no heavy imports).

A step takes a spec and returns a result manifest. Results are small (URIs, digests, counts, metrics,
MLflow ids) so they can travel through XCom and pod arguments as ``model_dump(mode="json")``. A spec
field that takes an upstream step's output accepts that step's whole result manifest.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_ops.errors import SpecError

TaskType = Literal["classification", "regression"]
#: The estimator a training that names none uses, per task.
DEFAULT_ESTIMATORS = {
    "classification": "sklearn.ensemble.HistGradientBoostingClassifier",
    "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
}

#: Metrics each task type computes, and whether a higher value is better.
METRICS: dict[str, dict[str, bool]] = {
    "classification": {
        "accuracy": True,
        "roc_auc": True,
        "f1": True,
        "precision": True,
        "recall": True,
        "log_loss": False,
    },
    "regression": {"rmse": False, "mae": False, "r2": True},
}
ALL_METRICS = {name for group in METRICS.values() for name in group}
#: The metric compared with the champion when neither a compare metric nor a gate names one.
DEFAULT_COMPARE_METRIC = {"classification": "roc_auc", "regression": "rmse"}
#: The gate a training form that names none applies, per task: metric and threshold.
DEFAULT_GATES: dict[str, tuple[str, float]] = {"classification": ("roc_auc", 0.75), "regression": ("r2", 0.0)}

_ESTIMATOR_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+")
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


class StepSpec(BaseModel):
    """Base of step specs: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class StepResult(BaseModel):
    """Base of result manifests."""

    # Results are read back from XCom and files written by other versions: tolerate extra keys.
    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------------------------- results


class DatasetRef(StepResult):
    """A content-addressed Parquet file in the artifact store."""

    uri: str
    digest: str = Field(description="sha256 of the file's bytes, hex.")
    rows: int
    columns: dict[str, str] = Field(default_factory=dict, description="Column name to dtype.")


class IngestResult(StepResult):
    """What ingest produced: the snapshot and its frozen train and evaluation partitions."""

    step: Literal["ingest"] = "ingest"
    source: str
    snapshot: DatasetRef
    train: DatasetRef
    eval: DatasetRef
    mlflow_run_id: str | None = None


class Failure(StepResult):
    """One failed expectation."""

    expectation: str
    column: str | None = None
    unexpected_count: int | None = None
    detail: str = ""

    def line(self) -> str:
        where = f" on column '{self.column}'" if self.column else ""
        count = f": {self.unexpected_count} unexpected values" if self.unexpected_count is not None else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.expectation}{where}{count}{detail}"


class ValidateResult(StepResult):
    """Outcome of running the expectation suite on the snapshot."""

    step: Literal["validate"] = "validate"
    success: bool
    dataset_digest: str
    suite: str
    evaluated: int
    failures: list[Failure] = Field(default_factory=list)
    result_uri: str
    report_uri: str
    mlflow_run_id: str | None = None


class TrainResult(StepResult):
    """The candidate model and where it came from."""

    step: Literal["train"] = "train"
    mlflow_run_id: str
    model_uri: str
    model_id: str | None = None
    task: TaskType
    target: str
    estimator: str
    dataset_digest: str
    dataset_uri: str
    validation_result_uri: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    cached: bool = Field(default=False, description="An earlier identical training was reused.")


class EvaluateResult(StepResult):
    """Candidate and champion metrics on the same rows, and the gate decision."""

    step: Literal["evaluate"] = "evaluate"
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    candidate: TrainResult
    candidate_metrics: dict[str, float]
    champion_version: str | None = None
    champion_metrics: dict[str, float] | None = None
    compare_metric: str | None = Field(default=None, description="The metric compared with the champion.")
    dataset_digest: str
    report_uri: str | None = None
    mlflow_run_id: str | None = None


class PromoteResult(StepResult):
    """Where the candidate landed in the registry."""

    step: Literal["promote"] = "promote"
    model_name: str
    version: str
    alias: str
    previous_version: str | None = None
    moved: bool
    reason: str = Field(default="", description="Why the alias moved, or why it did not.")
    mlflow_run_id: str | None = None


# ----------------------------------------------------------------------------------------------- specs


class SplitSpec(StepSpec):
    """How the snapshot is split into train and evaluation partitions."""

    eval_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42
    stratify: bool = Field(default=True, description="Stratify on the target column (classification).")


class IngestSpec(StepSpec):
    """Read a CSV or Parquet source and snapshot it into the artifact store."""

    source: str = Field(min_length=1, description="Local path, file:// or s3:// URI.")
    format: Literal["auto", "csv", "parquet"] = "auto"
    target: str | None = Field(default=None, description="Target column; required to stratify.")
    split: SplitSpec = Field(default_factory=SplitSpec)


def _dataset(value: Any, partition: str) -> Any:
    """Accept an ingest result where a dataset is expected, and pick the named partition."""
    if isinstance(value, IngestResult):
        return getattr(value, partition)
    if isinstance(value, dict) and "snapshot" in value:
        return value[partition]
    return value


class ValidateSpec(StepSpec):
    """Validate the snapshot against an expectation suite file."""

    dataset: DatasetRef
    suite: str = Field(min_length=1, description="Path or URI of a Great Expectations suite (JSON).")

    @field_validator("dataset", mode="before")
    @classmethod
    def _snapshot(cls, value: Any) -> Any:
        return _dataset(value, "snapshot")


class TrainSpec(StepSpec):
    """Train a scikit-learn estimator inside a preprocessing pipeline."""

    dataset: DatasetRef
    target: str = Field(min_length=1)
    task: TaskType = "classification"
    estimator: str = Field(default="", description="Import path; empty: the task's (DEFAULT_ESTIMATORS).")
    estimator_params: dict[str, Any] = Field(default_factory=dict)
    features: list[str] | None = Field(default=None, description="Feature columns; default all but target.")
    seed: int = 42
    validation: ValidateResult | None = Field(default=None, description="Validation result, for lineage.")
    refit: bool = Field(
        default=False, description="Fit again even when an identical training (same data and spec) is recorded."
    )

    @field_validator("dataset", mode="before")
    @classmethod
    def _train(cls, value: Any) -> Any:
        return _dataset(value, "train")

    @model_validator(mode="before")
    @classmethod
    def _no_self_approval(cls, value: Any) -> Any:
        if isinstance(value, dict) and "allowed_estimator_prefixes" in value:
            raise ValueError(
                "allowed_estimator_prefixes cannot be set by a spec: which estimators besides scikit-learn's "
                "may run is the deployment's choice (MLOPS_ALLOWED_ESTIMATORS, or the operator's allowed_estimators)"
            )
        return value

    @model_validator(mode="after")
    def _check_estimator(self) -> TrainSpec:
        if not self.estimator:
            self.estimator = DEFAULT_ESTIMATORS[self.task]
        check_estimator_path(self.estimator)
        if self.validation is not None and not self.validation.success:
            raise ValueError("the dataset failed validation; refusing to train on it")
        return self


def check_estimator_path(path: str) -> None:
    """An estimator path is dotted public names (no ``_private`` segment); raises ValueError otherwise.

    This is syntax only; ``mlops_ops.steps.estimators.resolve`` decides what may run.
    """
    if len(path) > 200 or not _ESTIMATOR_PATH.fullmatch(path):
        raise ValueError(
            f"estimator {path[:200]!r} is not a public import path like 'sklearn.linear_model.Ridge' "
            "(letters, digits and underscores; no segment may start with '_')"
        )


class Gate(StepSpec):
    """An absolute threshold such as ``roc_auc >= 0.8``."""

    metric: str
    op: Literal[">=", ">", "<=", "<"] = ">="
    value: float

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _GATE.match(value)
            if not match:
                raise ValueError(f"gate {value!r} is not of the form 'metric >= number'")
            return {"metric": match[1], "op": match[2], "value": float(match[3])}
        return value

    def check(self, metrics: dict[str, float]) -> str | None:
        """Return why the gate fails on these metrics, or None if it passes."""
        actual = metrics.get(self.metric)
        if actual is None:
            return (
                f"{self.metric} was not computed (undefined on these evaluation rows, too few rows or classes, or "
                "the model gives no class probabilities); gate on another metric"
            )
        if not _OPS[self.op](actual, self.value):
            return f"{self.metric} = {actual:.4f}, required {self.op} {self.value:g}"
        return None

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class EvaluateSpec(StepSpec):
    """Score candidate and champion on the frozen evaluation partition and decide."""

    dataset: DatasetRef
    candidate: TrainResult
    registered_model: str = Field(min_length=1)
    gates: list[Gate] = Field(default_factory=list, description="Absolute thresholds, e.g. 'roc_auc >= 0.8'.")
    compare_metric: str | None = Field(default=None, description="Metric to compare with the champion.")
    min_improvement: float = Field(default=0.0, description="Margin by which the candidate must beat the champion.")
    champion_alias: str = "champion"

    @field_validator("dataset", mode="before")
    @classmethod
    def _eval(cls, value: Any) -> Any:
        return _dataset(value, "eval")

    @model_validator(mode="after")
    def _check_metrics(self) -> EvaluateSpec:
        known = METRICS[self.candidate.task]
        for name in [g.metric for g in self.gates] + ([self.compare_metric] if self.compare_metric else []):
            if name not in known:
                raise ValueError(
                    f"unknown metric {name!r} for {self.candidate.task}; known: {', '.join(sorted(known))}"
                )
        return self

    def comparison(self) -> str:
        """The metric compared against the champion (default: the first gate's, else the task's main one)."""
        if self.compare_metric:
            return self.compare_metric
        if self.gates:
            return self.gates[0].metric
        return DEFAULT_COMPARE_METRIC[self.candidate.task]


class PromoteSpec(StepSpec):
    """Register a candidate that passed evaluation and move an alias to it."""

    evaluation: EvaluateResult
    registered_model: str = Field(min_length=1)
    alias: str = Field(default="champion", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    reason: str = ""


S = TypeVar("S", bound=BaseModel)


def validate_spec(model: type[S], raw: Any, what: str) -> S:
    """Validate ``raw`` as ``model``; a bad one raises one SpecError naming every invalid field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(spec)'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise SpecError(f"invalid {what}: {problems}") from None
