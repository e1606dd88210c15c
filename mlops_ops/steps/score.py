"""Score step: predict with a registered model version on a dataset snapshot, in bounded memory.

The snapshot is read in record batches (``ParquetFile.iter_batches``) and the predictions are written
batch by batch (``ParquetWriter``), so peak memory depends on the batch size, not on the input's
length. The predictions file holds the spec's key columns, ``prediction`` and, for a classifier,
``proba_<class>`` per class; it is content-addressed in the store, so scoring the same snapshot with
the same version and spec twice gives the same URI and digest. The scoring run in MLflow names the
version, the input digest and the output digest, and logs the prediction distribution as metrics.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_ops import lineage
from mlops_ops.errors import DataError
from mlops_ops.lineage import monitoring
from mlops_ops.specs.core import DatasetRef
from mlops_ops.specs.monitoring import ScoreResult, ScoreSpec
from mlops_ops.steps.ingest import PARQUET_OPTIONS, pandas_dtypes
from mlops_ops.steps.progress import PROGRESS_SECONDS

if TYPE_CHECKING:
    from mlops_ops.context import RunContext
    from mlops_ops.specs.core import TaskType
    from mlops_ops.store import Store

log = logging.getLogger(__name__)

#: Read the input a batch at a time: pyarrow's default pre-buffering keeps every row group it has read
#: alive until the file is closed (a 745 MB file held 712 MB at its end), so peak memory grew with the input.
STREAMING_READ: dict[str, Any] = {"pre_buffer": False, "buffer_size": 1 << 20}
#: Regression quantiles are computed on a systematic sample of at most this many predictions.
QUANTILE_SAMPLE = 200_000
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def run(spec: ScoreSpec, ctx: RunContext, store: Store) -> ScoreResult:
    """Score ``spec.dataset`` with the version ``spec.alias`` (or ``spec.version``) names, and record it.

    Args:
        spec: Model, alias or version, dataset, key columns, batch size.
        ctx: The run this step belongs to (names its MLflow run).
        store: Where the snapshot is read and the predictions are written.

    Raises:
        SpecError: The model has no such alias or version (for example no champion yet).
        DataError: The dataset lacks a feature column the model was trained on, or a key column.
    """
    watched = monitoring.resolve(spec.registered_model, spec.alias, spec.version)
    model = lineage.load_model(watched.model_uri)
    scorer = Scorer(model, probabilities=spec.probabilities)
    started = time.monotonic()
    with store.open_local(spec.dataset.uri) as path:
        source = pq.ParquetFile(path, **STREAMING_READ)
        features = input_columns(model, source.schema_arrow.names, spec)
        total = source.metadata.num_rows
        if total == 0:
            raise DataError(f"the dataset {spec.dataset.uri} has no rows; there is nothing to score")
        log.info("scoring %d rows of %s with %s (%s)", total, spec.dataset.uri, watched.describe(), scorer.task)
        with (
            monitoring.scoring_run(ctx, watched) as mlrun,
            tempfile.TemporaryDirectory(prefix="mlops-score-") as tmp,
        ):
            out = Path(tmp) / "predictions.parquet"
            summary = Summary(scorer, total)
            written = write_predictions(source, features, spec, scorer, summary, out)
            columns = _dtypes(pq.read_schema(out), written)
            uri, digest = store.put_content_addressed(out)
            predictions_ref = DatasetRef(uri=uri, digest=digest, rows=total, columns=columns)
            result = ScoreResult(
                registered_model=watched.name,
                version=watched.version,
                alias=watched.alias,
                model_uri=watched.model_uri,
                task=scorer.task,
                dataset=spec.dataset,
                predictions=predictions_ref,
                classes=[str(c) for c in scorer.classes] if scorer.classes is not None else None,
                distribution=summary.distribution(),
                quantile_sample_rows=summary.quantile_rows(),
                mlflow_run_id=mlrun.run_id,
            )
            _record(mlrun, spec, result, time.monotonic() - started)
    log.info("wrote %d predictions to %s (sha256 %s) in %.2fs", total, uri, digest[:12], time.monotonic() - started)
    return result


# ------------------------------------------------------------------------------------------- model


class Scorer:
    """Predictions (and class probabilities) of a fitted estimator or pipeline, preprocessing done once."""

    def __init__(self, model: Any, *, probabilities: bool) -> None:
        self.model = model
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        self.classes: np.ndarray | None = getattr(final, "classes_", None)
        self.task: TaskType = "classification" if self.classes is not None else "regression"
        self.probabilities = probabilities and self.classes is not None and hasattr(final, "predict_proba")
        # With probabilities, a pipeline's preprocessing runs once and both calls use its output:
        # Pipeline.predict(X) is exactly final.predict(pipeline[:-1].transform(X)).
        self._split = self.probabilities and hasattr(model, "steps") and len(model.steps) > 1

    def __call__(self, x: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.probabilities:
            return np.asarray(self.model.predict(x)), None
        if self._split:
            transformed = self.model[:-1].transform(x)
            final = self.model.steps[-1][1]
            return np.asarray(final.predict(transformed)), np.asarray(final.predict_proba(transformed))
        return np.asarray(self.model.predict(x)), np.asarray(self.model.predict_proba(x))


def input_columns(model: Any, available: list[str], spec: ScoreSpec) -> list[str]:
    """The model's feature columns in its order; a missing feature or key column is a DataError."""
    names = getattr(model, "feature_names_in_", None)
    features = [str(n) for n in names] if names is not None else [c for c in available if c not in spec.keys]
    missing = [c for c in features if c not in available]
    if missing:
        raise DataError(
            f"the dataset lacks the model's feature columns {missing}; it has {', '.join(available)}; "
            "score a snapshot with the columns the model was trained on"
        )
    missing_keys = [k for k in spec.keys if k not in available]
    if missing_keys:
        raise DataError(f"key columns {missing_keys} are not in the dataset; it has {', '.join(available)}")
    return features


