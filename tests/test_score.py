"""The score step on a real champion (real MLflow SQLite registry, real scikit-learn model)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_ops import lineage
from mlops_ops.context import RunContext
from mlops_ops.demo import DATA_DIR
from mlops_ops.errors import DataError, SpecError
from mlops_ops.lineage import monitoring
from mlops_ops.lineage import tags as keys
from mlops_ops.specs import EvaluateSpec, IngestResult, IngestSpec, PromoteSpec, TrainResult, TrainSpec
from mlops_ops.specs.monitoring import ScoreResult, ScoreSpec
from mlops_ops.steps import evaluate, ingest, promote, score, train
from mlops_ops.store import local_path, sha256_file, store_for
from tests.conftest import isolated_home

pytestmark = pytest.mark.slow
MODEL = "churn-monitored"


def ctx(step: str, run_id: str = "r1") -> RunContext:
    return RunContext(pipeline="monitor-test", run_id=run_id, step=step)


@dataclass(frozen=True)
class Champion:
    """A home whose registry has ``MODEL`` version 1 as champion, trained on the base demo batch."""

    home: Path
    ingested: IngestResult
    trained: TrainResult


def promote_champion(home: Path) -> Champion:
    """Ingest the base demo batch, train, evaluate and promote: ``MODEL`` version 1 becomes champion."""
    store = store_for()
    ingested = ingest.run(IngestSpec(source=str(DATA_DIR / "churn.csv"), target="churned"), ctx("ingest"), store)
    trained = train.run(
        TrainSpec(dataset=ingested.train, target="churned", estimator_params={"max_iter": 30}), ctx("train"), store
    )
    evaluation = evaluate.run(
        EvaluateSpec(dataset=ingested.eval, candidate=trained, registered_model=MODEL), ctx("evaluate"), store
    )
    promoted = promote.run(PromoteSpec(evaluation=evaluation, registered_model=MODEL), ctx("promote"), store)
    assert (promoted.version, promoted.moved) == ("1", True)
    return Champion(home, ingested, trained)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Champion]:
    with isolated_home(tmp_path_factory.mktemp("mlops")) as home:
        yield promote_champion(home)


def snapshot(champion: Champion, frame: pd.DataFrame, name: str) -> IngestResult:
    """Ingest ``frame`` (no target) as a snapshot; the file lives in the home, a readable data root."""
    path = champion.home / "data" / f"{name}.csv"
    path.parent.mkdir(exist_ok=True)
    frame.to_csv(path, index=False)
    return ingest.run(IngestSpec(source=str(path), split={"stratify": False}), ctx("ingest", name), store_for())


@pytest.fixture(scope="module")
def unlabelled(champion: Champion) -> tuple[pd.DataFrame, IngestResult]:
    """The drifted demo batch with a customer id and without its target column."""
    frame = pd.read_csv(DATA_DIR / "churn_drift.csv").drop(columns="churned")
    frame.insert(0, "customer_id", [f"c{i:05d}" for i in range(len(frame))])
    return frame, snapshot(champion, frame, "unlabelled")


@pytest.fixture(scope="module")
def scored(champion: Champion, unlabelled: tuple[pd.DataFrame, IngestResult]) -> ScoreResult:
    spec = ScoreSpec(registered_model=MODEL, dataset=unlabelled[1], keys=["customer_id"], batch_rows=700)
    return score.run(spec, ctx("score"), store_for())


def read(uri: str) -> pd.DataFrame:
    path = local_path(uri)
    assert path is not None
    return pd.read_parquet(path)


def test_predictions_equal_the_models_own_predict(
    scored: ScoreResult, unlabelled: tuple[pd.DataFrame, IngestResult]
) -> None:
    frame, _ = unlabelled
    model = lineage.load_model(f"models:/{MODEL}/1")
    features = frame[list(model.feature_names_in_)]
    written = read(scored.predictions.uri)
    assert list(written.columns) == ["customer_id", "prediction", "proba_0", "proba_1"]
    assert len(written) == len(frame) == scored.predictions.rows
    assert written["customer_id"].tolist() == frame["customer_id"].tolist()
    np.testing.assert_array_equal(written["prediction"].to_numpy(), model.predict(features))
    np.testing.assert_allclose(
        written[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(features), rtol=0, atol=0
    )
    assert (scored.version, scored.alias, scored.task, scored.classes) == (
        "1",
        "champion",
        "classification",
        ["0", "1"],
    )
    shares = written["prediction"].value_counts(normalize=True)
    assert scored.distribution["share.1"] == pytest.approx(shares[1])
    assert scored.distribution["proba_mean.1"] == pytest.approx(written["proba_1"].mean())
    assert scored.predictions.columns == {
        "customer_id": "object",
        "prediction": "int64",
        "proba_0": "float64",
        "proba_1": "float64",
    }


def test_lineage_links_scoring_run_digests_and_version(
    scored: ScoreResult, unlabelled: tuple[pd.DataFrame, IngestResult]
) -> None:
    _, data = unlabelled
    path = local_path(scored.predictions.uri)
    assert path is not None and sha256_file(path) == scored.predictions.digest
    assert scored.predictions.uri.endswith(f"{scored.predictions.digest}.parquet")
    run = lineage.client().get_run(scored.mlflow_run_id)
    tags = run.data.tags
    assert tags[keys.MONITOR_MODEL] == MODEL and tags[keys.MONITOR_VERSION] == "1"
    assert tags[keys.MONITOR_KIND] == keys.MONITOR_SCORE and tags[keys.MONITOR_ALIAS] == "champion"
    assert tags[keys.INPUT_DIGEST] == data.snapshot.digest
    assert tags[keys.OUTPUT_DIGEST] == scored.predictions.digest
    assert tags[keys.OUTPUT_URI] == scored.predictions.uri
    assert run.data.metrics["rows"] == len(unlabelled[0])
    assert run.data.metrics["prediction.share.1"] == pytest.approx(scored.distribution["share.1"])
    assert lineage.version_tags(MODEL, "1")[keys.monitor_last_run(keys.MONITOR_SCORE)] == scored.mlflow_run_id
    found = monitoring.monitoring_runs(MODEL, "1", keys.MONITOR_SCORE)
    assert [r["run_id"] for r in found] == [scored.mlflow_run_id]


def test_scoring_again_gives_the_same_content_addressed_file(
    scored: ScoreResult, unlabelled: tuple[pd.DataFrame, IngestResult]
) -> None:
    again = score.run(
        ScoreSpec(registered_model=MODEL, version="1", dataset=unlabelled[1], keys=["customer_id"], batch_rows=700),
        ctx("score", "r2"),
        store_for(),
    )
    assert (again.predictions.uri, again.predictions.digest) == (scored.predictions.uri, scored.predictions.digest)
    assert again.alias is None and again.version == "1"


def test_regression_quantiles_and_no_probabilities(champion: Champion) -> None:
    """A model without classes writes only predictions and logs quantiles of them."""
    store = store_for()
    trained = train.run(
        TrainSpec(
            dataset=champion.ingested.train,
            target="monthly_charges",
            task="regression",
            estimator="sklearn.linear_model.Ridge",
            features=["age", "tenure_months", "contract", "region"],
        ),
        ctx("train", "reg"),
        store,
    )
    evaluation = evaluate.run(
        EvaluateSpec(dataset=champion.ingested.eval, candidate=trained, registered_model="charges"),
        ctx("evaluate", "reg"),
        store,
    )
    promote.run(PromoteSpec(evaluation=evaluation, registered_model="charges"), ctx("promote", "reg"), store)
    result = score.run(ScoreSpec(registered_model="charges", dataset=champion.ingested), ctx("score", "reg"), store)
    written = read(result.predictions.uri)
    assert list(written.columns) == ["prediction"] and result.task == "regression"
    model = lineage.load_model("models:/charges/1")
    frame = read(champion.ingested.snapshot.uri)
    np.testing.assert_allclose(written["prediction"], model.predict(frame[list(model.feature_names_in_)]))
    assert result.distribution["q50"] == pytest.approx(written["prediction"].median())
    assert result.distribution["mean"] == pytest.approx(written["prediction"].mean())
    assert result.quantile_sample_rows == len(frame)


def test_missing_feature_columns_fail_with_their_names(champion: Champion) -> None:
    frame = pd.read_csv(DATA_DIR / "churn.csv").drop(columns=["monthly_charges", "contract", "churned"])
    data = snapshot(champion, frame, "lacking")
    with pytest.raises(DataError) as caught:
        score.run(ScoreSpec(registered_model=MODEL, dataset=data), ctx("score", "lacking"), store_for())
    message = str(caught.value)
    assert "lacks the model's feature columns ['monthly_charges', 'contract']" in message
    assert "\n" not in message and caught.value.exit_code == 3


def test_text_in_a_column_the_model_took_as_numbers_is_a_data_error_naming_it(champion: Champion) -> None:
    frame = pd.read_csv(DATA_DIR / "churn.csv").drop(columns="churned")
    frame["tenure_months"] = frame["tenure_months"].astype(str)
    frame.loc[::7, "tenure_months"] = "new"  # a word among the numbers: the column reads as text
    data = snapshot(champion, frame, "texted")
    with pytest.raises(DataError) as caught:
        score.run(ScoreSpec(registered_model=MODEL, dataset=data), ctx("score", "texted"), store_for())
    message = str(caught.value)
    assert message.startswith("the model cannot score these rows: ")
    assert (
        "could not convert string to float: 'new' (columns of numbers with some text: ['tenure_months'])" in message
        and "\n" not in message
    )


def test_missing_key_column(champion: Champion) -> None:
    spec = ScoreSpec(registered_model=MODEL, dataset=champion.ingested, keys=["customer_id"])
    with pytest.raises(DataError, match=r"key columns \['customer_id'\] are not in the dataset"):
        score.run(spec, ctx("score", "nokey"), store_for())


def test_no_champion_is_a_clear_spec_error(champion: Champion) -> None:
    with pytest.raises(SpecError) as caught:
        score.run(
            ScoreSpec(registered_model="never-trained", dataset=champion.ingested), ctx("score", "x"), store_for()
        )
    assert "registered model 'never-trained' does not exist" in str(caught.value)
    assert caught.value.exit_code == 2
    with pytest.raises(SpecError, match="registered model 'churn-monitored' has no 'challenger' alias yet"):
        score.run(
            ScoreSpec(registered_model=MODEL, alias="challenger", dataset=champion.ingested), ctx("score"), store_for()
        )
    with pytest.raises(SpecError, match="has no version '7'"):
        score.run(ScoreSpec(registered_model=MODEL, version="7", dataset=champion.ingested), ctx("score"), store_for())


def test_spec_takes_an_ingest_result_and_refuses_alias_with_version(champion: Champion) -> None:
    spec = ScoreSpec.model_validate({"registered_model": MODEL, "dataset": champion.ingested.model_dump(mode="json")})
    assert spec.dataset == champion.ingested.snapshot
    with pytest.raises(ValueError, match="give alias \\('champion'\\) or version \\('2'\\), not both"):
        ScoreSpec(registered_model=MODEL, alias="champion", version="2", dataset=champion.ingested.snapshot)
    with pytest.raises(ValueError, match="clash with the output columns"):
        ScoreSpec(registered_model=MODEL, dataset=champion.ingested.snapshot, keys=["prediction"])
