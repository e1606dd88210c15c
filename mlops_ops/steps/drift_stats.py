"""Drift statistics per column, as pure functions of Arrow tables and numpy arrays (scipy does the tests).

Numeric columns: the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``, drift if p < 0.05)
when both sides have at most ``small_sample_rows`` rows, else the Wasserstein distance
(``scipy.stats.wasserstein_distance``) divided by the reference's standard deviation (drift if >= 0.1),
which is Evidently's switch. Categorical columns (text, booleans, dictionaries, and integer or text
predictions): the chi-squared test of homogeneity on the 2 x k table of counts
(``scipy.stats.chi2_contingency``, drift if p < 0.05) for small samples, the Jensen-Shannon distance of
the category shares (``scipy.spatial.distance.jensenshannon``, natural log, drift if >= 0.1) for large.
Every column also gets the population stability index over 10 quantile bins of the reference (categories
for categorical columns), reported with its 0.2 threshold but not deciding the column's verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_ops.specs.monitoring import ColumnDrift, SampleInfo

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mlops_ops.specs.monitoring import DriftThresholds

#: The column a score step writes its predictions to; compared apart from the features.
PREDICTION = "prediction"
#: Shares of zero are replaced by this in PSI (as Evidently does), so empty bins do not make it infinite.
PSI_FLOOR = 1e-4
#: The normalised Wasserstein distance reported when the reference is constant and the current is not.
CONSTANT_REFERENCE_DISTANCE = 1e6


@dataclass
class Comparison:
    """Every column's verdict, and the dataset-level decision."""

    columns: list[ColumnDrift]
    prediction: ColumnDrift | None
    missing: list[str]
    new: list[str]
    skipped: list[str]
    sample: SampleInfo | None
    drift_share: float = 0.0
    retrain_advised: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]


def compare(
    reference: pa.Table,
    current: pa.Table,
    thresholds: DriftThresholds,
    *,
    exclude: Iterable[str] = (),
    columns: list[str] | None = None,
    sample_rows: int | None = None,
    seed: int = 0,
) -> Comparison:
    """Compare every shared column of two tables and decide whether retraining is advised.

    Args:
        reference: The data the model was trained on (or another baseline).
        current: The new data.
        thresholds: Tests, thresholds, the sample-size switch and the dataset-level drift share.
        exclude: Columns left out (target, keys); ``prediction`` is compared apart, ``proba_*`` left out.
        columns: Compare only these columns (default: all shared ones).
        sample_rows: A side with more rows is replaced by a seeded sample of this many rows.
        seed: Seed of the samples (the reference uses ``seed``, the current ``seed + 1``).
    """
    small = reference.num_rows <= thresholds.small_sample_rows and current.num_rows <= thresholds.small_sample_rows
    reference, current, sample = _sample(reference, current, sample_rows, seed)
    left_out = set(exclude) | {PREDICTION}
    wanted = [c for c in (columns or reference.column_names) if c not in left_out and not c.startswith("proba_")]
    shared = [c for c in wanted if c in current.column_names]
    verdicts, skipped = [], []
    for name in shared:
        found = column_drift(name, reference.column(name), current.column(name), thresholds, small=small)
        if found is None:
            skipped.append(name)
        else:
            verdicts.append(found)
    prediction = None
    if PREDICTION in reference.column_names and PREDICTION in current.column_names:
        prediction = column_drift(
            PREDICTION, reference.column(PREDICTION), current.column(PREDICTION), thresholds, small=small
        )
    result = Comparison(
        columns=verdicts,
        prediction=prediction,
        missing=[c for c in wanted if c not in current.column_names],
        new=[c for c in current.column_names if c not in reference.column_names and c not in left_out],
        skipped=skipped,
        sample=sample,
    )
    decide(result, thresholds)
    return result


