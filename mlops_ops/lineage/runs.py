"""MLflow runs of a pipeline: one experiment per pipeline, one parent run per pipeline run, one child
run per step (found again by its tags on a retry, never created twice)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_ops import __version__
from mlops_ops.context import RunContext
from mlops_ops.errors import PromotionRejected
from mlops_ops.lineage import tags as t
from mlops_ops.lineage.client import client, guard
from mlops_ops.settings import mlflow_artifact_root, tracking_uri

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("mlops_ops.lineage")

#: Environment a runner sets so a step records where it ran without importing Airflow.
_AIRFLOW_ENV = {
    "AIRFLOW_CTX_DAG_ID": "airflow.dag_id",
    "AIRFLOW_CTX_TASK_ID": "airflow.task_id",
    "AIRFLOW_CTX_DAG_RUN_ID": "airflow.run_id",
    "MLOPS_STEP_IMAGE": t.STEP_IMAGE,
}


def _is_local_backend(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def experiment_id(pipeline: str) -> str:
    """The id of the pipeline's experiment, created on first use."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    name = f"mlops/{pipeline}"
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = f"{mlflow_artifact_root()}/{pipeline}" if _is_local_backend(tracking_uri()) else None
    try:
        return str(mlflow_client.create_experiment(name, artifact_location=location))
    except Exception as exc:
        # Another step created it at the same moment.
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            if isinstance(exc.__cause__, MlflowException):
                raise exc from None
            raise
        return str(found.experiment_id)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _find_or_create(exp_id: str, tags: dict[str, str], name: str) -> str:
    """The oldest live run with these tags, created if there is none (a retry finds it again)."""
    mlflow_client = client()
    query = " and ".join(f"tags.`{k}` = '{_quote(v)}'" for k, v in tags.items())
    runs = mlflow_client.search_runs([exp_id], query, order_by=["attributes.start_time ASC"], max_results=5)
    if runs:
        return str(runs[0].info.run_id)
    created = mlflow_client.create_run(exp_id, tags=tags, run_name=name).info.run_id
    # Two steps that raced both created one: keep the oldest, drop ours.
    runs = mlflow_client.search_runs([exp_id], query, order_by=["attributes.start_time ASC"], max_results=5)
    winner = str(runs[0].info.run_id) if runs else created
    if winner != created:
        mlflow_client.delete_run(created)
    return winner


@dataclass
class StepRun:
    """The MLflow child run of one step; the step records through it."""

    ctx: RunContext
    run_id: str
    parent_run_id: str
    experiment_id: str

    @property
    def client(self) -> Any:
        return client()

    def tag(self, **tags: Any) -> None:
        """Set tags in one batch (keys from :mod:`mlops_ops.lineage.tags`)."""
        self.set_tags({k: str(v) for k, v in tags.items()})

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        client().log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def tags(self) -> dict[str, str]:
        return dict(client().get_run(self.run_id).data.tags)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in params.items()}
        existing = client().get_run(self.run_id).data.params
        # Params are write-once in MLflow; a retry logs only what is new.
        fresh = [Param(k, str(v)[:6000]) for k, v in flat.items() if k not in existing]
        if fresh:
            client().log_batch(self.run_id, params=fresh)

    def log_metrics(self, metrics: dict[str, float], prefix: str = "") -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(f"{prefix}{k}", float(v), now, 0) for k, v in metrics.items()]
        if batch:
            client().log_batch(self.run_id, metrics=batch)

    def log_dataset(
        self, df: pd.DataFrame, *, name: str, uri: str, digest: str, context: str, target: str | None = None
    ) -> None:
        """Record a dataset as an input of this run, identified by its content digest."""
        import mlflow
        from mlflow.data.pandas_dataset import from_pandas

        dataset = from_pandas(df, source=uri, name=name, digest=digest[:36], targets=target)
        # MLflow infers the schema value by value in Python (about 7 s per million rows); a sample that
        # holds each column's first missing value gives the same types and the same required flags.
        dataset.__dict__["schema"] = _schema_of_sample(df)
        guard(mlflow.log_input, dataset, context=context)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        client().log_artifact(self.run_id, path, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        client().log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        client().log_figure(self.run_id, figure, artifact_file)

    def log_dict(self, value: Any, artifact_file: str) -> None:
        client().log_dict(self.run_id, value, artifact_file)

    def find_training(self, fingerprint: str, *, own_only: bool = False) -> dict[str, Any] | None:
        """An earlier training with the same fingerprint and a logged model: this run's own (a retry that
        got as far as logging the model), or (unless ``own_only``) a finished one in this experiment."""
        own = client().get_run(self.run_id).data
        if own.tags.get(t.MODEL_URI) and own.tags.get(t.TRAIN_FINGERPRINT) == fingerprint:
            return _training(self.run_id, own.tags, own.metrics)
        if own_only:
            return None
        runs = client().search_runs(
            [self.experiment_id],
            f"tags.`{t.TRAIN_FINGERPRINT}` = '{fingerprint}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"],
            max_results=20,
        )
        for found in runs:
            tags = found.data.tags
            if found.info.run_id != self.run_id and tags.get(t.MODEL_URI) and t.TRAIN_CACHED_FROM not in tags:
                return _training(found.info.run_id, tags, found.data.metrics)
        return None

    def log_sklearn_model(
        self, model: Any, *, input_example: Any, pip_requirements: list[str], trusted_types: list[str] | None = None
    ) -> tuple[str, str | None]:
        """Log the fitted pipeline with its signature and an input example; return (model_uri, model_id).

        A retry of the same step finds the model the earlier try logged instead of logging a second one;
        a model an earlier try left half-logged (``PENDING``, the try was killed) is deleted first.
        """
        import mlflow
        from mlflow.models import infer_signature

        tags = self.tags()
        if t.MODEL_URI in tags:
            return tags[t.MODEL_URI], tags.get(t.MODEL_ID)
        self._drop_pending_models()
        signature = infer_signature(input_example, model.predict(input_example))
        info = guard(
            mlflow.sklearn.log_model,
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
            serialization_format="cloudpickle",
        )
        self.tag(**{t.MODEL_URI: info.model_uri, t.MODEL_ID: info.model_id or ""})
        return info.model_uri, info.model_id

    def _drop_pending_models(self) -> None:
        found = client().search_logged_models([self.experiment_id], filter_string=f"source_run_id = '{self.run_id}'")
        for model in found:
            if str(getattr(model.status, "name", model.status)).upper() == "PENDING":
                log.info("deleting model %s that an earlier try of this step left unfinished", model.model_id)
                client().delete_logged_model(model.model_id)


