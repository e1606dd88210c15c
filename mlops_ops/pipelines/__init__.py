"""Pipeline building blocks for DAG files: the training chain as a task group, the assets, the forms.

Everything here is parse-time code: it imports Airflow's SDK and our operators, nothing heavy.
"""

from __future__ import annotations

from mlops_ops.pipelines.assets import inbox_asset, inbox_dir, retrain_request, retrain_requests
from mlops_ops.pipelines.chain import TrainingChain, form_training_chain, gate_expression, policy_alias, training_chain
from mlops_ops.pipelines.forms import ESTIMATORS, force_param, monitoring_params, runner_param, training_params

__all__ = [
    "ESTIMATORS",
    "TrainingChain",
    "force_param",
    "form_training_chain",
    "gate_expression",
    "inbox_asset",
    "inbox_dir",
    "monitoring_params",
    "policy_alias",
    "retrain_request",
    "retrain_requests",
    "runner_param",
    "training_chain",
    "training_params",
]