def decide(result: Comparison, thresholds: DriftThresholds) -> None:
    """Set the share of drifted columns, the retraining advice and its reasons."""
    compared = len(result.columns)
    drifted = result.drifted
    result.drift_share = len(drifted) / compared if compared else 0.0
    result.retrain_advised = compared > 0 and result.drift_share >= thresholds.drift_share
    verb = ">=" if result.retrain_advised else "<"
    names = f": {', '.join(drifted)}" if drifted else ""
    result.reasons = [
        f"{len(drifted)} of {compared} columns drifted ({result.drift_share:.0%} {verb} {thresholds.drift_share:.0%})"
        f"{names}"
    ]
    if result.prediction is not None and result.prediction.drifted:
        result.reasons.append(f"the prediction distribution drifted ({result.prediction.line()})")
    if result.missing:
        result.reasons.append(f"the current data lacks reference columns {result.missing}")
    if result.skipped:
        result.reasons.append(f"columns {result.skipped} have types drift is not computed for")


def _sample(
    reference: pa.Table, current: pa.Table, rows: int | None, seed: int
) -> tuple[pa.Table, pa.Table, SampleInfo | None]:
    if rows is None or (reference.num_rows <= rows and current.num_rows <= rows):
        return reference, current, None
    sides = []
    for offset, table in enumerate((reference, current)):
        if table.num_rows > rows:
            rng = np.random.default_rng(seed + offset)
            table = table.take(np.sort(rng.choice(table.num_rows, rows, replace=False)))
        sides.append(table)
    return sides[0], sides[1], SampleInfo(reference_rows=sides[0].num_rows, current_rows=sides[1].num_rows, seed=seed)


# -------------------------------------------------------------------------------------------- columns


def kind_of(name: str, kind: pa.DataType) -> str | None:
    """``numeric``, ``categorical`` or None (a type drift is not computed for, such as timestamps)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "numeric"
    if pa.types.is_integer(kind):
        # Predicted class labels are categories even when they are numbers.
        return "categorical" if name == PREDICTION else "numeric"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind):
        return "categorical"
    return None


def column_drift(
    name: str, reference: pa.ChunkedArray, current: pa.ChunkedArray, thresholds: DriftThresholds, *, small: bool
) -> ColumnDrift | None:
    """The verdict on one column, or None if its type is not compared."""
    kinds = {kind_of(name, reference.type), kind_of(name, current.type)}
    if None in kinds:
        return None
    if kinds == {"numeric"}:
        return numeric_drift(name, numeric_values(reference), numeric_values(current), thresholds, small=small)
    return categorical_drift(name, category_counts(reference), category_counts(current), thresholds, small=small)


def numeric_values(column: pa.ChunkedArray) -> np.ndarray:
    """The non-missing values of a numeric column as float64 (NaN counts as missing)."""
    values = pc.drop_null(column).to_numpy().astype(np.float64, copy=False)
    return values[~np.isnan(values)] if np.isnan(values).any() else values


def category_counts(column: pa.ChunkedArray) -> dict[str, int]:
    """How often each non-missing value of a column occurs, keyed by its text."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    counts = pc.value_counts(pc.drop_null(column))
    return dict(
        zip(counts.field("values").to_pylist(), (int(c) for c in counts.field("counts").to_numpy()), strict=True)
    )


def _empty(name: str, kind: str, n_ref: int, n_cur: int) -> ColumnDrift:
    # Values on one side only is a change nobody should miss; none on either side is nothing to compare.
    return ColumnDrift(
        column=name,
        kind=kind,  # type: ignore[arg-type]
        statistic="empty",
        value=0.0,
        threshold=0.0,
        drifted=(n_ref == 0) != (n_cur == 0),
        reference_rows=n_ref,
        current_rows=n_cur,
        detail="no values on the reference side" if n_ref == 0 else "no values on the current side",
    )


