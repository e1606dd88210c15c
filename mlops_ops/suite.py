"""Starting expectation suites inferred from reference data (the profiling GX 1.x no longer ships).

``infer_suite`` looks at a reference table and writes the expectations a reviewer would start from:
the column list and order, each column's type, not-null where the reference has no nulls, numeric
ranges widened by a margin, and value sets for low-cardinality columns. Review the result before
relying on it: a reference sample rarely shows the true limits of the data.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ops.errors import DataError, SpecError

if TYPE_CHECKING:
    import pandas as pd

    from mlops_ops.store import Store

log = logging.getLogger(__name__)

#: pandas dtypes a column of each kind may have in new data (a float column may arrive as integers).
_TYPE_LISTS = {
    "i": ["int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8"],
    "u": ["int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8"],
    "f": ["float64", "float32", "int64", "int32"],
    "b": ["bool"],
    "O": ["object", "str", "string"],
    "M": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"],
}


def infer_suite(
    df: pd.DataFrame,
    name: str,
    *,
    target: str | None = None,
    margin: float = 0.1,
    max_categories: int = 20,
) -> dict[str, Any]:
    """A Great Expectations 1.x suite (as a JSON-ready dict) describing ``df``.

    Args:
        df: Reference data, as it reads from the Parquet snapshot (pandas dtypes).
        name: Suite name.
        target: Label column: always required not-null, and given a value set if it looks like classes.
        margin: Numeric ranges are widened by this fraction of the observed range on each side (a
            range that starts at zero or above is never widened below zero).
        max_categories: String columns with at most this many distinct values get a value set.

    Raises:
        DataError: A column has no name (its expectations could not name it).
    """
    if not 0 <= margin <= 10:
        raise SpecError(f"margin must be between 0 and 10, got {margin}; a margin of 0.1 widens ranges by 10%")
    unnamed = [i for i, column in enumerate(df.columns) if not str(column).strip()]
    if unnamed:  # an expectation on a column without a name is one GX refuses without naming the column
        raise DataError(
            f"column {unnamed[0] + 1} (counting from 1) has no name; name it in the header row, or drop it "
            "(a saved pandas index: write the file with index=False)"
        )
    expectations: list[dict[str, Any]] = [
        _expectation("expect_table_columns_to_match_ordered_list", column_list=[str(c) for c in df.columns]),
        _expectation("expect_table_row_count_to_be_between", min_value=1, max_value=None),
    ]
    for column in df.columns:
        expectations.extend(_column_expectations(df[column], str(column), column == target, margin, max_categories))
    return {
        "name": name,
        "expectations": expectations,
        "meta": {
            "mlops": {
                "inferred_from_rows": len(df),
                "margin": margin,
                "max_categories": max_categories,
                "target": target,
            }
        },
        "notes": "Inferred by mlops-ops from reference data; review ranges and value sets before relying on them.",
    }


def _expectation(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {}}


def _column_expectations(
    series: pd.Series, column: str, is_target: bool, margin: float, max_categories: int
) -> list[dict[str, Any]]:
    kind = series.dtype.kind
    out = []
    non_null = series.dropna()
    if kind in _TYPE_LISTS and (types := _type_list(series, non_null)) is not None:
        out.append(_expectation("expect_column_values_to_be_in_type_list", column=column, type_list=types))
    if len(non_null) == len(series) or is_target:
        out.append(_expectation("expect_column_values_to_not_be_null", column=column))
    if non_null.empty:
        return out
    value_set = _value_set(non_null, kind, is_target, max_categories)
    if value_set is not None:
        out.append(_expectation("expect_column_values_to_be_in_set", column=column, value_set=value_set))
    elif kind in "iuf":
        low, high = _widened(float(non_null.min()), float(non_null.max()), margin, integral=kind in "iu")
        out.append(_expectation("expect_column_values_to_be_between", column=column, min_value=low, max_value=high))
    return out


def _type_list(series: pd.Series, non_null: pd.Series) -> list[str] | None:
    """The types a column of this one's kind may have (None: no type expectation fits it).

    GX checks an object column value by value, by each value's type name: dates read from Parquet are
    ``date`` objects, not strings. A categorical column (dtype kind ``O`` too) is checked by its dtype, which
    equals no type name GX accepts; its value set checks it instead.
    """
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        return None
    types = list(_TYPE_LISTS[series.dtype.kind])
    if series.dtype.kind == "O":
        types += sorted({type(v).__name__ for v in non_null.tolist()} - set(types))
    return types


def _value_set(values: pd.Series, kind: str, is_target: bool, max_categories: int) -> list[Any] | None:
    """The sorted distinct values of a categorical column, or None if the column is not categorical."""
    distinct = values.unique()
    # Integers are counts or measures unless they are a label or a flag; strings are categories if few.
    categorical = (
        (kind in "Ob" and len(distinct) <= max_categories)
        or (kind in "iu" and (is_target or len(distinct) <= 2) and len(distinct) <= max_categories)
        or (
            kind == "f"
            and is_target
            and len(distinct) <= max_categories
            and all(float(v).is_integer() for v in distinct)
        )
    )
    if not categorical:
        return None
    if kind == "O" and not all(isinstance(v, str) for v in distinct):
        return None
    return sorted(_plain(v) for v in distinct)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON writes."""
    return value.item() if hasattr(value, "item") else value


