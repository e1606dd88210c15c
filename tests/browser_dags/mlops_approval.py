"""The training chain with human approval (promotion policy ``approval``), for tests/test_browser.py.

ingest -> validate -> train -> evaluate -> approve -> promote, as ``mlops_ops.pipelines.training_chain``
wires it when the policy is ``approval``.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from mlops_ops.demo import DATA_DIR, SUITE_PATH
from mlops_ops.operators import EvaluateOperator, IngestOperator, TrainOperator, ValidateOperator
from mlops_ops.operators.approval import ApprovedPromoteOperator, PromotionApprovalOperator

with DAG(
    dag_id="mlops_approval",
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    max_active_runs=4,
    params={
        "data_uri": Param(str(DATA_DIR / "churn.csv"), type="string"),
        "estimator_params": Param({"max_iter": 50}, type="object"),
        "registered_model": Param("churn-approval", type="string"),
        "promotion_policy": Param("approval", enum=["champion", "challenger", "approval"]),
    },
):
    ingest = IngestOperator(task_id="ingest", source="{{ params.data_uri }}", target="churned")
    validate = ValidateOperator(task_id="validate", dataset=ingest.output, suite=str(SUITE_PATH))
    train = TrainOperator(
        task_id="train",
        dataset=ingest.output,
        validation=validate.output,
        target="churned",
        estimator_params="{{ params.estimator_params }}",
    )
    evaluate = EvaluateOperator(
        task_id="evaluate",
        dataset=ingest.output,
        candidate=train.output,
        registered_model="{{ params.registered_model }}",
        gates=["roc_auc >= 0.6"],
        min_improvement=-1.0,
    )
    approve = PromotionApprovalOperator(
        task_id="approve",
        evaluation=evaluate.output,
        registered_model="{{ params.registered_model }}",
        policy="{{ params.promotion_policy }}",
    )
    ApprovedPromoteOperator(
        task_id="promote",
        evaluation=evaluate.output,
        approval=approve.output,
        registered_model="{{ params.registered_model }}",
        alias="{{ 'champion' if params.promotion_policy == 'approval' else params.promotion_policy }}",
    )
