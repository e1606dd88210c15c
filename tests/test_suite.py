"""Suite inference: the starting expectations a reviewer gets from reference data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_ops.demo import DATA_DIR, SUITE_PATH
from mlops_ops.errors import DataError, SpecError
from mlops_ops.suite import infer_suite, write_suite


def by_column(suite: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in suite["expectations"]}


@pytest.fixture
def reference() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "customer": [f"c{i:04d}" for i in range(100)],
            "age": rng.integers(20, 71, 100),
            "spend": np.round(rng.uniform(10.0, 110.0, 100), 2),
            "delta": np.linspace(-5.0, 5.0, 100),
            "plan": rng.choice(["basic", "plus", "pro"], 100),
            "note": [None if i % 10 == 0 else "x" for i in range(100)],
            "vip": rng.random(100) < 0.1,
            "label": rng.integers(0, 3, 100),
        }
    )


def test_the_table_expectations_fix_the_column_order_and_require_rows(reference: pd.DataFrame) -> None:
    suite = infer_suite(reference, "ref")
    assert suite["name"] == "ref"
    first, second = suite["expectations"][:2]
    assert first == {
        "type": "expect_table_columns_to_match_ordered_list",
        "kwargs": {"column_list": list(reference.columns)},
        "meta": {},
    }
    assert second["type"] == "expect_table_row_count_to_be_between" and second["kwargs"]["min_value"] == 1


def test_types_follow_the_reference_dtypes(reference: pd.DataFrame) -> None:
    types = {
        c: k["type_list"]
        for (t, c), k in by_column(infer_suite(reference, "ref")).items()
        if t.endswith("in_type_list")
    }
    assert "int64" in types["age"] and "float64" not in types["age"]
    assert types["spend"][:2] == ["float64", "float32"]
    assert types["plan"] == ["object", "str", "string"]
    assert types["vip"] == ["bool"]


def test_not_null_only_where_the_reference_has_no_nulls(reference: pd.DataFrame) -> None:
    not_null = {c for (t, c) in by_column(infer_suite(reference, "ref")) if t == "expect_column_values_to_not_be_null"}
    assert not_null == set(reference.columns) - {"note"}


def test_numeric_ranges_are_widened_and_rounded_outwards(reference: pd.DataFrame) -> None:
    ranges = by_column(infer_suite(reference, "ref", margin=0.1))
    age = ranges[("expect_column_values_to_be_between", "age")]
    low, high = reference["age"].min(), reference["age"].max()
    pad = (high - low) * 0.1
    assert (age["min_value"], age["max_value"]) == (int(np.floor(low - pad)), int(np.ceil(high + pad)))
    spend = ranges[("expect_column_values_to_be_between", "spend")]
    low, high = reference["spend"].min(), reference["spend"].max()
    pad = (high - low) * 0.1
    # A width of about 100 is rounded on tenths, outwards.
    assert low - pad - 0.1 < spend["min_value"] <= low - pad and high + pad <= spend["max_value"] < high + pad + 0.1
    assert spend["min_value"] == round(spend["min_value"], 1) and spend["max_value"] == round(spend["max_value"], 1)
    delta = ranges[("expect_column_values_to_be_between", "delta")]
    assert (delta["min_value"], delta["max_value"]) == (-6.0, 6.0)


def test_a_range_that_starts_at_zero_or_above_is_not_widened_below_zero() -> None:
    suite = infer_suite(pd.DataFrame({"calls": [0, 1, 2, 9]}), "s", margin=0.5)
    assert by_column(suite)[("expect_column_values_to_be_between", "calls")] == {
        "column": "calls",
        "min_value": 0,
        "max_value": 14,
    }


def test_low_cardinality_strings_and_class_labels_get_value_sets(reference: pd.DataFrame) -> None:
    kwargs = by_column(infer_suite(reference, "ref", target="label"))
    assert kwargs[("expect_column_values_to_be_in_set", "plan")]["value_set"] == ["basic", "plus", "pro"]
    assert kwargs[("expect_column_values_to_be_in_set", "label")]["value_set"] == [0, 1, 2]
    assert kwargs[("expect_column_values_to_be_in_set", "vip")]["value_set"] == [False, True]
    # An identifier has too many values to be a category; a non-target integer is a measure.
    assert ("expect_column_values_to_be_in_set", "customer") not in kwargs
    assert ("expect_column_values_to_be_in_set", "age") not in kwargs
    assert ("expect_column_values_to_be_between", "label") not in kwargs


def test_the_suite_is_plain_json(reference: pd.DataFrame) -> None:
    suite = infer_suite(reference, "ref", target="label")
    assert json.loads(json.dumps(suite)) == suite


def test_a_silly_margin_is_a_spec_error(reference: pd.DataFrame) -> None:
    with pytest.raises(SpecError, match="margin must be between 0 and 10, got -1"):
        infer_suite(reference, "ref", margin=-1)


def test_write_suite_reads_csv_and_names_the_suite_after_the_file(tmp_path: Path) -> None:
    out = write_suite(str(DATA_DIR / "churn.csv"), tmp_path / "suites" / "churn_check.json", target="churned")
    assert out == str(tmp_path / "suites" / "churn_check.json")
    suite = json.loads(Path(out).read_text())
    assert suite["name"] == "churn_check"
    assert suite["meta"]["mlops"]["target"] == "churned"
    assert by_column(suite)[("expect_column_values_to_be_in_set", "churned")]["value_set"] == [0, 1]


def test_write_suite_reads_parquet_the_same_way(tmp_path: Path) -> None:
    pd.read_csv(DATA_DIR / "churn.csv").to_parquet(tmp_path / "churn.parquet")
    from_csv = json.loads(Path(write_suite(str(DATA_DIR / "churn.csv"), tmp_path / "a.json", name="s")).read_text())
    from_parquet = json.loads(
        Path(write_suite(str(tmp_path / "churn.parquet"), tmp_path / "b.json", name="s")).read_text()
    )
    assert from_parquet == from_csv


def test_write_suite_names_a_missing_target(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"target column 'label' is not in .*; available columns: age, "):
        write_suite(str(DATA_DIR / "churn.csv"), tmp_path / "x.json", target="label")


def test_the_shipped_suite_is_the_inferred_one_plus_its_reviewed_ranges(tmp_path: Path) -> None:
    inferred = json.loads(
        Path(write_suite(str(DATA_DIR / "churn.csv"), tmp_path / "churn_suite.json", target="churned")).read_text()
    )
    shipped = json.loads(SUITE_PATH.read_text())
    assert len(shipped["expectations"]) == len(inferred["expectations"])
    reviewed = []
    for ours, fresh in zip(shipped["expectations"], inferred["expectations"], strict=True):
        assert ours["type"] == fresh["type"]
        if "reviewed" in ours["meta"]:
            reviewed.append(ours["kwargs"]["column"])
        else:
            assert ours["kwargs"] == fresh["kwargs"]
    assert reviewed == ["age", "support_calls"]


def test_dates_and_categories_read_from_parquet_pass_the_suite_inferred_from_them(tmp_path: Path) -> None:
    """Text dates become ``date`` objects in the snapshot, and Parquet keeps pandas categories as categories."""
    import datetime

    from mlops_ops.steps.validate import validate_frame

    frame = pd.DataFrame(
        {
            "signup": [datetime.date(2021, 1, 1) + datetime.timedelta(days=i) for i in range(40)],
            "region": pd.Categorical(["north", "south"] * 20),
            "label": ["yes", "no", "no", "no"] * 10,
        }
    )
    frame.to_parquet(tmp_path / "snapshot.parquet")
    snapshot = pd.read_parquet(tmp_path / "snapshot.parquet")
    suite = infer_suite(snapshot, "dated", target="label")
    found = by_column(suite)
    assert found[("expect_column_values_to_be_in_type_list", "signup")]["type_list"][-1] == "date"
    assert ("expect_column_values_to_be_in_type_list", "region") not in found  # its value set checks it
    assert found[("expect_column_values_to_be_in_set", "region")]["value_set"] == ["north", "south"]
    outcome = validate_frame(snapshot, suite, "dated")
    assert outcome["success"], [r["expectation_config"] for r in outcome["results"] if not r["success"]]
    numbers = snapshot.assign(signup=range(40))  # the rule still bites
    assert not validate_frame(numbers, suite, "dated")["success"]
