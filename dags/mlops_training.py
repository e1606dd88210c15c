"""
### mlops_training

Ingest → validate → train → evaluate → (approve) → promote, triggered from the Airflow UI with a form.

* **ingest** snapshots the data (content-addressed Parquet) and freezes a train/eval split.
* **validate** runs the Great Expectations suite; a failure stops the run before training.
* **train** fits the estimator in a preprocessing pipeline and logs it to MLflow.
* **evaluate** scores the candidate and the current champion on the same frozen rows.
* **approve** waits for a reviewer (Browse > Required Actions) when the promotion policy is `approval`;
  under any other policy it passes at once.
* **promote** registers the candidate and moves the alias, or is skipped with the reasons.

Every step runs `mlops-ops step NAME --spec ...`, locally or in a Kubernetes pod (the *runner* field).
The chain is `mlops_ops.pipelines.form_training_chain` (every setting from this form), shared with
`mlops_retraining`.
"""

from __future__ import annotations

from airflow.sdk import DAG

from mlops_ops.pipelines import form_training_chain, training_params

with DAG(
    dag_id="mlops_training",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["mlops", "training"],
    render_template_as_native_obj=True,
    max_active_runs=4,
    default_args={"retries": 1},
    params=training_params(),
) as dag:
    form_training_chain()