# ------------------------------------------------------------------------------------------- writing


def write_predictions(
    source: pq.ParquetFile, features: list[str], spec: ScoreSpec, scorer: Scorer, summary: Summary, out: Path
) -> dict[str, int]:
    """Score ``source`` batch by batch into ``out``; return the null count of each output column."""
    columns = list(dict.fromkeys(features + spec.keys))
    writer: pq.ParquetWriter | None = None
    nulls: dict[str, int] = {}
    done, last = 0, time.monotonic()
    options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
    try:
        for batch in source.iter_batches(batch_size=spec.batch_rows, columns=columns):
            table = _predict_batch(batch, features, spec.keys, scorer)
            summary.add(table)
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema, **options)  # type: ignore[arg-type]
            writer.write_table(table.cast(writer.schema), row_group_size=PARQUET_OPTIONS["row_group_size"])
            for name in table.column_names:
                nulls[name] = nulls.get(name, 0) + table.column(name).null_count
            done += batch.num_rows
            if time.monotonic() - last >= PROGRESS_SECONDS:
                last = time.monotonic()
                log.info("scored %d of %d rows (%.0f%%)", done, summary.total, 100 * done / max(summary.total, 1))
        if writer is None:  # no rows: an empty file with the output columns
            empty = pq.read_schema(
                source.reader if hasattr(source, "reader") else out
            ).empty_table()  # pragma: no cover
            writer = pq.ParquetWriter(out, empty.schema, **options)  # type: ignore[arg-type]  # pragma: no cover
    finally:
        if writer is not None:
            writer.close()
    return nulls


def _predict_batch(batch: pa.RecordBatch, features: list[str], key_columns: list[str], scorer: Scorer) -> pa.Table:
    x = pa.Table.from_batches([batch]).select(features).to_pandas()
    try:
        prediction, proba = scorer(x)
    except (ValueError, TypeError) as exc:  # e.g. text where the model was trained on numbers
        mixed = _numbers_as_text(x)
        raise DataError(
            f"the model cannot score these rows: {' '.join(str(exc).split())[:300]}"
            + (f" (columns of numbers with some text: {mixed})" if mixed else "")
            + "; give every feature column the type it had in training"
        ) from None
    arrays: dict[str, pa.Array] = {k: batch.column(k) for k in key_columns}
    arrays["prediction"] = pa.array(prediction)
    if proba is not None and scorer.classes is not None:
        for i, label in enumerate(scorer.classes):
            arrays[f"proba_{label}"] = pa.array(proba[:, i], type=pa.float64())
    return pa.table(arrays)


