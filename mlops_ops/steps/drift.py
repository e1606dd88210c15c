"""Drift step: compare a current snapshot with a reference and advise whether to retrain.

The reference is, by default, the training dataset of the version an alias (``champion``) of the
registered model points to, found through the version's lineage tags; an explicit reference may be
given instead. The statistics are in :mod:`mlops_ops.steps.drift_stats`. Drift is information, not an
error: the step succeeds and its result says whether retraining is advised and why. The result (JSON),
a Markdown report and overlay histograms of the drifted and most-shifted columns are logged to a
monitoring run of the version, with the metrics ``drift_share`` and ``drift.<column>``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_ops import lineage
from mlops_ops.errors import DataError
from mlops_ops.lineage import monitoring
from mlops_ops.specs.core import DatasetRef
from mlops_ops.specs.monitoring import ColumnDrift, DriftResult, DriftSpec
from mlops_ops.steps import drift_stats
from mlops_ops.steps.ingest import pandas_dtypes

if TYPE_CHECKING:
    from mlops_ops.context import RunContext
    from mlops_ops.store import Store

log = logging.getLogger(__name__)

#: Bars of a categorical overlay: the most frequent categories of both sides.
PLOT_CATEGORIES = 15
PLOT_BINS = 30


def run(spec: DriftSpec, ctx: RunContext, store: Store) -> DriftResult:
    """Compare ``spec.current`` with the reference and record the verdict on the model's monitoring run.

    Args:
        spec: Current data, reference (or the model whose training data is the reference), thresholds.
        ctx: The run this step belongs to (names its MLflow run).
        store: Where the datasets are read.

    Raises:
        SpecError: The model has no such alias or version, or its lineage names no training dataset.
        DataError: A dataset cannot be read.
    """
    started = time.monotonic()
    watched = monitoring.resolve(spec.registered_model, spec.alias, spec.version) if spec.registered_model else None
    reference_ref = spec.reference or training_data(watched, store)
    target = spec.target or (watched.target if watched is not None else None)
    reference, current = read(store, reference_ref), read(store, spec.current)
    comparison = drift_stats.compare(
        reference,
        current,
        spec.thresholds,
        exclude=[c for c in [target, *spec.keys] if c],
        columns=spec.columns,
        sample_rows=spec.sample_rows,
        seed=spec.seed,
    )
    _prediction_drift(spec, store, comparison)
    log.info(
        "compared %d columns in %.2fs: %s", len(comparison.columns), time.monotonic() - started, comparison.reasons[0]
    )
    with monitoring.drift_run(ctx, watched) as mlrun:
        result = DriftResult(
            registered_model=watched.name if watched else None,
            version=watched.version if watched else None,
            reference=reference_ref,
            current=spec.current,
            columns=comparison.columns,
            drifted_columns=comparison.drifted,
            drift_share=comparison.drift_share,
            prediction=comparison.prediction,
            missing_columns=comparison.missing,
            new_columns=comparison.new,
            skipped_columns=comparison.skipped,
            retrain_advised=comparison.retrain_advised,
            reasons=comparison.reasons,
            sample=comparison.sample,
            result_uri=f"runs:/{mlrun.run_id}/drift/result.json",
            report_uri=f"runs:/{mlrun.run_id}/drift/report.md",
            mlflow_run_id=mlrun.run_id,
        )
        _record(mlrun, spec, result, target)
        _plots(mlrun, result, reference, current, spec.max_plots)
    log.info(
        "drift finished in %.2fs: retraining %s",
        time.monotonic() - started,
        "advised" if result.retrain_advised else "not advised",
    )
    return result


# ------------------------------------------------------------------------------------------- reading


def training_data(watched: monitoring.WatchedVersion | None, store: Store) -> DatasetRef:
    """The dataset the watched version was trained on, as its lineage tags name it."""
    uri, digest = monitoring.training_dataset(watched)
    with store.open_local(uri) as path:
        schema = pq.read_schema(path)
        rows = pq.ParquetFile(path).metadata.num_rows
    return DatasetRef(uri=uri, digest=digest, rows=rows, columns=pandas_dtypes(schema.empty_table()))


def read(store: Store, dataset: DatasetRef, columns: list[str] | None = None) -> pa.Table:
    """A dataset snapshot as an Arrow table."""
    with store.open_local(dataset.uri) as path:
        try:
            return pq.read_table(path, columns=columns)
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise DataError(f"cannot read {dataset.uri} as Parquet: {str(exc).splitlines()[0]}") from exc


def _prediction_drift(spec: DriftSpec, store: Store, comparison: drift_stats.Comparison) -> None:
    """Compare the predictions of score results given for both sides (they win over ``prediction`` columns)."""
    if spec.current_predictions is None or spec.reference_predictions is None:
        return
    column = [drift_stats.PREDICTION]
    ref = read(store, spec.reference_predictions, column).column(0)
    cur = read(store, spec.current_predictions, column).column(0)
    small = max(len(ref), len(cur)) <= spec.thresholds.small_sample_rows
    comparison.prediction = drift_stats.column_drift(drift_stats.PREDICTION, ref, cur, spec.thresholds, small=small)
    drift_stats.decide(comparison, spec.thresholds)


# ------------------------------------------------------------------------------------------- lineage


def _record(mlrun: lineage.StepRun, spec: DriftSpec, result: DriftResult, target: str | None) -> None:
    monitoring.record_drift(
        mlrun,
        reference_uri=result.reference.uri,
        reference_digest=result.reference.digest,
        input_uri=result.current.uri,
        input_digest=result.current.digest,
        share=result.drift_share,
        drifted=result.retrain_advised,
    )
    mlrun.log_params(
        {
            "thresholds": spec.thresholds.model_dump(mode="json"),
            "target": target or "",
            "keys": spec.keys,
            "sample_rows": spec.sample_rows or "all",
            "seed": spec.seed,
        }
    )
    metrics = {"drift_share": result.drift_share, "drifted_columns": len(result.drifted_columns)}
    for column in [*result.columns, *([result.prediction] if result.prediction else [])]:
        metrics[f"drift.{column.column}"] = column.value
        if column.psi is not None:
            metrics[f"psi.{column.column}"] = column.psi
    mlrun.log_metrics(metrics)
    mlrun.log_text(json.dumps(result.model_dump(mode="json"), indent=2), "drift/result.json")
    mlrun.log_text(report(result), "drift/report.md")


def report(result: DriftResult) -> str:
    """The verdict as Markdown: decision, reasons, and a table of every column."""
    model = f"{result.registered_model} version {result.version}" if result.registered_model else "the reference"
    lines = [
        f"# Drift of {result.current.uri.rsplit('/', 1)[-1]} against {model}",
        "",
        f"Retraining advised: **{'yes' if result.retrain_advised else 'no'}**",
        "",
        *[f"- {r}" for r in result.reasons],
        "",
        f"Reference: `{result.reference.uri}` ({result.reference.rows} rows, sha256 {result.reference.digest[:12]})  ",
        f"Current: `{result.current.uri}` ({result.current.rows} rows, sha256 {result.current.digest[:12]})",
        "",
    ]
    if result.sample is not None:
        lines += [
            f"Sampled: {result.sample.reference_rows} reference and {result.sample.current_rows} current rows "
            f"(seed {result.sample.seed}).",
            "",
        ]
    lines += [
        "| column | kind | statistic | value | threshold | drifted | PSI | new categories |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in [*result.columns, *([result.prediction] if result.prediction else [])]:
        psi = f"{c.psi:.3f}{' (>= threshold)' if c.psi_drifted else ''}" if c.psi is not None else ""
        new = f"{c.new_category_rows} rows: {', '.join(c.new_categories[:5])}" if c.new_categories else ""
        lines.append(
            f"| {c.column} | {c.kind} | {c.statistic} | {c.value:.4g} | {c.threshold:g} | "
            f"{'**yes**' if c.drifted else 'no'} | {psi} | {new} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- plots


def plotted(result: DriftResult, limit: int) -> list[ColumnDrift]:
    """Columns to draw: drifted ones first, then the most shifted, most shifted first within each."""
    ranked = sorted(result.columns, key=lambda c: (not c.drifted, -c.score(), c.column))
    return [c for c in ranked if c.statistic != "empty"][:limit]


def _plots(mlrun: lineage.StepRun, result: DriftResult, reference: pa.Table, current: pa.Table, limit: int) -> None:
    from matplotlib.figure import Figure

    for verdict in plotted(result, limit):
        figure = Figure(figsize=(5, 3.2), dpi=80)
        ax = figure.add_subplot()
        ref, cur = reference.column(verdict.column), current.column(verdict.column)
        if verdict.kind == "numeric":
            _numeric_overlay(ax, drift_stats.numeric_values(ref), drift_stats.numeric_values(cur))
        else:
            _categorical_overlay(ax, drift_stats.category_counts(ref), drift_stats.category_counts(cur))
        ax.set_title(
            f"{verdict.column}: {verdict.statistic} {verdict.value:.3g}{' (drifted)' if verdict.drifted else ''}"
        )
        ax.legend()
        figure.tight_layout()
        mlrun.log_figure(figure, f"drift/plots/{verdict.column}.png")


def _numeric_overlay(ax: Any, ref: np.ndarray, cur: np.ndarray) -> None:
    low, high = min(ref.min(), cur.min()), max(ref.max(), cur.max())
    edges = np.linspace(low, high if high > low else low + 1, PLOT_BINS + 1)
    for values, label in ((ref, "reference"), (cur, "current")):
        counts, _ = np.histogram(values, bins=edges)
        ax.stairs(counts / max(len(values), 1), edges, label=label, fill=label == "reference", alpha=0.5)
    ax.set_ylabel("share of rows")


def _categorical_overlay(ax: Any, ref: dict[str, int], cur: dict[str, int]) -> None:
    n_ref, n_cur = max(sum(ref.values()), 1), max(sum(cur.values()), 1)
    top = sorted(set(ref) | set(cur), key=lambda c: -(ref.get(c, 0) / n_ref + cur.get(c, 0) / n_cur))[:PLOT_CATEGORIES]
    at = np.arange(len(top))
    ax.bar(at - 0.2, [ref.get(c, 0) / n_ref for c in top], width=0.4, label="reference")
    ax.bar(at + 0.2, [cur.get(c, 0) / n_cur for c in top], width=0.4, label="current")
    ax.set_xticks(at, top, rotation=30, ha="right")
    ax.set_ylabel("share of rows")
