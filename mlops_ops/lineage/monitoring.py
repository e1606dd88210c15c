"""Monitoring records: the watched model version and its training data, and the runs that watch it.

A score or drift step resolves an alias (or a version number) to a :class:`WatchedVersion`, whose
training dataset and target come from the version's lineage tags (written by promote) and its training
run's parameters, so no path has to be typed. Its MLflow run is the step's child run, tagged with the
model, version and alias it watched (``mlops.monitor.*``) and with the digests of what it read and
wrote; the version is tagged with the id of its latest monitoring run of each kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mlops_ops.context import RunContext
from mlops_ops.errors import SpecError, TrackingError
from mlops_ops.lineage import tags as t
from mlops_ops.lineage.client import client
from mlops_ops.lineage.registry import get_version, run_params, tag_version, version_by_alias
from mlops_ops.lineage.runs import StepRun, step_run
from mlops_ops.settings import tracking_uri


@dataclass(frozen=True)
class WatchedVersion:
    """A registered model version and the data it was trained on, read from its lineage."""

    name: str
    version: str
    alias: str | None
    dataset_uri: str | None
    dataset_digest: str | None
    target: str | None
    train_run_id: str | None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def describe(self) -> str:
        via = f"@{self.alias} = " if self.alias else " "
        return f"{self.name}{via}version {self.version}"


def resolve(name: str, alias: str = "champion", version: str | None = None) -> WatchedVersion:
    """The version ``alias`` points to (or ``version``), with its training dataset and target.

    Raises:
        SpecError: The model, the alias or the version does not exist (the message says which).
    """
    found = version_by_alias(name, alias) if version is None else get_version(name, version)
    if found is None:
        raise SpecError(_missing(name, alias, version))
    tags = dict(found.tags)
    train_run = tags.get(t.TRAIN_RUN_ID) or found.run_id or None
    return WatchedVersion(
        name=name,
        version=str(found.version),
        alias=alias if version is None else None,
        dataset_uri=tags.get(t.DATASET_URI),
        dataset_digest=tags.get(t.DATASET_DIGEST),
        target=_target(train_run),
        train_run_id=train_run,
    )


def training_dataset(watched: WatchedVersion | None) -> tuple[str, str]:
    """The URI and digest of the dataset ``watched`` was trained on, as its lineage tags name it.

    Raises:
        SpecError: There is no watched version, or its lineage names no training dataset.
    """
    if watched is None or not watched.dataset_uri or not watched.dataset_digest:
        name = watched.describe() if watched is not None else "the model"
        raise SpecError(
            f"{name} has no training dataset in its lineage tags ({t.DATASET_URI}); give a reference dataset"
        )
    return watched.dataset_uri, watched.dataset_digest


def _missing(name: str, alias: str, version: str | None) -> str:
    try:
        client().get_registered_model(name)
    except TrackingError:
        return (
            f"registered model {name!r} does not exist in the registry at {tracking_uri()}; "
            "train, evaluate and promote a version of it first"
        )
    if version is not None:
        return f"registered model {name!r} has no version {version!r}; give an existing version or an alias"
    return (
        f"registered model {name!r} has no {alias!r} alias yet (no version was promoted to it); "
        "promote a version first, or give a version number"
    )


def _target(train_run: str | None) -> str | None:
    if not train_run:
        return None
    try:
        return run_params(train_run).get("target")
    except TrackingError:
        return None  # the training run was deleted: the caller names the target


@contextlib.contextmanager
def monitoring_run(ctx: RunContext, watched: WatchedVersion | None, kind: str) -> Iterator[StepRun]:
    """The step's MLflow run, tagged with the version it watches; on success the version names it back."""
    with step_run(ctx) as run:
        tags = {t.MONITOR_KIND: kind}
        if watched is not None:
            tags |= {
                t.MONITOR_MODEL: watched.name,
                t.MONITOR_VERSION: watched.version,
                t.MONITOR_ALIAS: watched.alias or "",
            }
        run.set_tags(tags)
        yield run
        if watched is not None:
            tag_version(watched.name, watched.version, {t.monitor_last_run(kind): run.run_id})


def scoring_run(ctx: RunContext, watched: WatchedVersion) -> contextlib.AbstractContextManager[StepRun]:
    """The score step's run: a :func:`monitoring_run` of the scoring kind."""
    return monitoring_run(ctx, watched, t.MONITOR_SCORE)


def drift_run(ctx: RunContext, watched: WatchedVersion | None) -> contextlib.AbstractContextManager[StepRun]:
    """The drift step's run: a :func:`monitoring_run` of the drift kind (unwatched when comparing two datasets)."""
    return monitoring_run(ctx, watched, t.MONITOR_DRIFT)


def record_scoring(run: StepRun, *, input_uri: str, input_digest: str, output_uri: str, output_digest: str) -> None:
    """Tag a scoring run with the snapshot it read and the predictions it wrote."""
    run.set_tags(
        {
            t.INPUT_URI: input_uri,
            t.INPUT_DIGEST: input_digest,
            t.OUTPUT_URI: output_uri,
            t.OUTPUT_DIGEST: output_digest,
        }
    )


def record_drift(
    run: StepRun,
    *,
    reference_uri: str,
    reference_digest: str,
    input_uri: str,
    input_digest: str,
    share: float,
    drifted: bool,
) -> None:
    """Tag a drift run with what it compared and its dataset-level decision."""
    run.set_tags(
        {
            t.REFERENCE_URI: reference_uri,
            t.REFERENCE_DIGEST: reference_digest,
            t.INPUT_URI: input_uri,
            t.INPUT_DIGEST: input_digest,
            t.DRIFT_SHARE: f"{share:.6g}",
            t.DRIFT_DETECTED: str(drifted).lower(),
        }
    )


def monitoring_runs(name: str, version: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Monitoring runs of one model version in every experiment, oldest first: id, kind, status, tags, metrics."""
    mlflow_client = client()
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    quoted = name.replace("'", "\\'")
    query = f"tags.`{t.MONITOR_MODEL}` = '{quoted}' and tags.`{t.MONITOR_VERSION}` = '{version}'"
    if kind is not None:
        query += f" and tags.`{t.MONITOR_KIND}` = '{kind}'"
    found = mlflow_client.search_runs(experiments, query, order_by=["attributes.start_time ASC"]) if experiments else []
    return [
        {
            "run_id": r.info.run_id,
            "kind": r.data.tags.get(t.MONITOR_KIND),
            "status": r.info.status,
            "tags": dict(r.data.tags),
            "metrics": dict(r.data.metrics),
        }
        for r in found
    ]
