"""The model registry: versions (one per training run), aliases and their recorded history."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_ops.errors import MlopsError, TrackingError
from mlops_ops.lineage import tags as t
from mlops_ops.lineage.client import client, guard, quiet

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _missing(exc: TrackingError) -> bool:
    cause = exc.__cause__
    return getattr(cause, "error_code", None) in _MISSING


def load_model(model_uri: str) -> Any:
    """Load a logged scikit-learn model."""
    quiet()
    client()
    import mlflow.sklearn

    return guard(mlflow.sklearn.load_model, model_uri)


def version_by_alias(name: str, alias: str) -> ModelVersion | None:
    """The version an alias points to, or None if the model or alias does not exist."""
    try:
        return client().get_model_version_by_alias(name, alias)
    except TrackingError as exc:
        if _missing(exc):
            return None
        raise


def get_version(name: str, version: str) -> ModelVersion | None:
    """One version of a registered model, or None if it does not exist."""
    try:
        return client().get_model_version(name, version)
    except TrackingError as exc:
        if _missing(exc):
            return None
        raise


def versions_of_run(name: str, run_id: str) -> list[ModelVersion]:
    """Versions of ``name`` registered from the training run ``run_id``, oldest first."""
    found = client().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return sorted(found, key=lambda v: int(v.version))


def register(name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
    """Register the model as a version of ``name``; a later call for the same run finds the same version.

    The caller holds the model's registration lock (``steps.promote``), so the look-up and the creation
    cannot interleave with another promoter's: one training run gives one version, however many
    promotions of it race or retry.
    """
    mlflow_client = client()
    try:
        mlflow_client.create_registered_model(name, description="Managed by mlops-ops.")
    except TrackingError as exc:
        if getattr(exc.__cause__, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = versions_of_run(name, run_id)
    if existing:
        version = existing[0]
    else:
        import mlflow

        version = guard(mlflow.register_model, model_uri, name, tags=tags)
    _await_ready(name, str(version.version))
    return version


def _await_ready(name: str, version: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client().get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION":
            raise MlopsError(f"registration of {name} version {version} failed in MLflow")
        time.sleep(0.5)
    raise MlopsError(f"{name} version {version} was not ready after {timeout:.0f}s")


def version_tags(name: str, version: str) -> dict[str, str]:
    """The tags of one model version."""
    return dict(client().get_model_version(name, version).tags)


def tag_version(name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on one model version."""
    mlflow_client = client()
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)


@dataclass(frozen=True)
class Evaluated:
    """A version's recorded evaluation on one metric: the value as recorded and the rows it was computed on."""

    version: str
    value: str | None
    rows: str | None

    def comparable_with(self, other: Evaluated) -> tuple[str, str] | None:
        """Both recorded values (this one's first) if both have the metric and were evaluated on the same
        known rows; None if the two cannot be compared."""
        if self.value is None or other.value is None or not self.rows or self.rows != other.rows:
            return None
        return self.value, other.value


@dataclass(frozen=True)
class VersionRecord:
    """The tags of one model version, read once, as a promotion asks them: its alias history, its evaluation."""

    version: str
    tags: Mapping[str, str]

    def replaced_by(self, alias: str) -> str | None:
        """The version ``alias`` moved to when it left this one, if it did."""
        return self.tags.get(t.alias_key(alias, "replaced_by")) or None

    def evaluated(self, metric: str) -> Evaluated:
        """This version's recorded evaluation on ``metric`` (written at registration)."""
        return Evaluated(self.version, self.tags.get(t.metric(metric)), self.tags.get(t.EVAL_DATASET_DIGEST))


def version_record(name: str, version: str) -> VersionRecord:
    """The recorded tags of one version of ``name``."""
    return VersionRecord(version, version_tags(name, version))


def supersede(name: str, version: str, alias: str, *, by: str, reason: str) -> None:
    """Record on ``version`` that ``alias`` stayed on version ``by`` instead of moving to it, and why."""
    tag_version(
        name,
        version,
        {
            t.alias_key(alias, "superseded_by"): by,
            t.alias_key(alias, "superseded_at"): datetime.now(UTC).isoformat(timespec="seconds"),
            t.alias_key(alias, "superseded_reason"): reason[:5000],
        },
    )


def run_params(run_id: str) -> dict[str, str]:
    """The parameters a run logged."""
    return dict(client().get_run(run_id).data.params)


def move_alias(name: str, alias: str, version: str, reason: str, actor: str = "") -> str | None:
    """Point ``alias`` at ``version`` and record the move on both versions; return the previous version.

    The caller serialises moves of one alias (``steps.promote`` holds a lock in the artifact store). The
    record on the new version is written before the alias moves, so a try that dies half-way leaves
    nothing the retry cannot complete: called again when ``alias`` already points at ``version``, this
    adds a missing ``replaced_by`` on the previous version.
    """
    mlflow_client = client()
    previous = version_by_alias(name, alias)
    previous_version = str(previous.version) if previous is not None else None
    if previous_version == version:
        _complete_history(name, alias, version, dict(previous.tags) if previous is not None else {})
        return previous_version
    # Microseconds: moves made within one second (a promotion, then a rollback) must still sort in order.
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    record = {
        t.alias_key(alias, "previous"): previous_version or "none",
        t.alias_key(alias, "moved_at"): now,
        t.alias_key(alias, "reason"): (reason or "passed evaluation")[:5000],
    }
    if actor:
        record[t.alias_key(alias, "actor")] = actor
    tag_version(name, version, record)
    mlflow_client.set_registered_model_alias(name, alias, version)
    if previous_version is not None:
        tag_version(
            name, previous_version, {t.alias_key(alias, "replaced_by"): version, t.alias_key(alias, "replaced_at"): now}
        )
    return previous_version


def _complete_history(name: str, alias: str, version: str, tags: dict[str, str]) -> None:
    previous = tags.get(t.alias_key(alias, "previous"))
    if not previous or previous == "none":
        return
    if version_tags(name, previous).get(t.alias_key(alias, "replaced_by")) != version:
        tag_version(
            name,
            previous,
            {
                t.alias_key(alias, "replaced_by"): version,
                t.alias_key(alias, "replaced_at"): tags.get(t.alias_key(alias, "moved_at"), ""),
            },
        )
