"""The ingest -> validate -> train -> evaluate -> (approve ->) promote chain as a reusable task group.

``mlops_training`` and ``mlops_retraining`` both build their chain here. Every argument is a (templated)
string, so a DAG passes Jinja that reads its params, an upstream task's output, or a literal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow.sdk import TaskGroup

from mlops_ops.operators import EvaluateOperator, IngestOperator, PromoteOperator, TrainOperator, ValidateOperator
from mlops_ops.operators.approval import APPROVAL_POLICY, ApprovedPromoteOperator, PromotionApprovalOperator
from mlops_ops.specs import DEFAULT_GATES, METRICS

#: Metrics where a lower value is better, derived from the one table of metric directions.
LOWER_IS_BETTER = tuple(sorted({m for group in METRICS.values() for m, higher in group.items() if not higher}))


@dataclass(frozen=True)
class TrainingChain:
    """The task group and its tasks, to wire upstream and downstream of it."""

    group: TaskGroup
    ingest: IngestOperator
    validate: ValidateOperator
    train: TrainOperator
    evaluate: EvaluateOperator
    promote: PromoteOperator
    #: The human approval before promote (``approval=True``), else None.
    approve: PromotionApprovalOperator | None = None


def _expression(value: str) -> str:
    """A Jinja expression for ``value``: the inside of ``{{ ... }}``, else the literal quoted."""
    return value.removeprefix("{{").removesuffix("}}").strip() if _templated(value) else repr(value)


def policy_alias(policy: str) -> str:
    """The alias a (templated) promotion policy moves: the policy's own name, ``champion`` under ``approval``.

    :param policy: The policy, e.g. ``"{{ params.promotion_policy }}"``.
    """
    bare = _expression(policy)
    return f"{{{{ 'champion' if {bare} == {APPROVAL_POLICY!r} else {bare} }}}}"


def gate_expression(metric: str, threshold: str) -> str:
    """A Jinja gate such as ``roc_auc >= 0.75`` whose comparison follows the metric's direction in ``METRICS``.

    :param metric: The metric (templated), e.g. ``"{{ params.gate_metric }}"``.
    :param threshold: The threshold (templated), e.g. ``"{{ params.gate_threshold }}"``.
    """
    bare = _expression(metric)
    return f"{metric} {{{{ '<=' if ({bare}) in {list(LOWER_IS_BETTER)!r} else '>=' }}}} {threshold}"


def task_gate(metric: str, threshold: str, task: str) -> tuple[str, str]:
    """The gate's metric and threshold, each the task's default (``DEFAULT_GATES``) when empty.

    Given values are kept as they are; a templated one that may render empty (a form's field) becomes a
    template that falls back to the task's default at render time.

    :param metric: The metric, e.g. ``"{{ params.gate_metric }}"``; empty or none for the task's.
    :param threshold: The threshold, e.g. ``"{{ params.gate_threshold }}"``; empty or none for the task's.
    :param task: The task, e.g. ``"{{ params.task }}"``.
    """
    if _templated(task):  # the task is known at render time: the defaults are looked up then
        bare = _expression(task)
        metric_of = f"{ {name: gate[0] for name, gate in DEFAULT_GATES.items()}!r}[{bare}]"
        threshold_of = f"{ {name: gate[1] for name, gate in DEFAULT_GATES.items()}!r}[{bare}]"
        plain_metric, plain_threshold = f"{{{{ {metric_of} }}}}", f"{{{{ {threshold_of} }}}}"
    elif task in DEFAULT_GATES:
        plain_metric, plain_threshold = DEFAULT_GATES[task][0], str(DEFAULT_GATES[task][1])
        metric_of, threshold_of = repr(plain_metric), plain_threshold
    else:
        raise ValueError(f"task must be one of {sorted(DEFAULT_GATES)}, not {task!r}")
    if _templated(metric):
        metric = f"{{{{ ({_expression(metric)}) or {metric_of} }}}}"
    metric = metric or plain_metric
    if _templated(threshold):
        bare = _expression(threshold)
        threshold = f"{{{{ {threshold_of} if ({bare}) is none or ({bare}) == '' else ({bare}) }}}}"
    threshold = threshold or plain_threshold
    return metric, threshold


def _templated(value: str) -> bool:
    return value.startswith("{{")


def training_chain(
    *,
    data_uri: str,
    target: str,
    registered_model: str,
    task: str = "classification",
    estimator: str = "",
    estimator_params: str | dict[str, Any] = "{{ params.estimator_params }}",
    suite: str,
    gate_metric: str = "",
    gate_threshold: str = "",
    min_improvement: str = "0.0",
    alias: str = "champion",
    runner: str = "local",
    group_id: str = "training",
    prefix_group_id: bool = False,
    approval: bool | str = False,
    force: bool | str = False,
) -> TrainingChain:
    """Add the five training tasks (and an approval, see ``approval``), chained, in one task group of the DAG.

    :param data_uri: CSV or Parquet to train on: a local path, ``file://`` or ``s3://`` URI. (templated)
    :param target: Target column. (templated)
    :param registered_model: Registered model whose champion is compared and whose alias moves. (templated)
    :param task: ``classification`` or ``regression``. (templated)
    :param estimator: Import path of the estimator; empty for the task's default. (templated)
    :param estimator_params: Estimator parameters; a Jinja string renders natively to a mapping. (templated)
    :param suite: Path or URI of the expectation suite. (templated)
    :param gate_metric: Metric gated and compared with the champion; empty for the task's (``DEFAULT_GATES``:
        roc_auc for classification, r2 for regression). (templated)
    :param gate_threshold: Minimum (maximum, for error metrics) the candidate must reach; empty for the task's
        (0.75 for roc_auc, 0.0 for r2). (templated)
    :param min_improvement: Margin over the champion. (templated)
    :param alias: Alias moved on promotion (``champion`` or ``challenger``). (templated)
    :param runner: ``local`` or ``kubernetes``. (templated)
    :param group_id: The task group's id.
    :param prefix_group_id: Prefix task ids with the group id (False keeps ``ingest``, ``train``...).
    :param approval: Put a human approval (``approve``, Airflow's Required Actions) between a passing
        evaluation and promote: approve moves ``alias`` with the approver recorded, reject skips promote.
        ``True`` always asks; a (templated) promotion policy asks only when it renders to ``approval``
        (the ``promotion_policy`` form field); ``False`` adds no approval task.
    :param force: Run every step, even one whose identical earlier run's result would be reused. (templated)
    """
    common: dict[str, Any] = {"runner": runner, "force": force}
    gate = task_gate(gate_metric, gate_threshold, task)
    with TaskGroup(
        group_id, prefix_group_id=prefix_group_id, tooltip="ingest, validate, train, evaluate, promote"
    ) as group:
        ingest = IngestOperator(task_id="ingest", source=data_uri, target=target, **common)
        validate = ValidateOperator(task_id="validate", dataset=ingest.output, suite=suite, retries=0, **common)
        train = TrainOperator(
            task_id="train",
            dataset=ingest.output,
            validation=validate.output,
            target=target,
            task=task,
            estimator=estimator,
            estimator_params=estimator_params,
            **common,
        )
        evaluate = EvaluateOperator(
            task_id="evaluate",
            dataset=ingest.output,
            candidate=train.output,
            registered_model=registered_model,
            gates=[gate_expression(*gate)],
            compare_metric=gate[0],
            min_improvement=min_improvement,
            **common,
        )
        if not approval:
            promote = PromoteOperator(
                task_id="promote", evaluation=evaluate.output, registered_model=registered_model, alias=alias, **common
            )
            return TrainingChain(group, ingest, validate, train, evaluate, promote)
        approve = PromotionApprovalOperator(
            task_id="approve",
            evaluation=evaluate.output,
            registered_model=registered_model,
            policy=APPROVAL_POLICY if approval is True else str(approval),
        )
        promote = ApprovedPromoteOperator(
            task_id="promote",
            evaluation=evaluate.output,
            approval=approve.output,
            registered_model=registered_model,
            alias=alias,
            **common,
        )
    return TrainingChain(group, ingest, validate, train, evaluate, promote, approve)


def form_training_chain(*, data_uri: str = "{{ params.data_uri }}", **kwargs: Any) -> TrainingChain:
    """:func:`training_chain` with every setting read from the DAG's training form (``training_params``).

    :param data_uri: The data to train on (templated); the form's field by default.
    :param kwargs: Further :func:`training_chain` arguments (``group_id``...), or settings that override the form.
    """
    form = {
        name: f"{{{{ params.{name} }}}}"
        for name in (
            "target", "task", "estimator", "estimator_params", "suite", "gate_metric", "gate_threshold",
            "min_improvement", "registered_model", "runner", "force",
        )
    }  # fmt: skip
    policy = "{{ params.promotion_policy }}"
    return training_chain(data_uri=data_uri, **(form | {"alias": policy_alias(policy), "approval": policy} | kwargs))