def _widened(low: float, high: float, margin: float, *, integral: bool) -> tuple[float | int, float | int]:
    """``[low, high]`` widened by ``margin`` of its width, rounded outwards to a readable precision."""
    pad = (high - low) * margin
    new_low, new_high = low - pad, high + pad
    if low >= 0:
        new_low = max(0.0, new_low)
    if integral:
        return math.floor(new_low), math.ceil(new_high)
    width = high - low
    # Round outwards on about three significant digits of the width: 18.0..120.0 becomes 7.0..131.0.
    step = (
        10.0 ** (math.floor(math.log10(width)) - 2)
        if width > 0
        else 10.0 ** (math.floor(math.log10(abs(high) or 1)) - 2)
    )
    decimals = max(0, -int(math.log10(step)))
    return round(math.floor(new_low / step) * step, decimals), round(math.ceil(new_high / step) * step, decimals)


def write_suite(
    data: str,
    out: str | Path,
    *,
    name: str | None = None,
    target: str | None = None,
    margin: float = 0.1,
    max_categories: int = 20,
    store: Store | None = None,
) -> str:
    """Infer a suite from a CSV or Parquet file and write it as JSON; return ``out`` as a string.

    The data is read the way the ingest step reads it, so the inferred types are those the validate
    step sees in the snapshot.

    Args:
        data: Path or URI (``file://``, ``s3://``) of the reference data.
        out: Local path or URI of the JSON file to write.
        name: Suite name; default the stem of ``out``.
        target: Label column (see ``infer_suite``).
        margin: Fraction by which numeric ranges are widened (see ``infer_suite``).
        max_categories: Most distinct values a string column may have to get a value set.
        store: Store used to read and write URIs; default one rooted at the configured artifact root.
    """
    from mlops_ops.steps.ingest import read_source
    from mlops_ops.store import Store, local_path, store_for

    store = store or store_for()
    frame = read_source(data, store).to_pandas()
    if target is not None and target not in frame.columns:
        available = ", ".join(map(str, frame.columns))
        raise DataError(f"target column {target!r} is not in {data!r}; available columns: {available}")
    out_str = str(out)
    suite_name = name or Path(out_str.rstrip("/").rsplit("/", 1)[-1]).stem
    suite = infer_suite(frame, suite_name, target=target, margin=margin, max_categories=max_categories)
    payload = (json.dumps(suite, indent=2) + "\n").encode()
    path = local_path(out_str)
    root, _, key = str(path).rpartition("/") if path is not None else out_str.rstrip("/").rpartition("/")
    Store(root or "/").put_bytes(key, payload)
    log.info(
        "wrote suite %r with %d expectations for %d columns to %s",
        suite_name,
        len(suite["expectations"]),
        len(frame.columns),
        out_str,
    )
    return out_str
