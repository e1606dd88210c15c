"""Typed specs and result manifests of the monitoring steps, score and drift (pydantic v2, no heavy imports).

Both steps watch a registered model version: ``score`` predicts with it on a dataset snapshot, ``drift``
compares a snapshot with the data the version was trained on. Both find the version through an alias
(``champion`` by default) or a version number, and record their runs against it in MLflow.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlops_ops.specs.core import DatasetRef, StepResult, StepSpec, TaskType, _dataset

_ALIAS = r"^[A-Za-z_][A-Za-z0-9_-]*$"


def _predictions(value: Any) -> Any:
    """Accept a score result where a predictions dataset is expected."""
    if isinstance(value, ScoreResult):
        return value.predictions
    if isinstance(value, dict) and value.get("step") == "score" and "predictions" in value:
        return value["predictions"]
    return value


class _Watched(StepSpec):
    """Which version of ``registered_model`` to watch: an alias (default ``champion``) or a version number."""

    alias: str = Field(default="champion", pattern=_ALIAS, description="Alias to resolve; ignored if version is set.")
    version: str | None = Field(default=None, pattern=r"^[0-9]+$", description="A version number; wins over alias.")

    @model_validator(mode="after")
    def _one_of(self) -> _Watched:
        if self.version is not None and "alias" in self.model_fields_set:
            raise ValueError(f"give alias ({self.alias!r}) or version ({self.version!r}), not both")
        return self


# --------------------------------------------------------------------------------------------- score


class ScoreSpec(_Watched):
    """Score a dataset snapshot with a registered model version and store the predictions.

    No alias holding a version is a SpecError (exit 2): the spec names a model state that does not exist
    yet (promote a version first, or give ``version``). A dataset that lacks a feature the model was
    trained on is a DataError (exit 3).
    """

    registered_model: str = Field(min_length=1)
    dataset: DatasetRef
    keys: list[str] = Field(default_factory=list, description="Input columns copied to the predictions (row ids).")
    probabilities: bool = Field(default=True, description="Write proba_<class> columns for a classifier.")
    batch_rows: int = Field(default=128 * 1024, ge=1, description="Rows read, scored and written at a time.")

    @field_validator("dataset", mode="before")
    @classmethod
    def _snapshot(cls, value: Any) -> Any:
        return _dataset(value, "snapshot")

    @field_validator("keys")
    @classmethod
    def _no_reserved(cls, value: list[str]) -> list[str]:
        clash = [k for k in value if k == "prediction" or k.startswith("proba_")]
        if clash:
            raise ValueError(f"key columns {clash} clash with the output columns 'prediction' and 'proba_<class>'")
        if len(set(value)) != len(value):
            raise ValueError(f"key columns {value} name a column twice")
        return value


class ScoreResult(StepResult):
    """Where the predictions are, which model version made them, and their distribution."""

    step: Literal["score"] = "score"
    registered_model: str
    version: str
    alias: str | None = None
    model_uri: str
    task: TaskType
    dataset: DatasetRef
    predictions: DatasetRef
    classes: list[str] | None = Field(default=None, description="Class labels (classifiers), as text.")
    distribution: dict[str, float] = Field(
        default_factory=dict,
        description="Class shares (share.<class>) and mean probabilities (proba_mean.<class>), or quantiles "
        "(q05 .. q95, mean, min, max) of a regression's predictions.",
    )
    quantile_sample_rows: int | None = Field(
        default=None, description="Rows the quantiles were computed on (a systematic sample when fewer than rows)."
    )
    mlflow_run_id: str | None = None


# --------------------------------------------------------------------------------------------- drift


class DriftThresholds(StepSpec):
    """Per-column tests and their thresholds (Evidently's defaults)."""

    small_sample_rows: int = Field(
        default=1000, ge=1, description="Both sides at most this many rows: KS / chi-squared; else distances."
    )
    ks_p_value: float = Field(default=0.05, gt=0, lt=1, description="Numeric, small: drift if KS p-value < this.")
    chi2_p_value: float = Field(default=0.05, gt=0, lt=1, description="Categorical, small: drift if p-value < this.")
    wasserstein: float = Field(default=0.1, gt=0, description="Numeric, large: Wasserstein / reference std >= this.")
    jensenshannon: float = Field(default=0.1, gt=0, description="Categorical, large: Jensen-Shannon distance >= this.")
    psi: float = Field(default=0.2, gt=0, description="PSI at or above this is reported as drifted (informative).")
    psi_bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of the reference for PSI.")
    drift_share: float = Field(default=0.5, gt=0, le=1, description="Retraining advised when this share drifted.")


class DriftSpec(_Watched):
    """Compare a current snapshot with a reference: the watched version's training data, or an explicit one."""

    current: DatasetRef
    reference: DatasetRef | None = Field(default=None, description="Explicit reference; default the model's data.")
    registered_model: str | None = Field(
        default=None, min_length=1, description="Model whose version's training data is the reference (by default)."
    )
    current_predictions: DatasetRef | None = Field(default=None, description="Predictions on current (score result).")
    reference_predictions: DatasetRef | None = Field(default=None, description="Predictions on the reference.")
    target: str | None = Field(default=None, description="Target column to leave out; default the model's target.")
    keys: list[str] = Field(default_factory=list, description="Row-id columns to leave out.")
    columns: list[str] | None = Field(default=None, description="Compare only these columns.")
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    sample_rows: int | None = Field(
        default=200_000,
        ge=1000,
        description="Distances on a side larger than this use a seeded sample of this many rows (None: all rows).",
    )
    seed: int = 0
    max_plots: int = Field(default=10, ge=0, description="Overlay histograms drawn: drifted columns first.")

    @field_validator("current", mode="before")
    @classmethod
    def _current(cls, value: Any) -> Any:
        return _dataset(value, "snapshot")

    @field_validator("reference", mode="before")
    @classmethod
    def _reference(cls, value: Any) -> Any:
        return _dataset(value, "snapshot")

    @field_validator("current_predictions", "reference_predictions", mode="before")
    @classmethod
    def _scored(cls, value: Any) -> Any:
        return _predictions(value)

    @model_validator(mode="after")
    def _has_reference(self) -> DriftSpec:
        if self.reference is None and self.registered_model is None:
            raise ValueError("give a reference dataset or a registered_model whose training data is the reference")
        if self.sample_rows is not None and self.sample_rows <= self.thresholds.small_sample_rows:
            raise ValueError(
                f"sample_rows ({self.sample_rows}) must exceed thresholds.small_sample_rows "
                f"({self.thresholds.small_sample_rows}), or a sample would be judged as a small one"
            )
        return self


class ColumnDrift(StepResult):
    """The verdict on one column."""

    column: str
    kind: Literal["numeric", "categorical"]
    statistic: Literal["ks", "wasserstein", "chi2", "jensenshannon", "empty"]
    value: float = Field(description="p-value for ks and chi2; the distance for wasserstein and jensenshannon.")
    threshold: float
    drifted: bool
    psi: float | None = None
    psi_drifted: bool = False
    reference_rows: int = Field(description="Non-missing values compared on the reference side.")
    current_rows: int = Field(description="Non-missing values compared on the current side.")
    new_categories: list[str] = Field(default_factory=list, description="Categories absent from the reference.")
    new_category_rows: int = 0
    detail: str = ""

    def score(self) -> float:
        """How far past its threshold the column is (> 1 drifted), to rank columns."""
        if self.statistic in ("ks", "chi2"):
            return self.threshold / max(self.value, 1e-300)
        if self.statistic == "empty":
            return float(self.drifted) * 2.0
        return self.value / self.threshold

    def line(self) -> str:
        cmp = "<" if self.statistic in ("ks", "chi2") else ">="
        verdict = f"{self.value:.4g} {cmp} {self.threshold:g}" if self.drifted else f"{self.value:.4g}"
        new = f", new categories {self.new_categories[:5]}" if self.new_categories else ""
        psi = f", PSI {self.psi:.3f}" if self.psi is not None else ""
        return f"{self.column}: {self.statistic} {verdict}{psi}{new}"


class SampleInfo(StepResult):
    """Rows the distances were computed on, when a side was sampled."""

    reference_rows: int
    current_rows: int
    seed: int


class DriftResult(StepResult):
    """Per-column drift, the share of drifted columns, and whether retraining is advised."""

    step: Literal["drift"] = "drift"
    registered_model: str | None = None
    version: str | None = None
    reference: DatasetRef
    current: DatasetRef
    columns: list[ColumnDrift]
    drifted_columns: list[str]
    drift_share: float
    prediction: ColumnDrift | None = None
    missing_columns: list[str] = Field(default_factory=list, description="Reference columns absent from current.")
    new_columns: list[str] = Field(default_factory=list, description="Current columns absent from the reference.")
    skipped_columns: list[str] = Field(default_factory=list, description="Columns of types drift is not computed for.")
    retrain_advised: bool
    reasons: list[str] = Field(default_factory=list)
    sample: SampleInfo | None = Field(default=None, description="Set when distances used a seeded sample.")
    result_uri: str | None = None
    report_uri: str | None = None
    mlflow_run_id: str | None = None
