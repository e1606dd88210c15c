"""The ingest step: canonical content-addressed snapshots, a deterministic split, and clear errors."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlops_ops import lineage
from mlops_ops.context import RunContext
from mlops_ops.demo import DATA_DIR
from mlops_ops.errors import DataError, SpecError
from mlops_ops.settings import DATA_ROOTS_ENV
from mlops_ops.specs import IngestResult, IngestSpec, SplitSpec
from mlops_ops.steps import ingest
from mlops_ops.store import Store, local_path, store_for
from tests.conftest import isolated_home

CHURN = str(DATA_DIR / "churn.csv")


def run_ingest(source: str | Path, target: str | None = "churned", run_id: str = "r1", **split: object) -> IngestResult:
    spec = IngestSpec(source=str(source), target=target, split=SplitSpec(**split))  # type: ignore[arg-type]
    return ingest.run(spec, RunContext(pipeline="test", run_id=run_id, step="ingest"), store_for())


@pytest.fixture(autouse=True)
def data_roots(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let specs read the demo data and the files these tests write under pytest's temporary folder."""
    monkeypatch.setenv(DATA_ROOTS_ENV, os.pathsep.join([str(tmp_path_factory.getbasetemp()), str(DATA_DIR)]))


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One MLflow database for the tests that only look at the step's output (creating one costs ~1 s)."""
    with isolated_home(tmp_path_factory.mktemp("mlops")) as home:
        yield home


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """1,000 rows with a row id and an imbalanced label: 100 positives, 900 negatives."""
    rng = np.random.default_rng(1)
    label = np.zeros(1000, dtype=int)
    label[rng.choice(1000, 100, replace=False)] = 1
    path = tmp_path / "labelled.csv"
    pd.DataFrame({"row": np.arange(1000), "x": rng.normal(size=1000), "label": label}).to_csv(path, index=False)
    return path


def read(uri: str) -> pd.DataFrame:
    path = local_path(uri)
    assert path is not None
    return pd.read_parquet(path)


# ------------------------------------------------------------------------------------------ the snapshot


def test_the_snapshot_holds_the_source_rows_with_schema_and_digest(mlops_home: Path) -> None:
    result = run_ingest(CHURN)
    source = pd.read_csv(CHURN)
    snapshot = read(result.snapshot.uri)
    pd.testing.assert_frame_equal(snapshot, source)
    path = local_path(result.snapshot.uri)
    assert path is not None and path.is_relative_to(mlops_home / "artifacts" / "datasets" / "sha256")
    assert result.snapshot.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.snapshot.digest in result.snapshot.uri
    assert result.snapshot.rows == 5000
    assert result.snapshot.columns == source.dtypes.astype(str).to_dict()
    assert pq.read_metadata(path).metadata is None or b"pandas" not in pq.read_metadata(path).metadata


def test_ingesting_twice_gives_the_same_uris_and_one_dataset_input(mlops_home: Path) -> None:
    first = run_ingest(CHURN)
    again = run_ingest(CHURN)
    other_run = run_ingest(CHURN, run_id="r2")
    assert again == first
    assert other_run.model_dump(exclude={"mlflow_run_id"}) == first.model_dump(exclude={"mlflow_run_id"})
    assert other_run.mlflow_run_id != first.mlflow_run_id
    stored = sorted((mlops_home / "artifacts" / "datasets").rglob("*.parquet"))
    assert len(stored) == 3
    client = lineage.client()
    for result in (first, other_run):
        assert result.mlflow_run_id is not None
        run = client.get_run(result.mlflow_run_id)
        assert run.inputs is not None
        inputs = run.inputs.dataset_inputs
        assert len(inputs) == 1
        assert inputs[0].dataset.digest == first.snapshot.digest[:36]
        assert inputs[0].dataset.name == "churn"
        assert run.data.metrics["rows"] == 5000 and run.data.metrics["columns"] == 9
        assert run.data.params["source"] == CHURN
        assert run.data.tags["mlops.dataset.digest"] == first.snapshot.digest


