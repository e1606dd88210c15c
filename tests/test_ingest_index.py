"""Ingest and a saved pandas index: dropped when it is one, unnamed columns refused, Parquet read as CSV."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlops_ops.cli import main
from mlops_ops.context import RunContext
from mlops_ops.demo.conf import check_target, columns_of
from mlops_ops.errors import ERROR_PREFIX, DataError
from mlops_ops.settings import DATA_ROOTS_ENV
from mlops_ops.specs import IngestSpec
from mlops_ops.steps import ingest
from mlops_ops.store import local_path, store_for
from mlops_ops.suite import infer_suite


@pytest.fixture(autouse=True)
def data_roots(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let specs read the files these tests write under pytest's temporary folder."""
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path_factory.getbasetemp()))


def sorted_flowers() -> pd.DataFrame:
    """An iris-like table sorted by its label, so its row numbers give the label away."""
    rng = np.random.default_rng(0)
    species = np.repeat(["setosa", "versicolor", "virginica"], 50)
    return pd.DataFrame({
        "sepal length": rng.normal(5.8, 0.8, 150).round(1),
        "petal width": rng.normal(1.2, 0.7, 150).round(1),
        "species": species,
    })  # fmt: skip


@pytest.fixture
def indexed_csv(tmp_path: Path) -> Path:
    """The table saved with pandas' defaults: the index first, under an empty header cell."""
    path = tmp_path / "iris_idx.csv"
    sorted_flowers().to_csv(path)
    assert path.read_text().startswith(",sepal length,")
    return path


def test_a_saved_range_index_is_dropped_and_logged(indexed_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlops_ops.steps.ingest"):
        table = ingest.read_source(str(indexed_csv), store_for())
    assert table.column_names == list(sorted_flowers().columns)
    assert "dropped the first column" in caplog.text and "saved pandas index" in caplog.text


def test_an_unnamed_0_index_column_from_pandas_is_dropped(indexed_csv: Path, tmp_path: Path) -> None:
    path = tmp_path / "again.parquet"
    pd.read_csv(indexed_csv).to_parquet(path)  # pandas reads the empty header cell as "Unnamed: 0"
    assert ingest.read_source(str(path), store_for()).column_names == list(sorted_flowers().columns)


def test_the_ingest_snapshot_and_split_leave_the_index_out(indexed_csv: Path, mlops_home: Path) -> None:
    spec = IngestSpec(source=str(indexed_csv), target="species")
    result = ingest.run(spec, RunContext(pipeline="test", run_id="idx", step="ingest"), store_for())
    for ref in (result.snapshot, result.train, result.eval):
        path = local_path(ref.uri)
        assert path is not None
        assert list(pd.read_parquet(path).columns) == ["sepal length", "petal width", "species"]


@pytest.mark.parametrize(
    ("frame", "position"),
    [
        pytest.param(sorted_flowers().iloc[::2], 1, id="first-column-not-row-numbers"),
        pytest.param(sorted_flowers().rename(columns={"petal width": ""}), 2, id="empty-header-cell"),
        pytest.param(sorted_flowers().rename(columns={"petal width": "  "}), 2, id="blank-header-cell"),
    ],
)
def test_any_other_unnamed_column_is_refused_by_its_position(
    tmp_path: Path, frame: pd.DataFrame, position: int
) -> None:
    path = tmp_path / "unnamed.csv"
    frame.to_csv(path, index=position == 1)
    with pytest.raises(DataError) as caught:
        ingest.read_source(str(path), store_for())
    message = str(caught.value)
    assert f"column without a name (column {position}, counting from 1)" in message
    assert "name it in the header row" in message


def test_suite_infer_on_an_indexed_csv_describes_only_the_named_columns(indexed_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "iris_idx.suite.json"
    done = CliRunner().invoke(main, ["suite", "infer", str(indexed_csv), "--out", str(out), "--target", "species"])
    assert done.exit_code == 0, done.output
    suite = json.loads(out.read_text())
    columns = {e["kwargs"].get("column") for e in suite["expectations"]} - {None}
    assert columns == {"sepal length", "petal width", "species"}
    assert suite["expectations"][0]["kwargs"]["column_list"] == ["sepal length", "petal width", "species"]


def test_infer_suite_refuses_a_frame_with_an_unnamed_column() -> None:
    with pytest.raises(DataError, match=r"column 2 \(counting from 1\) has no name; name it in the header row"):
        infer_suite(pd.DataFrame({"a": [1, 2], "": [3, 4]}), "s")


def test_the_demo_header_check_still_agrees_with_ingest_on_an_indexed_csv(indexed_csv: Path) -> None:
    """The demo checks the header before ingest: its extra empty name must neither refuse nor admit a target."""
    header = columns_of(indexed_csv)
    assert header is not None and header[1:] == ingest.read_source(str(indexed_csv), store_for()).column_names
    check_target({"data_uri": str(indexed_csv), "target": "species"}, {})  # the real target passes


def test_a_parquet_file_read_as_csv_prints_only_the_error_line(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris

    # Its first ragged "line" holds bytes that are not UTF-8 (Arrow decodes that line for the row handler).
    data = tmp_path / "iris.parquet"
    load_iris(as_frame=True).frame.to_parquet(data)
    spec = json.dumps({"source": str(data), "format": "csv"})
    cli = Path(sys.executable).with_name("mlops-ops")
    env = os.environ | {"MLOPS_HOME": str(tmp_path / "mlops"), DATA_ROOTS_ENV: str(tmp_path)}
    for name in ("MLOPS_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI", "MLOPS_MLFLOW_ARTIFACT_ROOT"):
        env.pop(name, None)
    done = subprocess.run([str(cli), "step", "ingest", "--spec", spec], env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1 and "cannot parse" in errors[0], done.stderr
    assert re.search(r"line \d+ has \d+ fields where the header has \d+", errors[0]), errors[0]
