"""
### mlops_training

Ingest → validate → train → evaluate → promote, triggered from the Airflow UI with a form.

* **ingest** snapshots the data (content-addressed Parquet) and freezes a train/eval split.
* **validate** runs the Great Expectations suite; a failure stops the run before training.
* **train** fits the estimator in a preprocessing pipeline and logs it to MLflow.
* **evaluate** scores the candidate and the current champion on the same frozen rows.
* **promote** registers the candidate and moves the alias, or is skipped with the reasons.

Every step runs `mlops-ops step NAME --spec ...`, locally or in a Kubernetes pod (the *runner* field).
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from mlops_ops.demo import DATA_DIR, SUITE_PATH
from mlops_ops.operators import EvaluateOperator, IngestOperator, PromoteOperator, TrainOperator, ValidateOperator

LOWER_IS_BETTER = ("rmse", "mae", "log_loss")
ESTIMATORS = [
    "sklearn.ensemble.HistGradientBoostingClassifier",
    "sklearn.ensemble.RandomForestClassifier",
    "sklearn.linear_model.LogisticRegression",
    "sklearn.ensemble.HistGradientBoostingRegressor",
    "sklearn.ensemble.RandomForestRegressor",
    "sklearn.linear_model.Ridge",
]

with DAG(
    dag_id="mlops_training",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["mlops", "training"],
    render_template_as_native_obj=True,
    max_active_runs=4,
    default_args={"retries": 1},
    params={
        "data_uri": Param(
            str(DATA_DIR / "churn.csv"),
            type="string",
            title="Data URI",
            description="CSV or Parquet: a local path, file:// or s3:// URI.",
        ),
        "target": Param("churned", type="string", title="Target column"),
        "task": Param("classification", enum=["classification", "regression"], title="Task type"),
        "estimator": Param(
            ESTIMATORS[0],
            type="string",
            title="Estimator",
            description="Import path of a scikit-learn estimator.",
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
            "roc_auc", enum=["roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"], title="Gate metric"
        ),
        "gate_threshold": Param(
            0.75,
            type="number",
            title="Gate threshold",
            description="Minimum (or maximum, for error metrics) the candidate must reach.",
        ),
        "min_improvement": Param(
            0.0,
            type="number",
            title="Margin over the champion",
            description="How much the candidate must beat the champion by on the gate metric.",
        ),
        "registered_model": Param(
            "churn-classifier", type="string", title="Registered model", pattern=r"^[A-Za-z0-9_.-]+$"
        ),
        "promotion_policy": Param(
            "champion",
            enum=["champion", "challenger"],
            title="Promotion policy",
            description="Move 'champion' directly, or 'challenger' for a later approval.",
        ),
        "runner": Param(
            "local",
            enum=["local", "kubernetes"],
            title="Runner",
            description="Run steps as local processes or as Kubernetes pods.",
        ),
    },
) as dag:
    common = {"runner": "{{ params.runner }}"}
    gate = (
        "{{ params.gate_metric }} "
        f"{{{{ '<=' if params.gate_metric in {LOWER_IS_BETTER!r} else '>=' }}}}"
        " {{ params.gate_threshold }}"
    )

    ingest = IngestOperator(task_id="ingest", source="{{ params.data_uri }}", target="{{ params.target }}", **common)
    validate = ValidateOperator(
        task_id="validate", dataset=ingest.output, suite="{{ params.suite }}", retries=0, **common
    )
    train = TrainOperator(
        task_id="train",
        dataset=ingest.output,
        validation=validate.output,
        target="{{ params.target }}",
        task="{{ params.task }}",
        estimator="{{ params.estimator }}",
        estimator_params="{{ params.estimator_params }}",
        **common,
    )
    evaluate = EvaluateOperator(
        task_id="evaluate",
        dataset=ingest.output,
        candidate=train.output,
        registered_model="{{ params.registered_model }}",
        gates=[gate],
        compare_metric="{{ params.gate_metric }}",
        min_improvement="{{ params.min_improvement }}",
        **common,
    )
    promote = PromoteOperator(
        task_id="promote",
        evaluation=evaluate.output,
        registered_model="{{ params.registered_model }}",
        alias="{{ params.promotion_policy }}",
        **common,
    )
