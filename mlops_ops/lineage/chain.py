"""Reading lineage back: the chain of one model version, and the history of an alias."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from mlops_ops.errors import SpecError, TrackingError
from mlops_ops.lineage import tags as t
from mlops_ops.lineage.client import client
from mlops_ops.lineage.registry import get_version, version_by_alias
from mlops_ops.settings import tracking_uri


def _version(name: str, alias: str | None, version: str | None) -> Any:
    try:
        if version is None:
            found = version_by_alias(name, alias or "champion")
            if found is None:
                raise SpecError(f"registered model {name!r} has no alias {alias or 'champion'!r}")
            return found
        found = get_version(name, version)
        if found is None:
            raise SpecError(f"registered model {name!r} has no version {version!r}")
        return found
    except TrackingError as exc:
        raise SpecError(f"cannot read {name!r} from the registry at {tracking_uri()}: {exc}") from exc


def chain(name: str, alias: str | None = None, version: str | None = None) -> dict[str, Any]:
    """The lineage of one model version, each part labelled with what it is.

    ``data`` names the source the pipeline read, the content-addressed snapshot ingest made of it, and the
    train and eval partitions of that snapshot (each with its sha256). ``validation`` gives the suite and
    its expectation counts; ``training`` the estimator, its parameters and seed; ``airflow`` the DAG, run,
    task and try that trained it; ``evaluation`` the gates and the decision; ``alias_history`` the moves.
    The older keys (``dataset``: the train partition, ``train_run``, ``evaluate_run``) stay as they were.
    """
    mlflow_client = client()
    mv = _version(name, alias, version)
    model = mlflow_client.get_registered_model(name)
    tags = dict(mv.tags)
    aliases = sorted(a for a, v in (model.aliases or {}).items() if str(v) == str(mv.version))
    train_run = _run(tags.get(t.TRAIN_RUN_ID))
    evaluate_run = _run(tags.get(t.EVALUATE_RUN_ID))
    steps = step_runs(train_run)
    return {
        "model": name,
        "version": str(mv.version),
        "aliases": aliases,
        "source": mv.source,
        "created": _iso(mv.creation_timestamp),
        "pipeline": tags.get(t.PIPELINE),
        "pipeline_run": tags.get(t.PIPELINE_RUN_ID),
        "package_version": (train_run.data.tags.get(t.PACKAGE_VERSION) if train_run else None),
        "dataset": {"uri": tags.get(t.DATASET_URI), "digest": tags.get(t.DATASET_DIGEST)},
        "data": _data(tags, steps.get("ingest")),
        "validation": {
            "result_uri": tags.get(t.VALIDATION_RESULT_URI),
            "success": tags.get(t.VALIDATION_SUCCESS),
            **_validation(steps.get("validate")),
        },
        "training": _training(train_run),
        "airflow": _airflow(train_run),
        "evaluation": _evaluation(evaluate_run),
        "train_run": _run_summary(train_run),
        "evaluate_run": _run_summary(evaluate_run),
        "alias_history": {
            k.removeprefix("mlops.alias."): v for k, v in sorted(tags.items()) if k.startswith("mlops.alias.")
        },
    }


def _run(run_id: str | None) -> Any:
    return client().get_run(run_id) if run_id else None


def step_runs(train_run: Any) -> dict[str, Any]:
    """The ingest and validate runs whose results a training used, by step.

    They are the steps of the training's own pipeline run (children of one parent) or, where that run
    reused an earlier run's result instead of running the step, the runs that made it: the validation
    the training names (its result URI) and the ingest that made the snapshot validated (its digest).
    """
    parent_id = train_run.data.tags.get("mlflow.parentRunId") if train_run else None
    found = {}
    if parent_id:
        parent = client().get_run(parent_id)
        for step in ("ingest", "validate"):
            run_id = parent.data.tags.get(t.step_run_id(step))
            if run_id:
                found[step] = client().get_run(run_id)
    if train_run is None:
        return found
    validation_uri = train_run.data.tags.get(t.VALIDATION_RESULT_URI)
    if "validate" not in found and validation_uri:
        found["validate"] = _earlier_step_run("validate", t.VALIDATION_RESULT_URI, validation_uri)
    snapshot = found["validate"].data.tags.get(t.DATASET_DIGEST) if found.get("validate") else None
    if "ingest" not in found and snapshot:
        found["ingest"] = _earlier_step_run("ingest", t.DATASET_DIGEST, snapshot)
    return {step: run for step, run in found.items() if run is not None}


def _earlier_step_run(step: str, tag: str, value: str) -> Any:
    """The first finished run of ``step``, in any experiment, whose ``tag`` is ``value`` (None if none)."""
    mlflow_client = client()
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    runs = mlflow_client.search_runs(
        experiments,
        f"tags.`{t.STEP}` = '{step}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )
    # Compared here, not in the filter: a URI may hold characters the filter language would need escaped.
    return next((run for run in runs if run.data.tags.get(tag) == value), None)


def _data(tags: dict[str, str], ingest: Any) -> dict[str, Any]:
    params = dict(ingest.data.params) if ingest else {}
    ingest_tags = dict(ingest.data.tags) if ingest else {}
    return {
        "source_uri": params.get("source"),
        "snapshot": {"uri": ingest_tags.get(t.DATASET_URI), "sha256": ingest_tags.get(t.DATASET_DIGEST)},
        "train_partition": {"uri": tags.get(t.DATASET_URI), "sha256": tags.get(t.DATASET_DIGEST)},
        "eval_partition": {"sha256": tags.get(t.EVAL_DATASET_DIGEST)},
        "split": _json(params.get("split")),
    }


def _validation(validate: Any) -> dict[str, Any]:
    if validate is None:
        return {"suite": None, "suite_sha256": None, "expectations": None, "failed": None}
    params, metrics = validate.data.params, validate.data.metrics
    return {
        "suite": params.get("suite"),
        "suite_sha256": params.get("suite_digest"),
        "expectations": _int(metrics.get("evaluated")),
        "failed": _int(metrics.get("failed")),
    }


def _training(run: Any) -> dict[str, Any]:
    params = dict(run.data.params) if run else {}
    return {
        "estimator": params.get("estimator"),
        "task": params.get("task"),
        "target": params.get("target"),
        "seed": _int(params.get("seed")),
        "rows": _int(params.get("rows")),
        "params": {k.removeprefix("model."): _json(v) for k, v in sorted(params.items()) if k.startswith("model.")},
    }


def _airflow(run: Any) -> dict[str, Any]:
    tags = dict(run.data.tags) if run else {}
    return {
        "dag_id": tags.get("airflow.dag_id"),
        "run_id": tags.get("airflow.run_id"),
        "task_id": tags.get("airflow.task_id"),
        "try_number": _int(tags.get(t.TRY_NUMBER)),
    }


def _evaluation(run: Any) -> dict[str, Any]:
    if run is None:
        return {}
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    champion = tags.get(t.CHAMPION_VERSION)
    return {
        "gates": _json(params.get("gates")) or [],
        "compare_metric": params.get("compare_metric"),
        "min_improvement": _float(params.get("min_improvement")),
        "passed": {"true": True, "false": False}.get(str(tags.get(t.EVALUATION_PASSED)).lower()),
        "champion_version": None if champion in (None, "none") else champion,
        "candidate_metrics": {
            k.removeprefix("candidate_"): v for k, v in metrics.items() if k.startswith("candidate_")
        },
        "champion_metrics": {k.removeprefix("champion_"): v for k, v in metrics.items() if k.startswith("champion_")},
    }


def _json(value: str | None) -> Any:
    """A parameter ``StepRun.log_params`` wrote: lists and objects as JSON, other values as text."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _int(value: Any) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return int(float(value))
    return None


