"""What the Models view reads from MLflow: models and aliases, alias history, version metrics, chains, reports.

Every function here reads, except :func:`record_review`, which writes a human review (approval or
rejection of a promotion) on the evaluation run it judged; the Models view itself never writes.
Review tags are named here, beside the reader that shows them.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_ops.errors import SpecError, TrackingError
from mlops_ops.lineage import tags as t
from mlops_ops.lineage.chain import chain, step_runs
from mlops_ops.lineage.client import client

#: Aliases the view shows, in this order (others follow by name).
ALIASES = ("champion", "challenger")
#: Step children of a pipeline run, in pipeline order.
STEPS = ("ingest", "validate", "train", "evaluate", "promote")
#: Report files a step run logs, by step.
REPORTS = {
    "validate": "validation/report.md",
    "evaluate": "evaluation/report.md",
    "drift": "drift/report.md",
}
#: Artifact folders whose images the view may serve.
IMAGE_FOLDERS = ("evaluation", "drift/plots")

# Human review of a promotion, on the evaluation run it judged.
REVIEW_MODEL = "mlops.review.model"
REVIEW_DECISION = "mlops.review.decision"
REVIEW_BY = "mlops.review.by"
REVIEW_AT = "mlops.review.at"
REVIEW_COMMENT = "mlops.review.comment"
APPROVED, REJECTED = "approved", "rejected"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _missing(exc: TrackingError) -> bool:
    return getattr(exc.__cause__, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _iso(millis: int | None) -> str:
    return datetime.fromtimestamp((millis or 0) / 1000, UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- models


def registered_models() -> list[dict[str, Any]]:
    """Every registered model: name, aliases (alias -> version), latest version, description."""
    found = []
    for model in client().search_registered_models(max_results=1000):
        latest = max((int(v.version) for v in (model.latest_versions or [])), default=0)
        found.append(
            {
                "name": model.name,
                "aliases": _aliases(model.aliases),
                "latest": str(latest) if latest else "",
                "description": model.description or "",
            }
        )
    return sorted(found, key=lambda m: m["name"])


def _aliases(aliases: Any) -> dict[str, str]:
    pairs = {str(a): str(v) for a, v in (aliases or {}).items()}
    order = [a for a in ALIASES if a in pairs] + sorted(a for a in pairs if a not in ALIASES)
    return {a: pairs[a] for a in order}


def model_overview(name: str) -> dict[str, Any]:
    """One model: its aliases, its versions with their metrics on their evaluation rows, alias histories,
    and the human reviews of its promotions.

    Raises:
        SpecError: No registered model of that name.
    """
    from mlops_ops.lineage.history import alias_history

    try:
        model = client().get_registered_model(name)
    except TrackingError as exc:
        if _missing(exc):
            raise SpecError(f"no registered model {name!r}") from None
        raise
    aliases = _aliases(model.aliases)
    held: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        held.setdefault(version, []).append(alias)
    versions = sorted(client().search_model_versions(f"name = '{_quote(name)}'"), key=lambda v: -int(v.version))
    return {
        "name": name,
        "aliases": aliases,
        "versions": [_version_row(mv, held.get(str(mv.version), [])) for mv in versions],
        "history": {
            alias: alias_history(name, alias) for alias in [*ALIASES, *(a for a in aliases if a not in ALIASES)]
        },
        "reviews": reviews(name),
    }


def _version_row(mv: Any, aliases: list[str]) -> dict[str, Any]:
    tags = dict(mv.tags)
    prefix = t.metric("")
    return {
        "version": str(mv.version),
        "created": _iso(mv.creation_timestamp),
        "aliases": aliases,
        "metrics": {k.removeprefix(prefix): v for k, v in sorted(tags.items()) if k.startswith(prefix)},
        "eval_digest": tags.get(t.EVAL_DATASET_DIGEST, ""),
        "pipeline": tags.get(t.PIPELINE, ""),
        "pipeline_run": tags.get(t.PIPELINE_RUN_ID, ""),
        "train_run": tags.get(t.TRAIN_RUN_ID, ""),
        "evaluate_run": tags.get(t.EVALUATE_RUN_ID, ""),
    }


def reviews(name: str) -> list[dict[str, str]]:
    """Human reviews of promotions of ``name``, newest first: decision, reviewer, time, comment, runs."""
    mlflow_client = client()
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiments:
        return []
    runs = mlflow_client.search_runs(experiments, f"tags.`{REVIEW_MODEL}` = '{_quote(name)}'", max_results=200)
    found = [
        {
            "decision": run.data.tags.get(REVIEW_DECISION, ""),
            "by": run.data.tags.get(REVIEW_BY, ""),
            "at": run.data.tags.get(REVIEW_AT, ""),
            "comment": run.data.tags.get(REVIEW_COMMENT, ""),
            "evaluate_run": run.info.run_id,
            "pipeline_run": run.data.tags.get(t.PIPELINE_RUN_ID, ""),
        }
        for run in runs
    ]
    return sorted(found, key=lambda r: r["at"], reverse=True)


# ----------------------------------------------------------------------------------------------- chain


def version_lineage(name: str, version: str) -> dict[str, Any]:
    """The chain of one version (:func:`~mlops_ops.lineage.chain.chain`) with the run of every step of the
    pipeline run that made it: step, MLflow run and experiment, status, try, metrics, report.

    Raises:
        SpecError: No such model or version.
    """
    found = chain(name, version=version)
    train = found.get("train_run") or {}
    parent_id = train.get("parent_run_id")
    found["steps"] = _steps(parent_id, client().get_run(train["run_id"])) if parent_id else []
    return found


def _steps(parent_id: str, train_run: Any) -> list[dict[str, Any]]:
    """A card per step of the pipeline run that trained the model; a step that reused an earlier run's
    result shows that run (its own pipeline run says which)."""
    mlflow_client = client()
    parent = mlflow_client.get_run(parent_id)
    earlier = step_runs(train_run)
    cards = []
    for step in STEPS:
        run_id = parent.data.tags.get(t.step_run_id(step))
        if run_id:
            run = mlflow_client.get_run(run_id)
        elif step in earlier:
            run, run_id = earlier[step], earlier[step].info.run_id
        else:
            continue
        cards.append(
            {
                "step": step,
                "run_id": run_id,
                "experiment_id": run.info.experiment_id,
                "status": run.info.status,
                "state": run.data.tags.get(t.STATE, ""),
                "try_number": run.data.tags.get(t.TRY_NUMBER, ""),
                "pipeline": run.data.tags.get(t.PIPELINE, ""),
                "pipeline_run": run.data.tags.get(t.PIPELINE_RUN_ID, ""),
                "metrics": dict(run.data.metrics),
                "report": step in REPORTS,
            }
        )
    return cards


# --------------------------------------------------------------------------------------------- reports


def run_report(run_id: str) -> dict[str, Any]:
    """A step run's report: its step, experiment, pipeline run, report text (Markdown) and image paths.

    Raises:
        SpecError: No such run, or the run is not a step that writes a report.
    """
    mlflow_client = client()
    try:
        run = mlflow_client.get_run(run_id)
    except TrackingError as exc:
        if _missing(exc) or "not found" in str(exc).lower():
            raise SpecError(f"no MLflow run {run_id!r}") from None
        raise
    step = run.data.tags.get(t.STEP, "")
    path = REPORTS.get(step)
    if path is None:
        raise SpecError(f"run {run_id} is a {step or 'non-step'} run: it has no report")
    return {
        "run_id": run_id,
        "step": step,
        "experiment_id": run.info.experiment_id,
        "pipeline": run.data.tags.get(t.PIPELINE, ""),
        "pipeline_run": run.data.tags.get(t.PIPELINE_RUN_ID, ""),
        "try_number": run.data.tags.get(t.TRY_NUMBER, ""),
        "text": _text(run_id, path),
        "images": _images(run_id),
    }


def _text(run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory(prefix="mlops-view-") as folder:
        try:
            local = client().download_artifacts(run_id, path, folder)
        except (TrackingError, OSError):
            return ""
        return Path(local).read_text(encoding="utf-8", errors="replace")


def _images(run_id: str) -> list[str]:
    found: list[str] = []
    for folder in IMAGE_FOLDERS:
        try:
            entries = client().list_artifacts(run_id, folder)
        except (TrackingError, OSError):
            continue
        found.extend(e.path for e in entries if not e.is_dir and e.path.endswith(".png"))
    return sorted(found)


def run_image(run_id: str, path: str) -> bytes:
    """The bytes of one PNG a step run logged under an image folder.

    Raises:
        SpecError: The path is not a PNG under :data:`IMAGE_FOLDERS`, or the run has no such file.
    """
    parts = path.split("/")
    folder = os.path.dirname(path)
    if not path.endswith(".png") or ".." in parts or folder not in IMAGE_FOLDERS:
        raise SpecError(f"not a report image: {path!r}")
    with tempfile.TemporaryDirectory(prefix="mlops-view-") as tmp:
        try:
            local = client().download_artifacts(run_id, path, tmp)
        except (TrackingError, OSError) as exc:
            raise SpecError(f"run {run_id} has no image {path!r}") from exc
        return Path(local).read_bytes()


# ----------------------------------------------------------------------------------------------- write


def record_review(run_id: str, *, model: str, decision: str, by: str, comment: str = "") -> None:
    """Record a human review of a promotion on the evaluation run it judged (idempotent: tags overwrite)."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    values = {REVIEW_MODEL: model, REVIEW_DECISION: decision, REVIEW_BY: by, REVIEW_AT: at, REVIEW_COMMENT: comment}
    mlflow_client = client()
    for key, value in values.items():
        mlflow_client.set_tag(run_id, key, value[:5000])