def _numbers_as_text(x: Any) -> list[str]:
    """Text columns whose values are mostly numbers: a few words among them made the column text."""
    import pandas as pd

    found = []
    for name in x.columns:
        values = x[name].dropna()
        if x[name].dtype == object and len(values) and pd.to_numeric(values, errors="coerce").notna().mean() >= 0.5:
            found.append(str(name))
    return found


def _dtypes(schema: pa.Schema, nulls: dict[str, int]) -> dict[str, str]:
    """The dtype of each output column when read with pandas (as ``DatasetRef.columns`` records it)."""
    columns = pandas_dtypes(schema.empty_table())
    for name, count in nulls.items():
        if count and columns.get(name, "").startswith(("int", "uint")):
            columns[name] = "float64"  # pandas has no missing value for numpy integers
        elif count and columns.get(name) == "bool":
            columns[name] = "object"
    return columns


# -------------------------------------------------------------------------------------- distribution


class Summary:
    """The prediction distribution, accumulated batch by batch in bounded memory."""

    def __init__(self, scorer: Scorer, total: int) -> None:
        self.scorer, self.total = scorer, total
        self.rows = 0
        self.counts: dict[str, int] = {}
        self.proba_sums: dict[str, float] = {}
        self.stride = max(1, math.ceil(total / QUANTILE_SAMPLE))
        self.sample: list[np.ndarray] = []
        self.low, self.high, self.sum = math.inf, -math.inf, 0.0

    def add(self, table: pa.Table) -> None:
        prediction = table.column("prediction").to_numpy(zero_copy_only=False)
        if self.scorer.classes is not None:
            for label in self.scorer.classes:
                self.counts[str(label)] = self.counts.get(str(label), 0) + int(np.count_nonzero(prediction == label))
                name = f"proba_{label}"
                if name in table.column_names:
                    total = float(np.sum(table.column(name).to_numpy()))
                    self.proba_sums[str(label)] = self.proba_sums.get(str(label), 0.0) + total
        else:
            values = prediction.astype(np.float64)
            # A systematic sample: every stride-th row of the whole input, wherever the batches split it.
            first = (-self.rows) % self.stride
            self.sample.append(values[first :: self.stride].copy())
            if len(values):
                self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
                self.sum += float(values.sum())
        self.rows += table.num_rows

    def distribution(self) -> dict[str, float]:
        if self.scorer.classes is not None:
            found = {f"share.{k}": v / max(self.rows, 1) for k, v in self.counts.items()}
            return found | {f"proba_mean.{k}": v / max(self.rows, 1) for k, v in self.proba_sums.items()}
        if not self.rows:
            return {}
        sample = np.concatenate(self.sample)
        found = {
            f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(sample, QUANTILES), strict=True)
        }
        return found | {"mean": self.sum / self.rows, "min": self.low, "max": self.high}

    def quantile_rows(self) -> int | None:
        if self.scorer.classes is not None:
            return None
        return int(sum(len(s) for s in self.sample))


# ------------------------------------------------------------------------------------------- lineage


def _record(mlrun: lineage.StepRun, spec: ScoreSpec, result: ScoreResult, seconds: float) -> None:
    monitoring.record_scoring(
        mlrun,
        input_uri=spec.dataset.uri,
        input_digest=spec.dataset.digest,
        output_uri=result.predictions.uri,
        output_digest=result.predictions.digest,
    )
    mlrun.log_params(
        {
            "registered_model": result.registered_model,
            "version": result.version,
            "alias": result.alias or "",
            "keys": spec.keys,
            "batch_rows": spec.batch_rows,
        }
    )
    mlrun.log_metrics({"rows": result.predictions.rows, "seconds": seconds})
    mlrun.log_metrics(result.distribution, prefix="prediction.")
    mlrun.log_text(json.dumps(result.model_dump(mode="json"), indent=2), "score/result.json")