def _float(value: Any) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        return float(value)
    return None


def _iso(millis: int | None) -> str:
    return datetime.fromtimestamp((millis or 0) / 1000, UTC).isoformat(timespec="seconds")


def _run_summary(run: Any) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
        "step": run.data.tags.get(t.STEP),
        "metrics": dict(run.data.metrics),
        "datasets": [
            {"name": d.dataset.name, "digest": d.dataset.digest, "source": _source_uri(d.dataset.source)}
            for d in (run.inputs.dataset_inputs if run.inputs else [])
        ],
    }


def _source_uri(source: str) -> str:
    with contextlib.suppress(ValueError, TypeError):
        parsed = json.loads(source)
        if isinstance(parsed, dict):
            return str(parsed.get("uri") or parsed.get("url") or source)
    return source


def alias_history(name: str, alias: str = "champion") -> list[dict[str, str]]:
    """Every recorded move of ``alias``, oldest first: time, from and to version, reason, actor."""
    try:
        versions = client().search_model_versions(f"name = '{name}'")
    except TrackingError as exc:
        raise SpecError(f"cannot read {name!r} from the registry at {tracking_uri()}: {exc}") from exc
    moves = []
    for mv in versions:
        tags = dict(mv.tags)
        moved_at = tags.get(t.alias_key(alias, "moved_at"))
        if not moved_at:
            continue
        previous = tags.get(t.alias_key(alias, "previous"), "none")
        moves.append(
            {
                "moved_at": moved_at,
                "from": "" if previous == "none" else previous,
                "to": str(mv.version),
                "reason": tags.get(t.alias_key(alias, "reason"), ""),
                "actor": tags.get(t.alias_key(alias, "actor"), ""),
                "pipeline_run": tags.get(t.PIPELINE_RUN_ID, ""),
            }
        )
    return sorted(moves, key=lambda m: (m["moved_at"], int(m["to"])))
