"""Promote step: register a candidate that passed evaluation and move the policy's alias to it."""

from __future__ import annotations

import logging

from mlops_ops import lineage
from mlops_ops.context import RunContext
from mlops_ops.errors import PromotionRejected
from mlops_ops.specs import PromoteResult, PromoteSpec
from mlops_ops.store import Store

log = logging.getLogger(__name__)


def version_tags(spec: PromoteSpec, ctx: RunContext) -> dict[str, str]:
    """Tags that lead from the model version back to its data, validation, training and evaluation."""
    candidate = spec.evaluation.candidate
    tags = {
        "mlops.dataset.uri": candidate.dataset_uri,
        "mlops.dataset.digest": candidate.dataset_digest,
        "mlops.train.run_id": candidate.mlflow_run_id,
        "mlops.evaluate.run_id": spec.evaluation.mlflow_run_id or "",
        "mlops.eval_dataset.digest": spec.evaluation.dataset_digest,
        "mlops.pipeline": ctx.pipeline,
        "mlops.run_id": ctx.run_id,
    }
    if candidate.validation_result_uri:
        tags["mlops.validation.result_uri"] = candidate.validation_result_uri
        tags["mlops.validation.success"] = "true"
    tags.update({f"mlops.metric.{k}": f"{v:.6g}" for k, v in spec.evaluation.candidate_metrics.items()})
    return tags


def run(spec: PromoteSpec, ctx: RunContext, store: Store) -> PromoteResult:
    """Register the candidate (once per training run) and point the alias at it."""
    evaluation = spec.evaluation
    if not evaluation.passed:
        raise PromotionRejected(
            "candidate rejected by evaluation: " + "; ".join(evaluation.reasons) + "; nothing was registered and no alias moved"
        )
    candidate = evaluation.candidate
    with lineage.step_run(ctx) as mlrun:
        version = lineage.register(spec.registered_model, candidate.model_uri, candidate.mlflow_run_id, version_tags(spec, ctx))
        number = str(version.version)
        reason = spec.reason or _reason(spec)
        previous = lineage.move_alias(spec.registered_model, spec.alias, number, reason)
        moved = previous != number
        mlrun.tag(**{"mlops.promote.model": spec.registered_model, "mlops.promote.version": number,
                     "mlops.promote.alias": spec.alias, "mlops.promote.moved": moved})
        if moved:
            log.info("%s@%s -> version %s (was %s): %s", spec.registered_model, spec.alias, number, previous or "unset", reason)
        else:
            log.info("%s@%s already points at version %s; nothing moved", spec.registered_model, spec.alias, number)
        return PromoteResult(model_name=spec.registered_model, version=number, alias=spec.alias,
                             previous_version=previous, moved=moved, mlflow_run_id=mlrun.run_id)


def _reason(spec: PromoteSpec) -> str:
    e = spec.evaluation
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(e.candidate_metrics.items()) if k in ("roc_auc", "accuracy", "rmse", "r2"))
    if e.champion_version:
        return f"passed gates and compared with v{e.champion_version} ({metrics})"
    return f"passed gates, first {spec.alias} ({metrics})"
