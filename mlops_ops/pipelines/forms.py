"""The trigger forms (DAG params) the pipelines share, so a field means the same thing in every DAG."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from mlops_ops.demo import DATA_DIR, SUITE_PATH
from mlops_ops.specs import ALL_METRICS

ESTIMATORS = [
    "sklearn.ensemble.HistGradientBoostingClassifier",
    "sklearn.ensemble.RandomForestClassifier",
    "sklearn.linear_model.LogisticRegression",
    "sklearn.ensemble.HistGradientBoostingRegressor",
    "sklearn.ensemble.RandomForestRegressor",
    "sklearn.linear_model.Ridge",
]
_MODEL = r"^[A-Za-z0-9_.-]+$"
#: Metrics in the gate's menu: the form's order first, then any other metric ``METRICS`` knows.
_GATE_METRICS = ["roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"]


def runner_param() -> Param:
    """Where steps run."""
    return Param(
        "local",
        enum=["local", "kubernetes"],
        title="Runner",
        description="Run steps as local processes or as Kubernetes pods.",
    )


def model_param(default: str) -> Param:
    return Param(default, type="string", title="Registered model", pattern=_MODEL)


def training_params(*, data_uri: str | None = None, registered_model: str = "churn-classifier") -> dict[str, Any]:
    """The training form: data, estimator, suite, gate, model, promotion policy, runner, force.

    :param data_uri: Default data; ``None`` for the demo batch. An empty string means "from the event".
    :param registered_model: Default registered model.
    """
    metrics = _GATE_METRICS + sorted(ALL_METRICS - set(_GATE_METRICS))
    return {
        "data_uri": Param(
            str(DATA_DIR / "churn.csv") if data_uri is None else data_uri,
            type="string",
            title="Data URI",
            description="CSV or Parquet: a local path, file:// or s3:// URI.",
        ),
        "target": Param("churned", type="string", title="Target column"),
        "task": Param("classification", enum=["classification", "regression"], title="Task type"),
        "estimator": Param(
            "",
            type="string",
            title="Estimator",
            description="Import path of a scikit-learn estimator; empty for the task's default "
            "(HistGradientBoostingClassifier or HistGradientBoostingRegressor).",
            examples=ESTIMATORS,
        ),
        "estimator_params": Param(
            {"max_iter": 100, "learning_rate": 0.1},
            type="object",
            title="Estimator parameters",
            description="JSON object passed to the estimator.",
        ),
        "suite": Param(
            str(SUITE_PATH),
            type="string",
            title="Expectation suite",
            description="Path or URI of the Great Expectations suite (JSON).",
        ),
        "gate_metric": Param(
            "",
            enum=["", *metrics],
            title="Gate metric",
            description="Empty for the task's: roc_auc for classification, r2 for regression.",
        ),
        "gate_threshold": Param(
            None,
            type=["null", "number"],
            title="Gate threshold",
            description="Minimum (or maximum, for error metrics) the candidate must reach; empty for the task's "
            "(0.75 for roc_auc, 0.0 for r2).",
        ),
        "min_improvement": Param(
            0.0,
            type="number",
            title="Margin over the champion",
            description="How much the candidate must beat the champion by on the gate metric.",
        ),
        "registered_model": model_param(registered_model),
        "promotion_policy": Param(
            "champion",
            enum=["champion", "challenger", "approval"],
            title="Promotion policy",
            description="Move 'champion' directly, 'challenger' for a later decision, or 'approval': a reviewer "
            "approves moving 'champion' in Browse > Required Actions (rejected after 3 days without an answer).",
        ),
        "runner": runner_param(),
        "force": force_param(),
    }


def force_param(description: str = "", default: bool = False) -> Param:
    """Run every step again instead of reusing an identical earlier run's result."""
    return Param(
        default,
        type="boolean",
        title="Force",
        description=description
        or "Run every step again, even one whose identical earlier run's result would be reused "
        "(ingest, validate and train on the local runner).",
    )


def monitoring_params(*, data_uri: str, registered_model: str = "churn-classifier") -> dict[str, Any]:
    """The scoring form: the batch, the model and alias watched, validation on or off, drift settings."""
    return {
        "data_uri": Param(
            data_uri,
            type="string",
            title="Batch URI",
            description="CSV or Parquet to score when no landed batch triggered the run: a path, file:// or s3://.",
        ),
        "registered_model": model_param(registered_model),
        "alias": Param("champion", type="string", title="Alias scored", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$"),
        "target": Param(
            "churned",
            type="string",
            title="Target column",
            description="Left out of scoring and drift when the batch has it (labelled data).",
        ),
        "validate": Param(
            False, type="boolean", title="Validate the batch", description="Run the expectation suite first."
        ),
        "suite": Param(str(SUITE_PATH), type="string", title="Expectation suite"),
        "drift_share": Param(
            0.5,
            type="number",
            minimum=0.01,
            maximum=1.0,
            title="Drift share",
            description="Share of drifted columns at which retraining is requested.",
        ),
        "runner": runner_param(),
    }
