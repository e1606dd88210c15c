"""`pipeline init` refuses targets that cannot train, and guesses the task from the non-missing values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlops_ops.authoring.init import guess_task
from mlops_ops.cli import main
from mlops_ops.errors import ERROR_PREFIX, DataError
from mlops_ops.settings import DATA_ROOTS_ENV
from mlops_ops.steps.ingest import read_source
from mlops_ops.store import store_for


@pytest.fixture(autouse=True)
def data_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pipeline init` sets the data roots for its file in this process: restore them after each test."""
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path))


def customers(rows: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "age": rng.integers(18, 80, rows),
        "plan": rng.choice(["basic", "pro"], rows),
        "monthly spend": rng.gamma(2.0, 30.0, rows).round(2),
        "churned": rng.choice(["yes", "no"], rows),
    })  # fmt: skip


def init(tmp_path: Path, frame: pd.DataFrame, target: str) -> tuple[int, str, Path]:
    data = tmp_path / "customers.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "pipelines" / "customers.yaml"
    done = CliRunner().invoke(main, ["pipeline", "init", "--data", str(data), "--target", target, "--out", str(out)])
    return done.exit_code, done.stderr, out


def test_init_refuses_a_target_with_missing_values_and_writes_nothing(tmp_path: Path) -> None:
    frame = customers()
    frame.loc[frame.index[::3], "monthly spend"] = np.nan
    code, stderr, out = init(tmp_path, frame, "monthly spend")
    assert code == DataError.exit_code == 3, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1
    assert "target column 'monthly spend' has 67 missing values in 200 rows" in errors[0]
    assert "drop or fill those rows" in errors[0]
    assert not out.parent.exists() or not any(out.parent.iterdir()), "nothing is written for a target that cannot train"


@pytest.mark.parametrize("label", ["yes", 1])
def test_init_refuses_a_single_class_target_and_writes_nothing(tmp_path: Path, label: object) -> None:
    code, stderr, out = init(tmp_path, customers().assign(churned=label), "churned")
    assert code == 3, stderr
    assert "target column 'churned' has a single value in all 200 rows" in stderr
    assert "a target needs at least two classes (or values)" in stderr
    assert not out.exists() and not out.with_suffix(".suite.json").exists()


def test_init_on_a_csv_with_a_saved_index_leaves_the_index_out_of_the_suite(tmp_path: Path) -> None:
    data = tmp_path / "iris_idx.csv"
    customers().sort_values("churned").reset_index(drop=True).to_csv(data)  # pandas' default: index=True
    out = tmp_path / "iris_idx.yaml"
    done = CliRunner().invoke(main, ["pipeline", "init", "--data", str(data), "--target", "churned", "--out", str(out)])
    assert done.exit_code == 0, done.output
    suite = json.loads(out.with_suffix(".suite.json").read_text())
    assert suite["expectations"][0]["kwargs"]["column_list"] == list(customers().columns)
    assert all(e["kwargs"].get("column", "x") != "" for e in suite["expectations"])


COLUMNS = {
    "whole-number-classes": pd.Series([0, 1, 2, 1, 0, 2, 1, 1] * 5, name="y"),
    "text": pd.Series(["a", "b", "c", "a"] * 10, name="y"),
    "booleans": pd.Series([True, False, True, True] * 10, name="y"),
    "numbers": pd.Series(np.linspace(0.5, 99.5, 40), name="y"),
    "many-whole-numbers": pd.Series(np.arange(40), name="y"),
}


@pytest.mark.parametrize("name", COLUMNS)
def test_missing_values_do_not_change_the_guess(tmp_path: Path, name: str) -> None:
    """Read as init reads them: with empty cells, whole numbers arrive as floats and flags as objects."""
    full = COLUMNS[name]
    with_gaps = pd.concat([full, pd.Series([None] * 7, name="y", dtype=object)], ignore_index=True)
    guesses = []
    for label, column in (("full", full), ("gaps", with_gaps)):
        path = tmp_path / f"{label}.csv"
        pd.DataFrame({"x": range(len(column)), "y": column}).to_csv(path, index=False)
        guesses.append(guess_task(read_source(str(path), store_for()).to_pandas()["y"]))
    assert guesses[1] == guesses[0]


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(["yes"] * 9 + [None], name="churned"),
        pd.Series([1.0] * 9 + [np.nan], name="churned"),
        pd.Series([np.nan] * 10, name="churned"),
    ],
    ids=["one-class-text", "one-class-number", "all-missing"],
)
def test_guess_task_refuses_fewer_than_two_values(column: pd.Series) -> None:
    with pytest.raises(DataError, match=r"'churned' has [01] distinct values; a target needs at least two classes"):
        guess_task(column)
