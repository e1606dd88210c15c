"""Human approval of a promotion (promotion policy ``approval``), on the standard provider's HITL operators.

After a passing evaluation, :class:`PromotionApprovalOperator` shows the evaluation summary (candidate
against champion, the decision and its reasons, links) in Airflow's **Required Actions** and waits in the
``awaiting_input`` state:

- **Approve**: the promotion goes on; :class:`ApprovedPromoteOperator` moves the alias and records the
  approver in its history (``mlops.alias.<alias>.actor``, shown by ``alias_history`` and the Models view);
- **Reject**: the promotion is skipped, nothing is registered; the rejection, its reviewer and comment are
  recorded on the evaluation run (and shown in the Models view's reviews);
- no answer within ``response_timeout`` (default :data:`DEFAULT_RESPONSE_TIMEOUT`, 3 days): rejected, as
  if a reviewer had said no, recorded with reviewer ``timeout``.

Under any other policy, or when the evaluation did not pass, the approval task passes at once and the
promotion behaves as without it. The reviews are written from the Airflow worker through
:mod:`mlops_ops.lineage` (MLflow found through the ``mlflow_default`` connection, as the steps find it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowFailException

from mlops_ops.operators.links import airflow_base_url, mlflow_run_url, mlflow_ui_url, report_url, version_url
from mlops_ops.operators.steps import PromoteOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The promotion policy that asks a human (the others, ``champion`` and ``challenger``, name the alias).
APPROVAL_POLICY = "approval"
#: How long a promotion waits for a reviewer before it is rejected.
DEFAULT_RESPONSE_TIMEOUT = timedelta(days=3)
#: The reviewer recorded when nobody answered in time.
TIMEOUT_REVIEWER = "timeout"


@contextlib.contextmanager
def mlflow_environment(mlflow_conn_id: str | None, tracking_uri: str | None) -> Iterator[None]:
    """Within the block, this process reaches MLflow as a step would: the connection, or ``tracking_uri``."""
    from mlops_ops.connections import step_environment

    found = step_environment(mlflow_conn_id, None)
    values = found.env | found.secrets | ({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {})
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _user(event: dict[str, Any]) -> str:
    user = event.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "") if isinstance(user, dict) else str(user)


class PromotionApprovalOperator(ApprovalOperator):
    """Wait for a human to approve the promotion of a candidate that passed evaluation.

    :param evaluation: The evaluate result (``evaluate.output``). (templated)
    :param registered_model: The registered model the promotion moves an alias of. (templated)
    :param policy: The promotion policy; only ``approval`` waits. (templated)
    :param response_timeout: How long to wait; then the promotion is rejected. Default 3 days.
    :param mlflow_conn_id: Airflow connection of the MLflow server, to record the review. (templated)
    :param tracking_uri: MLflow tracking URI instead of the connection. (templated)
    """

    template_fields: Sequence[str] = (
        *ApprovalOperator.template_fields,
        "evaluation",
        "registered_model",
        "policy",
        "mlflow_conn_id",
        "tracking_uri",
    )
    ui_color = "#fde68a"

    def __init__(
        self,
        *,
        evaluation: Any,
        registered_model: str,
        policy: str = APPROVAL_POLICY,
        response_timeout: timedelta | None = DEFAULT_RESPONSE_TIMEOUT,
        mlflow_conn_id: str | None = "mlflow_default",
        tracking_uri: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", "Promote a model version?")
        # Airflow hands every operator its DAG's params merged in; the reviewer's form shows the task's own.
        params = ParamsDict(kwargs.pop("params", None) or {})
        if "comment" not in params:
            params["comment"] = Param(None, type=["null", "string"], title="Comment", source="task")
        kwargs["params"] = params
        super().__init__(defaults=ApprovalOperator.REJECT, response_timeout=response_timeout, **kwargs)
        self.evaluation, self.registered_model, self.policy = evaluation, registered_model, policy
        self.mlflow_conn_id, self.tracking_uri = mlflow_conn_id, tracking_uri

    def execute(self, context: Context) -> Any:
        evaluation = self.evaluation if isinstance(self.evaluation, dict) else {}
        if not evaluation:
            raise AirflowFailException("the approval needs the evaluate result (evaluate.output) as `evaluation`")
        if str(self.policy) != APPROVAL_POLICY:
            self.log.info("promotion policy %r: no approval needed", self.policy)
            return {"approved": True, "required": False, "by": "", "comment": ""}
        if not evaluation.get("passed"):
            self.log.info("the candidate did not pass evaluation: nothing to approve")
            return {"approved": False, "required": False, "by": "", "comment": ""}
        self.subject = f"Promote a new version of {self.registered_model}?"
        self.body = summary(evaluation, str(self.registered_model), self.mlflow_conn_id)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" in event:
            return super().execute_complete(context, event)
        approved = list(event.get("chosen_options") or []) == [self.APPROVE]
        reviewer = _user(event) or (TIMEOUT_REVIEWER if event.get("timedout") else "")
        comment = str((event.get("params_input") or {}).get("comment") or "")
        self._record(approved, reviewer, comment)
        super().execute_complete(context, event)  # on Reject, skips the promotion
        return {"approved": approved, "required": True, "by": reviewer, "comment": comment}

    def _record(self, approved: bool, reviewer: str, comment: str) -> None:
        run_id = self.evaluation.get("mlflow_run_id") if isinstance(self.evaluation, dict) else None
        if not run_id:
            return
        from mlops_ops.lineage import views

        decision = views.APPROVED if approved else views.REJECTED
        with mlflow_environment(self.mlflow_conn_id, self.tracking_uri):
            views.record_review(
                run_id, model=str(self.registered_model), decision=decision, by=reviewer, comment=comment
            )
        self.log.info("%s by %s, recorded on evaluation run %s", decision, reviewer or "?", run_id)


def summary(evaluation: dict[str, Any], model: str, mlflow_conn_id: str | None) -> str:
    """The reviewer's page (Markdown): candidate against champion, decision and reasons, links."""
    candidate = evaluation.get("candidate_metrics") or {}
    champion = evaluation.get("champion_metrics") or {}
    champion_version = evaluation.get("champion_version")
    head = f"champion v{champion_version}" if champion_version else "champion (none yet)"
    rows = [f"| {name} | {_num(value)} | {_num(champion.get(name))} |" for name, value in sorted(candidate.items())]
    reasons = evaluation.get("reasons") or ["passed every gate"]
    base = mlflow_ui_url(mlflow_conn_id)
    links = []
    if evaluation.get("mlflow_run_id"):
        links.append(f"[evaluation report and plots]({report_url(airflow_base_url(), evaluation['mlflow_run_id'])})")
        links.append(f"[MLflow evaluation run]({mlflow_run_url(base, evaluation['mlflow_run_id'])})")
    train_run = (evaluation.get("candidate") or {}).get("mlflow_run_id")
    if train_run:
        links.append(f"[MLflow training run]({mlflow_run_url(base, train_run)})")
    if champion_version:
        links.append(f"[champion's lineage]({version_url(airflow_base_url(), model, str(champion_version))})")
    return "\n".join(
        [
            f"**{model}**: the candidate passed evaluation. Approve to move `champion` to it.",
            "",
            f"| metric | candidate | {head} |",
            "|---|---|---|",
            *rows,
            "",
            "**Gates and reasons:** " + "; ".join(str(r) for r in reasons),
            "",
            " · ".join(links),
        ]
    )


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


