"""
### mlops_retraining

Retrain the model weekly, when new labelled data lands, or when drift asks for it - if the gate agrees.

* Scheduled by cron (Mondays 03:00 UTC) **or** by an event on `retrain-request/<model>` (emitted by
  `mlops_scoring` when drift advises retraining) **or** on `inbox-labelled` (a labelled CSV or Parquet file
  dropped into `$MLOPS_INBOX/labelled`). The newest batch among the triggering events is the data; a
  scheduled or manual run uses *Data URI*.
* **gate** decides whether to train at all: not within *Cooldown* hours of the model's last training or
  promotion (a run's conf, else the Airflow Variable `mlops_retraining_cooldown_hours` a deployment sets,
  else 6), not on fewer than *Minimum new rows*, unless *Force*. A "no" skips the chain and says why in
  the log and in the run's note.
* Then the chain of `mlops_training`: ingest → validate → train → evaluate against the champion → promote.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param

from mlops_ops.pipelines import (
    force_param,
    form_training_chain,
    inbox_asset,
    policy_alias,
    retrain_request,
    training_params,
)
from mlops_ops.pipelines.assets import MACROS
from mlops_ops.pipelines.tasks import GateOperator

MODEL = "churn-classifier"
DATA = "{{ landed_uri(triggering_asset_events, params.data_uri) }}"
#: The run's own cooldown if its conf gives one, else the deployment's (Airflow Variable), else the form's default.
COOLDOWN_VARIABLE = "mlops_retraining_cooldown_hours"
COOLDOWN = (
    "{{ (dag_run.conf or {}).get('cooldown_hours', "
    f"var.value.get('{COOLDOWN_VARIABLE}', params.cooldown_hours)) }}}}"
)

#: No run for the cron time just past when the DAG first appears (Airflow 3.3 treats False like None).
NOT_NOW = timedelta(0)

with DAG(
    dag_id="mlops_retraining",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC", run_immediately=NOT_NOW),
        assets=retrain_request(MODEL) | inbox_asset("labelled"),
    ),
    catchup=False,
    doc_md=__doc__,
    tags=["mlops", "training", "monitoring"],
    render_template_as_native_obj=True,
    max_active_runs=1,
    default_args={"retries": 1},
    user_defined_macros=MACROS,
    params={
        **training_params(registered_model=MODEL),
        "cooldown_hours": Param(
            6.0,
            type="number",
            minimum=0,
            title="Cooldown (hours)",
            description="No training within this many hours of the model's last training or promotion.",
        ),
        "min_rows": Param(0, type="integer", minimum=0, title="Minimum new rows", description="0: no minimum."),
        "force": force_param("Train whatever the gate would say, running every step again."),
    },
) as dag:
    gate = GateOperator(
        task_id="gate",
        spec={
            "registered_model": "{{ params.registered_model }}",
            "alias": policy_alias("{{ params.promotion_policy }}"),
            "cooldown_hours": COOLDOWN,
            "min_rows": "{{ params.min_rows }}",
            "force": "{{ params.force }}",
            "data_uri": DATA,
            "trigger": "{{ trigger_summary(triggering_asset_events) or dag_run.run_type }}",
        },
        runner="{{ params.runner }}",
        retries=0,
    )
    chain = form_training_chain(data_uri=DATA)
    gate >> chain.group