def test_parquet_sources_lose_their_pandas_index_and_give_the_csv_snapshot(shared_home: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(CHURN)
    frame.index = frame.index * 7  # not a RangeIndex: pandas writes it as a column
    frame.to_parquet(tmp_path / "churn.parquet")
    from_parquet = run_ingest(tmp_path / "churn.parquet")
    from_csv = run_ingest(CHURN)
    assert "__index_level_0__" not in from_parquet.snapshot.columns
    pd.testing.assert_frame_equal(read(from_parquet.snapshot.uri), read(from_csv.snapshot.uri))
    assert from_parquet.snapshot.digest == from_csv.snapshot.digest


def test_a_file_uri_names_the_same_source(shared_home: Path) -> None:
    assert run_ingest(Path(CHURN).as_uri()).snapshot == run_ingest(CHURN).snapshot


# ---------------------------------------------------------------------------------------------- split


def test_the_split_is_stratified_disjoint_and_complete(shared_home: Path, labelled: Path) -> None:
    result = run_ingest(labelled, target="label", eval_fraction=0.2)
    train, holdout = read(result.train.uri), read(result.eval.uri)
    assert (result.train.rows, result.eval.rows) == (800, 200)
    assert holdout["label"].sum() == 20 and train["label"].sum() == 80
    assert set(train["row"]).isdisjoint(holdout["row"])
    assert sorted([*train["row"], *holdout["row"]]) == list(range(1000))
    assert train["row"].is_monotonic_increasing and holdout["row"].is_monotonic_increasing


def test_the_seed_decides_the_split(shared_home: Path, labelled: Path) -> None:
    first = run_ingest(labelled, target="label", seed=1)
    assert run_ingest(labelled, target="label", seed=1).eval == first.eval
    assert run_ingest(labelled, target="label", seed=2).eval.digest != first.eval.digest


def test_a_continuous_target_is_split_without_strata(shared_home: Path, labelled: Path) -> None:
    result = run_ingest(labelled, target="x", eval_fraction=0.25)
    assert (result.train.rows, result.eval.rows) == (750, 250)


def test_split_indices_round_each_class_and_keep_every_row() -> None:
    import pyarrow as pa

    table = pa.table({"y": ["b"] * 7 + ["a"] * 3 + ["c"]})
    train, holdout = ingest.split_indices(table, "y", SplitSpec(eval_fraction=0.3, seed=0))
    labels = np.asarray(table["y"])
    # 7 * 0.3 = 2.1 -> 2, 3 * 0.3 = 0.9 -> 1, 1 * 0.3 -> 0
    assert sorted(labels[holdout]) == ["a", "b", "b"]
    assert sorted([*train, *holdout]) == list(range(11))


def test_too_few_rows_to_split_is_a_data_error(shared_home: Path, tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("a,y\n1,0\n")
    with pytest.raises(DataError, match=r"cannot split 1 rows with eval_fraction 0.2: one partition would be empty"):
        run_ingest(tmp_path / "one.csv", target="y")


# ------------------------------------------------------------------------------------------ bad inputs


def test_an_empty_file_is_a_data_error(shared_home: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.csv' is empty \(0 bytes\)"):
        run_ingest(tmp_path / "empty.csv")


def test_a_header_without_rows_is_a_data_error(shared_home: Path, tmp_path: Path) -> None:
    (tmp_path / "header.csv").write_text("age,churned\n")
    with pytest.raises(DataError, match=r"header\.csv' has a header but no rows"):
        run_ingest(tmp_path / "header.csv")


def test_a_missing_target_is_named_with_the_available_columns(shared_home: Path) -> None:
    with pytest.raises(DataError) as caught:
        run_ingest(CHURN, target="churn")
    message = str(caught.value)
    assert "target column 'churn' is not in" in message
    assert "available columns: age, tenure_months, monthly_charges" in message and message.endswith("churned")


def test_missing_target_values_are_counted(shared_home: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(CHURN).astype({"churned": "float64"})
    frame.loc[[3, 30, 300], "churned"] = np.nan
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.raises(DataError, match=r"target column 'churned' has 3 missing values in 5000 rows; drop or fill"):
        run_ingest(tmp_path / "gaps.csv")


def test_non_utf8_bytes_are_reported_with_their_offset(shared_home: Path, tmp_path: Path) -> None:
    (tmp_path / "latin1.csv").write_bytes("name,churned\nJosé,1\nAna,0\n".encode("latin-1"))
    with pytest.raises(
        DataError, match=r"is not valid UTF-8 \(byte 0xe9 at offset 16\) in column .name.; re-encode it as UTF-8"
    ):
        run_ingest(tmp_path / "latin1.csv")


def test_a_truncated_parquet_file_is_a_data_error(shared_home: Path, tmp_path: Path) -> None:
    pd.read_csv(CHURN).to_parquet(tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read '.*cut\.parquet' as Parquet: .*; the file is truncated or not"):
        run_ingest(tmp_path / "cut.parquet")


def test_a_path_that_does_not_exist_is_a_data_error(shared_home: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"source '.*nowhere\.csv' not found: no such file; check the path"):
        run_ingest(tmp_path / "nowhere.csv")


def test_an_unknown_suffix_asks_for_the_format(shared_home: Path, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("a,b\n1,2\n")
    with pytest.raises(SpecError, match=r"suffix '\.txt'; set format to 'csv' or 'parquet'"):
        run_ingest(tmp_path / "data.txt")
    spec = IngestSpec(source=str(tmp_path / "data.txt"), format="csv", target="b", split=SplitSpec(stratify=False))
    with pytest.raises(DataError, match="cannot split 1 rows"):
        ingest.run(spec, RunContext(pipeline="test", step="ingest"), store_for())


def test_a_failed_ingest_marks_its_mlflow_run_failed(mlops_home: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError):
        run_ingest(tmp_path / "empty.csv")
    runs = lineage.client().search_runs([lineage.experiment_id("test")], "tags.`mlops.step` = 'ingest'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_duplicate_column_names_are_a_data_error(shared_home: Path, tmp_path: Path) -> None:
    (tmp_path / "dup.csv").write_text("a,a,y\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"duplicate column names a; rename them"):
        ingest.read_source(str(tmp_path / "dup.csv"), Store(str(tmp_path)))


# ------------------------------------------------------------------------------------------ delimiters


@pytest.mark.parametrize(
    ("name", "content", "delimiter"),
    [
        pytest.param("semi.csv", 'a;b;Label\n1;"x, y, z";cat\n2;"p, q";dog\n', ";", id="semicolon-quoted-commas"),
        pytest.param("comma.csv", 'a,b,Label\n1,"x;y|z",cat\n2,"p;q\tr",dog\n', ",", id="comma-quoted-others"),
        pytest.param("pipe.csv", "a|b|Label\n1|2|cat\n", "|", id="pipe"),
        pytest.param("tab.csv", "a\tb\tLabel\n1\t2\tcat\n", "\t", id="tab-in-a-csv"),
        pytest.param("comma.tsv", "a,b\n1,2\n", "\t", id="tsv-is-always-tab"),
        pytest.param("one.csv", "Label\ncat\ndog\n", ",", id="one-column-falls-back-to-comma"),
        pytest.param("bom.csv", "\ufeffa;b\n1;2\n", ";", id="byte-order-mark"),
    ],
)
def test_the_delimiter_is_sniffed_from_the_first_bytes(tmp_path: Path, name: str, content: str, delimiter: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    assert ingest.csv_delimiter(tmp_path / name) == delimiter


def test_a_compressed_csv_is_sniffed_after_decompressing_and_only_its_start_is_read(tmp_path: Path) -> None:
    rows = "".join(f"{i};{i % 2}\n" for i in range(100_000))  # about 1 MB: far past the sniffed prefix
    (tmp_path / "big.csv.gz").write_bytes(gzip.compress(f"x;y\n{rows}".encode()))
    assert ingest.csv_delimiter(tmp_path / "big.csv.gz") == ";"
    # A row cut in half at the end of the prefix does not spoil the guess.
    (tmp_path / "cut.csv").write_text("x;y\n" + "1;2\n" * (ingest.SNIFF_BYTES // 4) + "3;4;5;6;7\n")
    assert ingest.csv_delimiter(tmp_path / "cut.csv") == ";"


def test_a_semicolon_csv_is_ingested_and_its_delimiter_logged(
    shared_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = pd.DataFrame({"a": [1.5, 2.5, 3.5, 4.5], "note": ["x, y", "z", "p, q", "r"], "Label": [0, 1, 0, 1]})
    frame.to_csv(tmp_path / "semi.csv", sep=";", index=False)
    with caplog.at_level("INFO", logger=ingest.__name__):
        result = run_ingest(tmp_path / "semi.csv", target="Label", eval_fraction=0.5)
    assert "with delimiter ';'" in caplog.text
    assert result.snapshot.columns == {"a": "float64", "note": "object", "Label": "int64"}
    pd.testing.assert_frame_equal(read(result.snapshot.uri), frame)
    frame.to_csv(tmp_path / "comma.csv", index=False)
    caplog.clear()
    with caplog.at_level("INFO", logger=ingest.__name__):
        run_ingest(tmp_path / "comma.csv", target="Label", eval_fraction=0.5)
    assert "delimiter" not in caplog.text  # a comma, the default, is not worth a line


@pytest.mark.integration
def test_an_s3_source_is_sniffed_like_a_local_one(shared_home: Path, s3_env: dict[str, str], s3_server: object) -> None:
    (shared_home / "semi.csv").write_text("x;y;Label\n1;2;cat\n3;4;dog\n")
    store = Store(f"s3://{s3_server.bucket}/ingest-test")  # type: ignore[attr-defined]
    source = store.put_file("raw/semi.csv", str(shared_home / "semi.csv"))
    assert ingest.read_source(source, store).column_names == ["x", "y", "Label"]


@pytest.mark.integration
def test_ingest_reads_from_and_writes_to_s3(shared_home: Path, s3_env: dict[str, str], s3_server: object) -> None:
    store = Store(f"s3://{s3_server.bucket}/ingest-test")  # type: ignore[attr-defined]
    source = store.put_file("raw/churn.csv", CHURN)
    result = ingest.run(IngestSpec(source=source, target="churned"), RunContext(step="ingest"), store)
    assert result.snapshot.uri.startswith(f"s3://{s3_server.bucket}/ingest-test/datasets/sha256/")  # type: ignore[attr-defined]
    assert result.snapshot.digest == run_ingest(CHURN).snapshot.digest


def test_many_columns_are_listed_up_to_a_limit(shared_home: Path, tmp_path: Path) -> None:
    names = [f"feature_{i}_{'x' * 60}" for i in range(500)]
    (tmp_path / "wide.csv").write_text(",".join(names) + "\n" + ",".join("1" * 500) + "\n")
    with pytest.raises(DataError) as caught:
        run_ingest(tmp_path / "wide.csv", target="label")
    assert str(caught.value).endswith(f"and {500 - ingest.MAX_NAMES_SHOWN} more")
    assert len(str(caught.value)) < 1200


# ------------------------------------------------------------------------ what errors may quote


SECRET = "root:x:0:0:hunter2:/root:/bin/bash"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(f"{SECRET}\nbin,x,1\n", "line 2 has 3 fields where the header has 1", id="ragged-row"),
        pytest.param(f"a,b\n1,2\n3,{SECRET},9\n", "line 3 has 3 fields where the header has 2", id="ragged-later"),
    ],
)
def test_a_csv_parse_error_names_the_line_but_never_quotes_it(
    shared_home: Path, tmp_path: Path, content: str, problem: str
) -> None:
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError) as caught:
        ingest.read_source(str(tmp_path / "bad.csv"), store_for())
    message = str(caught.value)
    assert problem in message and "fix the file or set format" in message
    assert "hunter2" not in message and "bin" not in message.replace("bad.csv", "")
    assert caught.value.__cause__ is None, "the library's message must not travel with the error either"


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (
            "In CSV column #1: Row #12: CSV conversion error to int64: invalid value 'hunter2'",
            "column 2 (counting from 1) has a value that is not int64 on line 12",
        ),
        (
            "CSV parse error: Row #7: Expected 2 columns, got 3: 1,hunter2,3",
            "line 7 has 3 fields where the header has 2",
        ),
        (
            "CSV parser got out of sync with chunker: hunter2",
            "the file is not well-formed CSV (Arrow could not parse it)",
        ),
    ],
)
def test_arrow_csv_errors_are_described_without_the_values_they_quote(message: str, problem: str) -> None:
    assert ingest._csv_problem(message, Path("unused.csv"), ingest.pcsv.ParseOptions()) == problem


def test_a_path_outside_the_data_roots_is_refused_before_any_mlflow_run(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_ROOTS_ENV, str(DATA_DIR))
    spec = IngestSpec(source="../../../../../../../../etc/passwd", format="csv")
    with pytest.raises(SpecError, match=f"'/etc/passwd'.*outside the folders a spec may read.*{DATA_ROOTS_ENV}"):
        ingest.run(spec, RunContext(pipeline="test", step="ingest"), store_for())
    assert not (mlops_home / "mlflow.db").exists(), "a refused spec leaves no run behind"
