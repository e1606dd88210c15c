"""Drift: the statistics against scipy, false alarms on the base batch, the drifted demo batch, the step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

from mlops_ops import lineage
from mlops_ops.demo import DATA_DIR
from mlops_ops.errors import SpecError
from mlops_ops.lineage import tags as keys
from mlops_ops.specs import IngestResult, IngestSpec
from mlops_ops.specs.monitoring import DriftResult, DriftSpec, DriftThresholds, ScoreSpec
from mlops_ops.steps import drift, ingest, score
from mlops_ops.steps.drift_stats import categorical_drift, compare, numeric_drift, psi_numeric, psi_shares
from mlops_ops.store import store_for
from tests.conftest import isolated_home
from tests.test_score import MODEL, Champion, ctx, promote_champion

DEFAULTS = DriftThresholds()
BASE = pd.read_csv(DATA_DIR / "churn.csv")
DRIFTED = pd.read_csv(DATA_DIR / "churn_drift.csv")
#: What generate.py shifts in the drifted variant: charges, support calls, age, contract and payment mixes.
SHIFTED = {"monthly_charges", "support_calls", "age", "contract", "payment_method"}


def table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


# ------------------------------------------------------------------------------- statistics = scipy's


def test_numeric_statistics_equal_scipys() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(0, 2, 800), rng.normal(0.3, 2, 900)
    small = numeric_drift("x", ref, cur, DEFAULTS, small=True)
    assert (small.statistic, small.value) == ("ks", ks_2samp(ref, cur).pvalue)
    assert small.drifted == (ks_2samp(ref, cur).pvalue < 0.05)
    ref, cur = rng.normal(0, 2, 5000), rng.normal(0.3, 2, 4000)
    large = numeric_drift("x", ref, cur, DEFAULTS, small=False)
    assert large.statistic == "wasserstein"
    assert large.value == pytest.approx(wasserstein_distance(ref, cur) / np.std(ref), rel=1e-12)
    assert large.drifted and large.threshold == 0.1


def test_categorical_statistics_equal_scipys_and_name_new_categories() -> None:
    ref = {"a": 300, "b": 150, "c": 50}
    cur = {"a": 250, "b": 150, "c": 60, "d": 30, "e": 10}
    counts = np.array([[300, 150, 50, 0, 0], [250, 150, 60, 30, 10]], dtype=float)
    small = categorical_drift("k", ref, cur, DEFAULTS, small=True)
    assert (small.statistic, small.value) == ("chi2", chi2_contingency(counts).pvalue)
    assert small.drifted
    large = categorical_drift("k", ref, cur, DEFAULTS, small=False)
    expected = jensenshannon(counts[0] / counts[0].sum(), counts[1] / counts[1].sum())
    assert large.statistic == "jensenshannon" and large.value == pytest.approx(expected, rel=1e-12)
    assert (large.new_categories, large.new_category_rows) == (["d", "e"], 40)


def test_psi() -> None:
    assert psi_shares(np.array([0.5, 0.5]), np.array([0.9, 0.1])) == pytest.approx(
        0.4 * np.log(0.9 / 0.5) + (-0.4) * np.log(0.1 / 0.5)
    )
    same = np.random.default_rng(0).normal(size=10_000)
    assert psi_numeric(same, same) == 0.0
    assert psi_numeric(same, same + 1.0) > 0.2  # a one-std shift is a large PSI


# ------------------------------------------------------------------------------------- the decision


@pytest.mark.parametrize("rows", [500, 2000], ids=["ks-chi2", "wasserstein-js"])
def test_base_batch_against_itself_is_no_drift_in_95_of_100_trials(rows: int) -> None:
    quiet = 0
    for trial in range(100):
        reference = table(BASE.sample(rows, random_state=2 * trial))
        current = table(BASE.sample(rows, random_state=2 * trial + 1))
        quiet += not compare(reference, current, DEFAULTS, exclude=["churned"]).retrain_advised
    assert quiet >= 95


def test_drifted_batch_is_drifted_naming_the_shifted_columns() -> None:
    found = compare(table(BASE), table(DRIFTED), DEFAULTS, exclude=["churned"])
    assert found.retrain_advised
    assert set(found.drifted) >= SHIFTED
    assert "region" not in found.drifted  # its mix is the same in both variants
    assert "churned" not in [c.column for c in found.columns]
    assert found.reasons[0].startswith(f"{len(found.drifted)} of 8 columns drifted")
    assert all(name in found.reasons[0] for name in SHIFTED)


def test_sampling_is_seeded_and_stated() -> None:
    big = table(pd.concat([BASE] * 3, ignore_index=True))
    first = compare(big, table(DRIFTED), DEFAULTS, exclude=["churned"], sample_rows=4000, seed=7)
    again = compare(big, table(DRIFTED), DEFAULTS, exclude=["churned"], sample_rows=4000, seed=7)
    assert first.sample is not None and (first.sample.reference_rows, first.sample.current_rows) == (4000, 4000)
    assert [c.value for c in first.columns] == [c.value for c in again.columns]
    assert compare(table(BASE), table(DRIFTED), DEFAULTS, sample_rows=None).sample is None


def test_prediction_drift_is_reported_apart_from_the_features() -> None:
    reference = table(BASE.assign(prediction=(BASE["monthly_charges"] > 80).astype(int)))
    current = table(DRIFTED.assign(prediction=(DRIFTED["monthly_charges"] > 80).astype(int)))
    found = compare(reference, current, DEFAULTS, exclude=["churned"])
    assert found.prediction is not None and found.prediction.kind == "categorical"
    assert found.prediction.drifted and "prediction" not in [c.column for c in found.columns]
    assert any(r.startswith("the prediction distribution drifted") for r in found.reasons)


def test_spec_needs_a_reference_or_a_model() -> None:
    ref = {"uri": "file:///x.parquet", "digest": "0" * 64, "rows": 1}
    with pytest.raises(ValueError, match="give a reference dataset or a registered_model"):
        DriftSpec.model_validate({"current": ref})
    with pytest.raises(ValueError, match="sample_rows \\(1000\\) must exceed"):
        DriftSpec.model_validate({"current": ref, "reference": ref, "sample_rows": 1000})


# ----------------------------------------------------------------------------------------- the step


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Champion]:
    with isolated_home(tmp_path_factory.mktemp("mlops")) as home:
        yield promote_champion(home)


@pytest.fixture(scope="module")
def drifted_batch(champion: Champion) -> IngestResult:
    spec = IngestSpec(source=str(DATA_DIR / "churn_drift.csv"), target="churned")
    return ingest.run(spec, ctx("ingest", "drifted"), store_for())


@pytest.fixture(scope="module")
def verdict(champion: Champion, drifted_batch: IngestResult) -> DriftResult:
    return drift.run(DriftSpec(registered_model=MODEL, current=drifted_batch), ctx("drift"), store_for())


@pytest.mark.slow
def test_step_compares_with_the_champions_training_data(
    verdict: DriftResult, champion: Champion, drifted_batch: IngestResult
) -> None:
    assert verdict.reference == champion.ingested.train.model_copy(update={"columns": verdict.reference.columns})
    assert verdict.reference.digest == champion.trained.dataset_digest
    assert verdict.current == drifted_batch.snapshot
    assert (verdict.registered_model, verdict.version) == (MODEL, "1")
    assert verdict.retrain_advised and set(verdict.drifted_columns) >= SHIFTED
    assert "churned" not in [c.column for c in verdict.columns]  # the target, found through the lineage
    assert verdict.sample is None


@pytest.mark.slow
def test_step_logs_metrics_report_and_plots_on_a_monitoring_run(verdict: DriftResult) -> None:
    assert verdict.mlflow_run_id is not None
    client = lineage.client()
    run = client.get_run(verdict.mlflow_run_id)
    assert run.data.tags[keys.MONITOR_KIND] == keys.MONITOR_DRIFT and run.data.tags[keys.MONITOR_VERSION] == "1"
    assert run.data.tags[keys.DRIFT_DETECTED] == "true"
    assert float(run.data.tags[keys.DRIFT_SHARE]) == pytest.approx(verdict.drift_share)
    assert run.data.tags[keys.INPUT_DIGEST] == verdict.current.digest
    assert run.data.tags[keys.REFERENCE_DIGEST] == verdict.reference.digest
    assert run.data.metrics["drift_share"] == pytest.approx(verdict.drift_share)
    by_name = {c.column: c for c in verdict.columns}
    assert run.data.metrics["drift.age"] == pytest.approx(by_name["age"].value)
    artifacts = {a.path for a in client.list_artifacts(verdict.mlflow_run_id, "drift")}
    assert {"drift/result.json", "drift/report.md"} <= artifacts
    plots = {a.path for a in client.list_artifacts(verdict.mlflow_run_id, "drift/plots")}
    assert {f"drift/plots/{c}.png" for c in verdict.drifted_columns} <= plots
    logged = json.loads(Path(client.download_artifacts(verdict.mlflow_run_id, "drift/result.json")).read_text())
    assert DriftResult.model_validate(logged) == verdict
    report = Path(client.download_artifacts(verdict.mlflow_run_id, "drift/report.md")).read_text()
    assert "Retraining advised: **yes**" in report and "| monthly_charges | numeric | wasserstein |" in report
    assert lineage.version_tags(MODEL, "1")[keys.monitor_last_run(keys.MONITOR_DRIFT)] == verdict.mlflow_run_id


@pytest.mark.slow
def test_base_batch_against_the_champion_is_not_drift(champion: Champion) -> None:
    found = drift.run(
        DriftSpec(registered_model=MODEL, current=champion.ingested.eval), ctx("drift", "base"), store_for()
    )
    assert not found.retrain_advised and found.drifted_columns == []


@pytest.mark.slow
def test_explicit_reference_and_prediction_drift_from_score_results(
    champion: Champion, drifted_batch: IngestResult
) -> None:
    store = store_for()
    on_base = score.run(ScoreSpec(registered_model=MODEL, dataset=champion.ingested), ctx("score", "b"), store)
    on_drift = score.run(ScoreSpec(registered_model=MODEL, dataset=drifted_batch), ctx("score", "d"), store)
    spec = DriftSpec.model_validate(
        {
            "reference": champion.ingested.model_dump(mode="json"),
            "current": drifted_batch.model_dump(mode="json"),
            "reference_predictions": on_base.model_dump(mode="json"),
            "current_predictions": on_drift.model_dump(mode="json"),
            "target": "churned",
        }
    )
    found = drift.run(spec, ctx("drift", "explicit"), store)
    assert found.registered_model is None and found.reference == champion.ingested.snapshot
    assert found.prediction is not None and found.prediction.statistic == "jensenshannon"
    assert found.prediction.reference_rows == on_base.predictions.rows
    run = lineage.client().get_run(found.mlflow_run_id)
    assert keys.MONITOR_MODEL not in run.data.tags and "drift.prediction" in run.data.metrics


@pytest.mark.slow
def test_no_champion_is_a_clear_spec_error(champion: Champion, drifted_batch: IngestResult) -> None:
    with pytest.raises(SpecError, match="registered model 'churn-monitored' has no 'challenger' alias yet"):
        drift.run(DriftSpec(registered_model=MODEL, alias="challenger", current=drifted_batch), ctx("d"), store_for())
