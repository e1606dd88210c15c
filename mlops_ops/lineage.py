"""Lineage in MLflow: the only module that talks to MLflow.

One experiment per pipeline, one parent run per pipeline run, one child run per step (found again by
its tags on a retry, never created twice). Registered model versions carry tags that lead back to the
dataset, the validation result, the training run and the evaluation run; every alias move is recorded
on the version it lands on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_ops import __version__
from mlops_ops.context import RunContext
from mlops_ops.errors import MlopsError, SpecError
from mlops_ops.settings import mlflow_artifact_root, tracking_uri

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

RUN_KEY, ROLE, STEP = "mlops.run_key", "mlops.role", "mlops.step"


def _quiet() -> None:
    # MLflow's model-safety checks and git probing fill task logs with noise nobody can act on.
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Advice about pickle formats and pip probing is about MLflow's defaults, not about this run.
    for name in ("mlflow.sklearn", "mlflow.utils.environment", "mlflow.models.model"):
        logging.getLogger(name).setLevel(logging.ERROR)


def client() -> MlflowClient:
    """An MLflow client on the configured tracking URI (the fluent API is pointed there too)."""
    _quiet()
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")), exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _is_local_backend(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def experiment_id(mlflow_client: MlflowClient, pipeline: str) -> str:
    """The id of the pipeline's experiment, created on first use."""
    name = f"mlops/{pipeline}"
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if _is_local_backend(tracking_uri()):
        location = f"{mlflow_artifact_root()}/{pipeline}"
    try:
        return str(mlflow_client.create_experiment(name, artifact_location=location))
    except Exception:
        # Another step created it at the same moment.
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _find_or_create(mlflow_client: MlflowClient, exp_id: str, tags: dict[str, str], name: str) -> str:
    """The oldest live run with these tags, created if there is none (a retry finds it again)."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
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
    """The MLflow child run of one step; the step logs through it."""

    ctx: RunContext
    run_id: str
    parent_run_id: str
    experiment_id: str
    client: MlflowClient

    def tag(self, **tags: Any) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def tags(self) -> dict[str, str]:
        return dict(self.client.get_run(self.run_id).data.tags)

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        flat = {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in params.items()}
        existing = self.client.get_run(self.run_id).data.params
        # Params are write-once in MLflow; a retry logs only what is new.
        mlflow.log_params({k: str(v)[:6000] for k, v in flat.items() if k not in existing}, run_id=self.run_id)

    def log_metrics(self, metrics: dict[str, float], prefix: str = "") -> None:
        import mlflow

        mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()}, run_id=self.run_id)

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
        mlflow.log_input(dataset, context=context)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, path, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def find_training(self, fingerprint: str) -> dict[str, Any] | None:
        """An earlier training with the same fingerprint and a logged model: this run's own (a retry that
        got as far as logging the model), or a finished one in this experiment."""
        own = self.client.get_run(self.run_id).data
        if own.tags.get("mlops.model_uri") and own.tags.get("mlops.train.fingerprint") == fingerprint:
            metrics = {k.removeprefix("train_"): v for k, v in own.metrics.items() if k.startswith("train_")}
            return {
                "run_id": self.run_id,
                "model_uri": own.tags["mlops.model_uri"],
                "model_id": own.tags.get("mlops.model_id") or None,
                "metrics": metrics,
            }
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`mlops.train.fingerprint` = '{fingerprint}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"],
            max_results=20,
        )
        for found in runs:
            tags = found.data.tags
            if (
                found.info.run_id != self.run_id
                and tags.get("mlops.model_uri")
                and "mlops.train.cached_from" not in tags
            ):
                metrics = {k.removeprefix("train_"): v for k, v in found.data.metrics.items() if k.startswith("train_")}
                return {
                    "run_id": found.info.run_id,
                    "model_uri": tags["mlops.model_uri"],
                    "model_id": tags.get("mlops.model_id") or None,
                    "metrics": metrics,
                }
        return None

    def log_sklearn_model(
        self, model: Any, *, input_example: Any, pip_requirements: list[str]
    ) -> tuple[str, str | None]:
        """Log the fitted pipeline with its signature and an input example; return (model_uri, model_id).

        A retry of the same step finds the model the earlier try logged instead of logging a second one.
        """
        import mlflow
        from mlflow.models import infer_signature

        tags = self.tags()
        if "mlops.model_uri" in tags:
            return tags["mlops.model_uri"], tags.get("mlops.model_id")
        signature = infer_signature(input_example, model.predict(input_example))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
            serialization_format="cloudpickle",
        )
        self.tag(**{"mlops.model_uri": info.model_uri, "mlops.model_id": info.model_id or ""})
        return info.model_uri, info.model_id


def _schema_of_sample(df: pd.DataFrame, rows: int = 1000) -> Any:
    """The MLflow schema of ``df``, inferred from its first rows plus the first missing value per column."""
    from mlflow.types.utils import _infer_schema

    sample = df
    if len(df) > rows:
        missing = df.isna().to_numpy()
        first_missing = {int(missing[:, i].argmax()) for i in range(missing.shape[1]) if missing[:, i].any()}
        sample = df.iloc[sorted(set(range(rows)) | first_missing)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the hint about integer columns and missing values
            return _infer_schema(sample)
    except Exception as exc:
        log.debug("no MLflow schema for the dataset: %s", exc)
        return None


@contextlib.contextmanager
def step_run(ctx: RunContext) -> Iterator[StepRun]:
    """Open (or reopen, on a retry) the step's child run under the pipeline run's parent run."""
    import mlflow

    mlflow_client = client()
    exp_id = experiment_id(mlflow_client, ctx.pipeline)
    base = {RUN_KEY: ctx.run_key}
    parent = _find_or_create(mlflow_client, exp_id, {**base, ROLE: "pipeline"}, f"{ctx.pipeline}:{ctx.run_id}")
    child_key = {**base, ROLE: "step", STEP: ctx.step}
    if ctx.spec_digest:
        # The same step run again with another spec (an ad-hoc CLI run, say) is another run.
        child_key["mlops.spec_digest"] = ctx.spec_digest[:16]
    child = _find_or_create(mlflow_client, exp_id, child_key, ctx.step)
    identity = {
        "mlflow.parentRunId": parent,
        "mlops.pipeline": ctx.pipeline,
        "mlops.run_id": ctx.run_id,
        "mlops.try_number": str(ctx.try_number),
        "mlops.version": __version__,
    }
    for run_id in (parent, child):
        for key, value in identity.items():
            if run_id != parent or key != "mlflow.parentRunId":
                mlflow_client.set_tag(run_id, key, value)
    mlflow_client.set_tag(parent, f"mlops.step.{ctx.step}.run_id", child)
    for key, value in _airflow_tags().items():
        mlflow_client.set_tag(child, key, value)
    log.info("MLflow run %s (parent %s) in experiment %s at %s", child, parent, exp_id, tracking_uri())
    run = StepRun(ctx, child, parent, exp_id, mlflow_client)
    mlflow.start_run(run_id=child)
    try:
        yield run
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def _airflow_tags() -> dict[str, str]:
    # The runner passes Airflow's identity through the environment so the step needs no Airflow import.
    keys = {
        "AIRFLOW_CTX_DAG_ID": "airflow.dag_id",
        "AIRFLOW_CTX_TASK_ID": "airflow.task_id",
        "AIRFLOW_CTX_DAG_RUN_ID": "airflow.run_id",
    }
    return {tag: os.environ[env] for env, tag in keys.items() if os.environ.get(env)}


# -------------------------------------------------------------------------------------------- registry


def load_model(model_uri: str) -> Any:
    """Load a logged scikit-learn model."""
    _quiet()
    client()
    import mlflow.sklearn

    return mlflow.sklearn.load_model(model_uri)


def version_by_alias(name: str, alias: str) -> ModelVersion | None:
    """The version an alias points to, or None if the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def register(name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
    """Register the model as a version of ``name``; a retry for the same run finds the same version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    try:
        mlflow_client.create_registered_model(name, description="Managed by mlops-ops.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return sorted(existing, key=lambda v: int(v.version))[0]
    version = mlflow.register_model(model_uri, name, tags=tags)
    _await_ready(mlflow_client, name, str(version.version))
    return version


def _await_ready(mlflow_client: MlflowClient, name: str, version: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = mlflow_client.get_model_version(name, version).status
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


def run_params(run_id: str) -> dict[str, str]:
    """The parameters a run logged."""
    return dict(client().get_run(run_id).data.params)


def move_alias(name: str, alias: str, version: str, reason: str) -> str | None:
    """Point ``alias`` at ``version`` and record the move on both versions; return the previous version.

    The caller serialises moves of one alias (``steps.promote`` holds a lock in the artifact store). The
    record on the new version is written before the alias moves, so a try that dies half-way leaves
    nothing the retry cannot complete: called again when ``alias`` already points at ``version``, this
    adds a missing ``replaced_by`` on the previous version.
    """
    mlflow_client = client()
    previous = version_by_alias(name, alias)
    previous_version = str(previous.version) if previous is not None else None
    prefix = f"mlops.alias.{alias}."
    if previous_version == version:
        _complete_history(mlflow_client, name, prefix, version, dict(previous.tags) if previous is not None else {})
        return previous_version
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        f"{prefix}previous": previous_version or "none",
        f"{prefix}moved_at": now,
        f"{prefix}reason": reason or "passed evaluation",
    }
    for key, value in record.items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    mlflow_client.set_registered_model_alias(name, alias, version)
    if previous_version is not None:
        mlflow_client.set_model_version_tag(name, previous_version, f"{prefix}replaced_by", version)
        mlflow_client.set_model_version_tag(name, previous_version, f"{prefix}replaced_at", now)
    return previous_version


def _complete_history(mlflow_client: MlflowClient, name: str, prefix: str, version: str, tags: dict[str, str]) -> None:
    previous = tags.get(f"{prefix}previous")
    if not previous or previous == "none":
        return
    if mlflow_client.get_model_version(name, previous).tags.get(f"{prefix}replaced_by") != version:
        mlflow_client.set_model_version_tag(name, previous, f"{prefix}replaced_by", version)
        mlflow_client.set_model_version_tag(name, previous, f"{prefix}replaced_at", tags.get(f"{prefix}moved_at", ""))


# --------------------------------------------------------------------------------------------- lineage


def chain(name: str, alias: str | None = None, version: str | None = None) -> dict[str, Any]:
    """The lineage of one model version: dataset, validation, training run, evaluation run, aliases."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    try:
        if version is None:
            found = version_by_alias(name, alias or "champion")
            if found is None:
                raise SpecError(f"registered model {name!r} has no alias {alias or 'champion'!r}")
            mv = found
        else:
            mv = mlflow_client.get_model_version(name, version)
        model = mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        raise SpecError(f"cannot read {name!r} from the registry at {tracking_uri()}: {exc.message}") from exc
    tags = dict(mv.tags)
    aliases = sorted(a for a, v in (model.aliases or {}).items() if str(v) == str(mv.version))
    out: dict[str, Any] = {
        "model": name,
        "version": str(mv.version),
        "aliases": aliases,
        "source": mv.source,
        "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
        "pipeline": tags.get("mlops.pipeline"),
        "pipeline_run": tags.get("mlops.run_id"),
        "dataset": {"uri": tags.get("mlops.dataset.uri"), "digest": tags.get("mlops.dataset.digest")},
        "validation": {
            "result_uri": tags.get("mlops.validation.result_uri"),
            "success": tags.get("mlops.validation.success"),
        },
        "train_run": _run_summary(mlflow_client, tags.get("mlops.train.run_id")),
        "evaluate_run": _run_summary(mlflow_client, tags.get("mlops.evaluate.run_id")),
        "alias_history": {
            k.removeprefix("mlops.alias."): v for k, v in sorted(tags.items()) if k.startswith("mlops.alias.")
        },
    }
    return out


def _run_summary(mlflow_client: MlflowClient, run_id: str | None) -> dict[str, Any] | None:
    if not run_id:
        return None
    run = mlflow_client.get_run(run_id)
    return {
        "run_id": run_id,
        "status": run.info.status,
        "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
        "step": run.data.tags.get(STEP),
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