def numeric_drift(
    name: str, reference: np.ndarray, current: np.ndarray, thresholds: DriftThresholds, *, small: bool
) -> ColumnDrift:
    """KS (small samples) or normalised Wasserstein distance (large), and PSI, of two numeric samples."""
    from scipy.stats import ks_2samp, wasserstein_distance

    if len(reference) == 0 or len(current) == 0:
        return _empty(name, "numeric", len(reference), len(current))
    psi = psi_numeric(reference, current, thresholds.psi_bins)
    common: dict[str, Any] = {
        "column": name,
        "kind": "numeric",
        "psi": psi,
        "psi_drifted": psi >= thresholds.psi,
        "reference_rows": len(reference),
        "current_rows": len(current),
    }
    if small:
        p_value = float(ks_2samp(reference, current).pvalue)
        return ColumnDrift(
            statistic="ks",
            value=p_value,
            threshold=thresholds.ks_p_value,
            drifted=p_value < thresholds.ks_p_value,
            **common,
        )
    distance = float(wasserstein_distance(reference, current))
    std = float(np.std(reference))
    detail = ""
    if std > 0:
        value = distance / std
    else:
        value = 0.0 if distance == 0 else CONSTANT_REFERENCE_DISTANCE
        detail = "the reference is constant"
    return ColumnDrift(
        statistic="wasserstein",
        value=value,
        threshold=thresholds.wasserstein,
        drifted=value >= thresholds.wasserstein,
        detail=detail,
        **common,
    )


def categorical_drift(
    name: str, reference: dict[str, int], current: dict[str, int], thresholds: DriftThresholds, *, small: bool
) -> ColumnDrift:
    """Chi-squared (small samples) or Jensen-Shannon distance (large), PSI and new categories, from counts."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    n_ref, n_cur = sum(reference.values()), sum(current.values())
    if n_ref == 0 or n_cur == 0:
        return _empty(name, "categorical", n_ref, n_cur)
    categories = sorted(set(reference) | set(current))
    ref = np.array([reference.get(c, 0) for c in categories], dtype=np.float64)
    cur = np.array([current.get(c, 0) for c in categories], dtype=np.float64)
    new = sorted((c for c in current if c not in reference), key=lambda c: (-current[c], c))
    psi = psi_shares(ref / n_ref, cur / n_cur)
    common: dict[str, Any] = {
        "column": name,
        "kind": "categorical",
        "psi": psi,
        "psi_drifted": psi >= thresholds.psi,
        "reference_rows": n_ref,
        "current_rows": n_cur,
        "new_categories": new,
        "new_category_rows": sum(current[c] for c in new),
    }
    if small:
        p_value = float(chi2_contingency(np.vstack([ref, cur])).pvalue) if len(categories) > 1 else 1.0
        return ColumnDrift(
            statistic="chi2",
            value=p_value,
            threshold=thresholds.chi2_p_value,
            drifted=p_value < thresholds.chi2_p_value,
            **common,
        )
    distance = float(jensenshannon(ref / n_ref, cur / n_cur))
    if math.isnan(distance):  # rounding below zero under the square root of identical shares
        distance = 0.0
    return ColumnDrift(
        statistic="jensenshannon",
        value=distance,
        threshold=thresholds.jensenshannon,
        drifted=distance >= thresholds.jensenshannon,
        **common,
    )


# ------------------------------------------------------------------------------------------------ PSI


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges at the reference's quantiles, open at both ends (ties merge bins of discrete data)."""
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1))[1:-1])
    return np.concatenate([[-np.inf], inner, [np.inf]])


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over quantile bins of the reference."""
    edges = quantile_edges(reference, bins)
    ref_counts, _ = np.histogram(reference, bins=edges)
    cur_counts, _ = np.histogram(current, bins=edges)
    return psi_shares(ref_counts / len(reference), cur_counts / len(current))


def psi_shares(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two share vectors over the same bins: sum((cur - ref) * ln(cur / ref)), empty bins floored."""
    ref = np.where(reference == 0, PSI_FLOOR, reference)
    cur = np.where(current == 0, PSI_FLOOR, current)
    return float(np.sum((cur - ref) * np.log(cur / ref)))
