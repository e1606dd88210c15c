"""The demo churn data: reproducible, realistic, and each variant doing what the demo needs of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_ops.demo import DATA_DIR, SUITE_PATH
from mlops_ops.demo.conf import check_target, columns_of, starting_suite
from mlops_ops.demo.generate import CONTRACTS, FILES, generate, main, write_demo
from mlops_ops.errors import DataError, SpecError
from mlops_ops.settings import DATA_ROOTS_ENV, HOME_ENV


def test_regenerating_reproduces_the_shipped_files_byte_for_byte(tmp_path: Path) -> None:
    written = write_demo(tmp_path)
    assert sorted(written) == sorted(FILES) == sorted(p.name for p in DATA_DIR.glob("*.csv"))
    for name, path in written.items():
        assert path.read_bytes() == (DATA_DIR / name).read_bytes(), f"{name} differs from the shipped file"


def test_the_package_names_its_files_without_importing_numpy_or_pandas() -> None:
    code = "import sys, mlops_ops.demo as d; print(d.DATA_DIR.is_dir(), d.SUITE_PATH.is_file(), 'numpy' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "False", "False"]


def test_the_same_seed_gives_the_same_table_and_another_seed_does_not() -> None:
    pd.testing.assert_frame_equal(generate(300, seed=5), generate(300, seed=5))
    assert not generate(300, seed=5).equals(generate(300, seed=6))


def test_base_data_has_the_expected_columns_types_and_churn_rate() -> None:
    df = pd.read_csv(DATA_DIR / "churn.csv")
    assert len(df) == 5000
    assert df.dtypes.astype(str).to_dict() == {
        "age": "int64",
        "tenure_months": "int64",
        "monthly_charges": "float64",
        "total_charges": "float64",
        "support_calls": "int64",
        "contract": "object",
        "payment_method": "object",
        "region": "object",
        "churned": "int64",
    }
    assert not df.isna().any().any()
    assert set(df["churned"]) == {0, 1}
    assert 0.15 < df["churned"].mean() < 0.35
    assert set(df["contract"]) == set(CONTRACTS)
    # Month-to-month customers leave more often: the label depends on the features.
    rates = df.groupby("contract")["churned"].mean()
    assert rates["month-to-month"] > rates["one-year"] > rates["two-year"]


def test_drift_shifts_distributions_but_keeps_the_categories() -> None:
    base, drift = pd.read_csv(DATA_DIR / "churn.csv"), pd.read_csv(DATA_DIR / "churn_drift.csv")
    assert drift["monthly_charges"].mean() > base["monthly_charges"].mean() + 8
    assert (drift["contract"] == "month-to-month").mean() > (base["contract"] == "month-to-month").mean() + 0.1
    for column in ("contract", "payment_method", "region"):
        assert set(drift[column]) == set(base[column])
    assert not drift.isna().any().any()


def test_corrupt_data_has_counted_defects_and_an_intact_label() -> None:
    df = pd.read_csv(DATA_DIR / "churn_corrupt.csv")
    count = 5000 // 300
    assert (df["age"] < 0).sum() == count
    assert df["monthly_charges"].isna().sum() == count
    assert (df["contract"] == "three-year").sum() == count
    assert (df["support_calls"] >= 200).sum() == count
    assert df["churned"].notna().all() and set(df["churned"]) == {0, 1}


def test_generate_rejects_a_bad_kind_or_row_count() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        generate(10, kind="broken")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows must be positive"):
        generate(0)


def test_the_command_line_writes_three_files(tmp_path: Path) -> None:
    main([str(tmp_path / "out"), "--rows", "40"])
    for name in FILES:
        assert len(pd.read_csv(tmp_path / "out" / name)) == 40


def test_the_shipped_suite_is_a_gx_suite_for_the_churn_columns() -> None:
    suite = json.loads(SUITE_PATH.read_text())
    assert suite["name"] == "churn_suite"
    columns = suite["expectations"][0]["kwargs"]["column_list"]
    assert columns == list(pd.read_csv(DATA_DIR / "churn.csv", nrows=1).columns)


@pytest.mark.slow
def test_a_gradient_boosted_model_reaches_a_realistic_auc() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    df = pd.read_csv(DATA_DIR / "churn.csv")
    features = df.drop(columns="churned").astype({c: "category" for c in ("contract", "payment_method", "region")})
    order = np.random.default_rng(0).permutation(len(df))
    train, test = order[:4000], order[4000:]
    model = HistGradientBoostingClassifier(max_iter=50, categorical_features="from_dtype", random_state=0)
    model.fit(features.iloc[train], df["churned"].iloc[train])
    auc = roc_auc_score(df["churned"].iloc[test], model.predict_proba(features.iloc[test])[:, 1])
    assert 0.78 <= auc <= 0.92


# --------------------------------------------------------------- your own file, checked before Airflow starts


def refusal(path: Path, target: str) -> str:
    """The one line the demo refuses ``path`` with when ``target`` is not one of its columns."""
    with pytest.raises(SpecError) as caught:
        check_target({"data_uri": str(path), "target": target}, {})
    assert caught.value.exit_code == 2
    return str(caught.value)


def test_a_semicolon_csv_has_its_columns_read_with_the_delimiter_ingest_uses(tmp_path: Path) -> None:
    (tmp_path / "semi.csv").write_text('a;b;Label\n1;"x, y";cat\n2;"p|q";dog\n')
    assert columns_of(tmp_path / "semi.csv") == ["a", "b", "Label"]
    check_target({"data_uri": str(tmp_path / "semi.csv"), "target": "Label"}, {})
    assert "is not in semi.csv (a, b, Label); did you mean 'Label'?" in refusal(tmp_path / "semi.csv", "label")


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_text("cultivar,alcohol\nbarolo,13.2\n", encoding="utf-8-sig")
    assert columns_of(tmp_path / "bom.csv") == ["cultivar", "alcohol"]
    check_target({"data_uri": str(tmp_path / "bom.csv"), "target": "cultivar"}, {})


def test_a_parquet_file_without_the_target_is_refused_like_a_csv(tmp_path: Path) -> None:
    pd.DataFrame({"sepal_length": [5.1], "species": ["setosa"]}).to_parquet(tmp_path / "flowers.parquet")
    check_target({"data_uri": str(tmp_path / "flowers.parquet"), "target": "species"}, {})
    message = refusal(tmp_path / "flowers.parquet", "specie")
    assert message.startswith(
        "the target column 'specie' is not in flowers.parquet (sepal_length, species); did you mean 'species'?"
    )
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    check_target({"data_uri": str(tmp_path / "broken.parquet"), "target": "y"}, {})  # ingest says what is wrong


def test_a_failed_suite_inference_is_reported_once_with_its_own_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n")
    env = dict(os.environ) | {DATA_ROOTS_ENV: str(tmp_path)}
    with pytest.raises(DataError) as caught:
        starting_suite({"data_uri": str(tmp_path / "ragged.csv")}, {"target": "b"}, env)
    assert str(caught.value).startswith(f"cannot parse {str(tmp_path / 'ragged.csv')!r} as CSV: line 3 has 3 fields")
    from mlops_ops.demo.conf import child_error

    refused = child_error("noise\nmlops-ops: error: SpecError: format must be csv\n", "failed")
    assert type(refused) is SpecError and str(refused) == "format must be csv"
    assert str(child_error("", "suite infer failed")) == "suite infer failed"
    assert str(child_error("mlops-ops: error: KeyError: 'x'", "failed")) == "KeyError: 'x'"