def _training(run_id: str, tags: dict[str, str], metrics: dict[str, float]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "model_uri": tags[t.MODEL_URI],
        "model_id": tags.get(t.MODEL_ID) or None,
        "metrics": {k.removeprefix("train_"): v for k, v in metrics.items() if k.startswith("train_")},
    }


def _schema_of_sample(df: pd.DataFrame, rows: int = 1000) -> Any:
    """The MLflow schema of ``df``, inferred from its first rows plus the first missing value per column."""
    from mlflow.models import infer_signature

    sample = df
    if len(df) > rows:
        missing = df.isna().to_numpy()
        first_missing = {int(missing[:, i].argmax()) for i in range(missing.shape[1]) if missing[:, i].any()}
        sample = df.iloc[sorted(set(range(rows)) | first_missing)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the hint about integer columns and missing values
            schema = infer_signature(sample).inputs
    except Exception as exc:
        log.debug("no MLflow schema for the dataset: %s", exc)
        return None
    # A frame MLflow cannot type comes back as one unnamed column of any type: record no schema instead.
    return schema if schema.has_input_names() else None


def _identity(ctx: RunContext) -> dict[str, str]:
    found = {
        t.PIPELINE: ctx.pipeline,
        t.PIPELINE_RUN_ID: ctx.run_id,
        t.TRY_NUMBER: str(ctx.try_number),
        t.PACKAGE_VERSION: __version__,
    }
    return found | {tag: os.environ[env] for env, tag in _AIRFLOW_ENV.items() if os.environ.get(env)}


def _end(run_id: str, status: str, state: str) -> None:
    mlflow_client = client()
    mlflow_client.set_tag(run_id, t.STATE, state)
    mlflow_client.set_terminated(run_id, status)


@contextlib.contextmanager
def step_run(ctx: RunContext) -> Iterator[StepRun]:
    """Open (or reopen, on a retry) the step's child run under the pipeline run's parent run.

    The parent run follows its steps: running while one runs, then ended with the state of the step
    that ended last (``FINISHED``, ``FAILED``, or ``FINISHED`` with ``mlops.state=skipped`` when a
    promotion was rejected), so after the last step it holds the pipeline run's final state.
    """
    import mlflow

    mlflow_client = client()
    exp_id = experiment_id(ctx.pipeline)
    base = {t.RUN_KEY: ctx.run_key}
    parent = _find_or_create(exp_id, {**base, t.ROLE: t.ROLE_PIPELINE}, f"{ctx.pipeline}:{ctx.run_id}")
    child_key = {**base, t.ROLE: t.ROLE_STEP, t.STEP: ctx.step}
    if ctx.spec_digest:
        # The same step run again with another spec (an ad-hoc CLI run, say) is another run.
        child_key[t.SPEC_DIGEST] = ctx.spec_digest[:16]
    child = _find_or_create(exp_id, child_key, ctx.step)
    identity = _identity(ctx)
    mlflow_client.update_run(parent, status="RUNNING")
    StepRun(ctx, parent, parent, exp_id).set_tags(
        {k: v for k, v in identity.items() if k != t.TRY_NUMBER} | {t.step_run_id(ctx.step): child, t.STATE: "running"}
    )
    StepRun(ctx, child, parent, exp_id).set_tags(identity | {"mlflow.parentRunId": parent})
    log.info("MLflow run %s (parent %s) in experiment %s at %s", child, parent, exp_id, tracking_uri())
    run = StepRun(ctx, child, parent, exp_id)
    guard(mlflow.start_run, run_id=child)
    try:
        yield run
    except PromotionRejected:
        guard(mlflow.end_run, "FINISHED")
        _end(parent, "FINISHED", "skipped")
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            guard(mlflow.end_run, "FAILED")
            _end(parent, "FAILED", "failed")
        raise
    guard(mlflow.end_run, "FINISHED")
    _end(parent, "FINISHED", "success")