class ApprovedPromoteOperator(PromoteOperator):
    """:class:`~mlops_ops.operators.PromoteOperator` after an approval: the approver is recorded with the move.

    :param approval: The approval result (``approve.output``): who approved, and their comment. (templated)
    """

    template_fields: Sequence[str] = (*PromoteOperator.template_fields, "approval")

    def __init__(self, *, approval: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.approval = approval

    def execute(self, context: Context) -> dict[str, Any]:
        approval = self.approval if isinstance(self.approval, dict) else {}
        reviewer = str(approval.get("by") or "")
        if reviewer and not self.reason:
            comment = str(approval.get("comment") or "")
            self.reason = f"approved by {reviewer}" + (f": {comment}" if comment else "")
        result = super().execute(context)
        if reviewer and result.get("moved"):
            self._record_actor(result, reviewer)
        return result

    def _record_actor(self, result: dict[str, Any], reviewer: str) -> None:
        from mlops_ops import lineage

        alias = str(result.get("alias") or self.alias)
        with mlflow_environment(self.mlflow_conn_id, self.tracking_uri):
            lineage.tag_version(
                str(result["model_name"]), str(result["version"]), {lineage.tags.alias_key(alias, "actor"): reviewer}
            )
        self.log.info("approver %s recorded on %s version %s", reviewer, result["model_name"], result["version"])
