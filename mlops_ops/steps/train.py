"""Train step: a scikit-learn estimator inside a preprocessing pipeline, logged to MLflow with lineage."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import pandas as pd

from mlops_ops import lineage
from mlops_ops.context import RunContext
from mlops_ops.errors import DataError, SpecError
from mlops_ops.specs import TrainResult, TrainSpec
from mlops_ops.steps import estimators
from mlops_ops.steps import metrics as metric_fns
from mlops_ops.steps.progress import heartbeat
from mlops_ops.store import Store

log = logging.getLogger(__name__)


def build_pipeline(frame: pd.DataFrame, estimator: Any) -> Any:
    """Preprocessing for numeric (impute, scale) and categorical (impute, one-hot) columns, then the estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [
        c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    categorical = [c for c in frame.columns if c not in numeric]
    pre = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            ),
        ],
        sparse_threshold=0.0,
    )
    return Pipeline([("preprocess", pre), ("model", estimator)])


def split_xy(frame: pd.DataFrame, target: str, features: list[str] | None) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target, with clear errors for a missing target or feature column."""
    if target not in frame.columns:
        raise DataError(f"target column {target!r} is not in the data; columns are: {', '.join(frame.columns)}")
    wanted = features or [c for c in frame.columns if c != target]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"feature columns {missing} are not in the data; columns are: {', '.join(frame.columns)}")
    y = frame[target]
    if y.isna().any():
        raise DataError(
            f"target column {target!r} has {int(y.isna().sum())} missing values; drop or fill them upstream"
        )
    return frame[wanted], y


def _check_task(y: pd.Series, spec: TrainSpec) -> None:
    if spec.task == "classification":
        classes = y.nunique()
        if classes < 2:
            raise DataError(f"target column {spec.target!r} has {classes} class; classification needs at least 2")
        if pd.api.types.is_float_dtype(y) and classes > 50:
            raise SpecError(f"target {spec.target!r} looks continuous ({classes} values); use task 'regression'")
    elif not pd.api.types.is_numeric_dtype(y):
        raise DataError(f"target column {spec.target!r} is {y.dtype}, regression needs a numeric target")


def fingerprint(spec: TrainSpec) -> str:
    """Identity of a training: same data and same spec give the same model, so it is trained once."""
    import sklearn

    basis = spec.model_dump(mode="json", exclude={"validation", "dataset", "refit"})
    basis |= {"dataset": spec.dataset.digest, "sklearn": sklearn.__version__}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def run(spec: TrainSpec, ctx: RunContext, store: Store) -> TrainResult:
    """Fit the pipeline on the train partition and log it to MLflow with its dataset input."""
    estimators.resolve(spec.estimator, spec.task)  # refuse a disallowed estimator before anything is recorded
    key = fingerprint(spec)
    with lineage.step_run(ctx) as mlrun:
        validation_uri = spec.validation.result_uri if spec.validation is not None else None
        lineage.record_training(mlrun, fingerprint=key, dataset=spec.dataset, validation_uri=validation_uri)
        earlier = mlrun.find_training(key, own_only=spec.refit)  # a retry still finds its own model
        if earlier is not None:
            log.info(
                "training already done in MLflow run %s (same data digest and spec); reusing its model %s",
                earlier["run_id"],
                earlier["model_uri"],
            )
            if earlier["run_id"] != mlrun.run_id:
                lineage.record_reused_training(mlrun, source_run_id=earlier["run_id"], model_uri=earlier["model_uri"])
            return _result(
                spec, earlier["run_id"], earlier["model_uri"], earlier["model_id"], earlier["metrics"], cached=True
            )
        model_uri, model_id, train_metrics = _fit_and_log(spec, mlrun, store)
        return _result(spec, mlrun.run_id, model_uri, model_id, train_metrics, cached=False)


def _fit_and_log(spec: TrainSpec, mlrun: lineage.StepRun, store: Store) -> tuple[str, str | None, dict[str, float]]:
    import sklearn
    from sklearn.utils._param_validation import InvalidParameterError

    with store.open_local(spec.dataset.uri) as path:
        frame = pd.read_parquet(path)
    x, y = split_xy(frame, spec.target, spec.features)
    _check_task(y, spec)
    model = build_pipeline(x, estimators.instantiate(spec.estimator, spec.estimator_params, spec.seed, spec.task))
    mlrun.log_params(
        {"estimator": spec.estimator, "task": spec.task, "target": spec.target, "seed": spec.seed, "rows": len(frame)}
        | {f"model.{k}": v for k, v in spec.estimator_params.items()}
    )
    mlrun.log_dataset(
        frame, name="train", uri=spec.dataset.uri, digest=spec.dataset.digest, context="training", target=spec.target
    )
    started = time.perf_counter()
    log.info("fitting %s on %d rows x %d features", spec.estimator, len(x), x.shape[1])
    try:
        with heartbeat(log, f"fitting {spec.estimator.rsplit('.', 1)[-1]} on {len(x)} rows"):
            model.fit(x, y)
    except InvalidParameterError as exc:
        # scikit-learn checks parameter values only when fitting; a bad one is the spec's fault, not a crash.
        raise SpecError(
            f"estimator {spec.estimator!r} rejects its parameters {estimators.brief(spec.estimator_params)}: "
            f"{str(exc)[:300]}"
        ) from exc
    log.info("fitted in %.1fs", time.perf_counter() - started)
    train_metrics = metric_fns.compute(spec.task, model, x, y)
    mlrun.log_metrics(train_metrics, prefix="train_")
    requirements = [f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}", "cloudpickle"]
    model_uri, model_id = mlrun.log_sklearn_model(model, input_example=x.head(5), pip_requirements=requirements)
    log.info("logged model %s; train metrics %s", model_uri, metric_fns.describe(train_metrics))
    return model_uri, model_id, train_metrics


def _result(
    spec: TrainSpec, run_id: str, model_uri: str, model_id: str | None, train_metrics: dict[str, float], *, cached: bool
) -> TrainResult:
    return TrainResult(
        mlflow_run_id=run_id,
        model_uri=model_uri,
        model_id=model_id,
        task=spec.task,
        target=spec.target,
        estimator=spec.estimator,
        dataset_digest=spec.dataset.digest,
        dataset_uri=spec.dataset.uri,
        validation_result_uri=spec.validation.result_uri if spec.validation else None,
        metrics=train_metrics,
        cached=cached,
    )
