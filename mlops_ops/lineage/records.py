"""What each step records in MLflow: typed recorders that spell the tags, so no step has to.

Each function takes what a step knows (its spec's references, its result) and writes the tags the
lineage chain, history, rollback and the Models view read back. Run tags go through
:meth:`~mlops_ops.lineage.runs.StepRun.set_tags`, which cuts a value at MLflow's 5000 characters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_ops.lineage import tags as t

if TYPE_CHECKING:
    from mlops_ops.context import RunContext
    from mlops_ops.lineage.runs import StepRun
    from mlops_ops.specs import DatasetRef, EvaluateResult, PromoteResult, ValidateResult


def _dataset(uri: str, digest: str) -> dict[str, str]:
    return {t.DATASET_URI: uri, t.DATASET_DIGEST: digest}


def record_dataset(run: StepRun, *, uri: str, digest: str) -> None:
    """Tag an ingest run with the snapshot it wrote.

    Args:
        run: The ingest step's run.
        uri: Where the snapshot is in the artifact store.
        digest: The snapshot's content digest.
    """
    run.set_tags(_dataset(uri, digest))


def record_validation(run: StepRun, result: ValidateResult, dataset: DatasetRef) -> None:
    """Tag a validation run with its outcome, its result and report, and the dataset it checked.

    Args:
        run: The validate step's run.
        result: The validation's result (success and the URIs of its result and report).
        dataset: The snapshot that was validated.
    """
    run.set_tags(
        {
            t.VALIDATION_SUCCESS: str(result.success).lower(),
            t.VALIDATION_RESULT_URI: result.result_uri,
            t.VALIDATION_REPORT_URI: result.report_uri,
        }
        | _dataset(dataset.uri, dataset.digest)
    )


def record_training(run: StepRun, *, fingerprint: str, dataset: DatasetRef, validation_uri: str | None) -> None:
    """Tag a training run with its identity (the fingerprint a retry or a later run finds it by) and inputs.

    Args:
        run: The train step's run.
        fingerprint: The training's identity (same data and spec, same fingerprint).
        dataset: The train partition it fits on.
        validation_uri: The result of the validation of its data, if there was one.
    """
    recorded = {t.TRAIN_FINGERPRINT: fingerprint} | _dataset(dataset.uri, dataset.digest)
    if validation_uri is not None:
        recorded[t.VALIDATION_RESULT_URI] = validation_uri
    run.set_tags(recorded)


def record_reused_training(run: StepRun, *, source_run_id: str, model_uri: str) -> None:
    """Tag a training run that reused the model of an earlier identical training instead of fitting one.

    Args:
        run: The train step's run.
        source_run_id: The run that trained the model.
        model_uri: The model it logged.
    """
    run.set_tags({t.TRAIN_CACHED_FROM: source_run_id, t.MODEL_URI: model_uri})


def record_evaluation(run: StepRun, *, passed: bool, candidate_run_id: str, champion_version: str | None) -> None:
    """Tag an evaluation run with its decision and the two models it compared.

    Args:
        run: The evaluate step's run.
        passed: Whether the candidate passed.
        candidate_run_id: The candidate's training run.
        champion_version: The version it was compared with, or None when there was no champion.
    """
    run.set_tags(
        {
            t.EVALUATION_PASSED: str(passed),
            t.CANDIDATE_RUN_ID: candidate_run_id,
            t.CHAMPION_VERSION: champion_version or "none",
        }
    )


def record_gate(run: StepRun, *, model: str, go: bool, reason: str) -> None:
    """Tag a gate run with its decision, which is how later gates see that a training started.

    Args:
        run: The gate step's run.
        model: The registered model the gate decides for.
        go: Whether the retraining goes on.
        reason: Why.
    """
    run.set_tags({t.GATE_MODEL: model, t.GATE_GO: str(go).lower(), t.GATE_REASON: reason})


def record_promotion(run: StepRun, result: PromoteResult) -> None:
    """Tag a promotion run with the version it registered and whether the alias moved to it, and why.

    Args:
        run: The promote step's run.
        result: The promotion's result.
    """
    run.set_tags(
        {
            t.PROMOTE_MODEL: result.model_name,
            t.PROMOTE_VERSION: result.version,
            t.PROMOTE_ALIAS: result.alias,
            t.PROMOTE_MOVED: str(result.moved),
            t.PROMOTE_REASON: result.reason,
        }
    )


def version_lineage(evaluation: EvaluateResult, ctx: RunContext) -> dict[str, str]:
    """Tags that lead from a model version back to its data, validation, training and evaluation.

    Args:
        evaluation: The evaluation of the candidate the version is registered from.
        ctx: The pipeline run that promotes it.

    Returns:
        The tags to register the version with, including its evaluation metrics (``metric``), which
        :meth:`~mlops_ops.lineage.registry.VersionRecord.evaluated` reads back.
    """
    candidate = evaluation.candidate
    recorded = _dataset(candidate.dataset_uri, candidate.dataset_digest) | {
        t.TRAIN_RUN_ID: candidate.mlflow_run_id,
        t.EVALUATE_RUN_ID: evaluation.mlflow_run_id or "",
        t.EVAL_DATASET_DIGEST: evaluation.dataset_digest,
        t.PIPELINE: ctx.pipeline,
        t.PIPELINE_RUN_ID: ctx.run_id,
    }
    if candidate.validation_result_uri:
        recorded[t.VALIDATION_RESULT_URI] = candidate.validation_result_uri
        recorded[t.VALIDATION_SUCCESS] = "true"
    recorded.update({t.metric(k): f"{v:.6g}" for k, v in evaluation.candidate_metrics.items()})
    return recorded
