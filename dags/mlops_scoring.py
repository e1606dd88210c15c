"""
### mlops_scoring

Score a batch with the champion and check it for drift: daily, and whenever a batch lands in the inbox.

* A batch lands when a CSV or Parquet file is dropped into `$MLOPS_INBOX/batches` (default
  `$MLOPS_HOME/inbox/batches`): the triggerer moves it to `landed/` and emits an event on the
  `inbox-batches` Asset, which starts this DAG with the batch. A scheduled or manual run scores *Batch URI*.
* **ingest** snapshots the batch (no target needed); **validate** runs the suite when *Validate* is on;
  **score** predicts with the watched alias; **drift** compares the batch with the champion's training data.
* When drift advises retraining, **drift** emits an event on `retrain-request/<model>` with the drift
  summary as `extra`; `mlops_retraining` is scheduled on it. Nothing is triggered directly.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable

from mlops_ops.demo import DATA_DIR
from mlops_ops.operators import IngestOperator, StepOperator, ValidateOperator
from mlops_ops.pipelines import inbox_asset, monitoring_params
from mlops_ops.pipelines.assets import MACROS, validation_enabled
from mlops_ops.pipelines.tasks import DriftOperator

BATCH = "{{ landed_uri(triggering_asset_events, params.data_uri) }}"
WATCHED = {"registered_model": "{{ params.registered_model }}", "alias": "{{ params.alias }}"}

#: No run for the cron time just past when the DAG first appears (Airflow 3.3 treats False like None).
NOT_NOW = timedelta(0)

with DAG(
    dag_id="mlops_scoring",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * *", timezone="UTC", run_immediately=NOT_NOW),
        assets=inbox_asset("batches"),
    ),
    catchup=False,
    doc_md=__doc__,
    tags=["mlops", "monitoring"],
    render_template_as_native_obj=True,
    max_active_runs=4,
    default_args={"retries": 1},
    user_defined_macros=MACROS,
    params=monitoring_params(data_uri=str(DATA_DIR / "churn_drift.csv")),
) as dag:
    common = {"runner": "{{ params.runner }}"}
    ingest = IngestOperator(task_id="ingest", source=BATCH, **common)
    validate_enabled = ShortCircuitOperator(
        task_id="validate_enabled", python_callable=validation_enabled, ignore_downstream_trigger_rules=False
    )
    validate = ValidateOperator(
        task_id="validate", dataset=ingest.output, suite="{{ params.suite }}", retries=0, **common
    )
    score = StepOperator(
        task_id="score", step="score", spec={**WATCHED, "dataset": ingest.output}, trigger_rule="none_failed", **common
    )
    drift = DriftOperator(
        task_id="drift",
        spec={
            **WATCHED,
            "current": ingest.output,
            "current_predictions": score.output,
            "thresholds": {"drift_share": "{{ params.drift_share }}"},
        },
        data_uri=BATCH,
        **common,
    )
    ingest >> validate_enabled >> validate >> score
