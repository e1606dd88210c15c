"""Metrics on evaluation rows where some are undefined: left out, never NaN (a manifest must stay JSON)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression

from mlops_ops.specs import Gate
from mlops_ops.steps.metrics import measure


def fitted(labels: list[str]) -> RandomForestClassifier:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=90), "b": rng.normal(size=90)})
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(x, np.resize(labels, 90))


def test_a_class_without_evaluation_rows_leaves_roc_auc_out_instead_of_nan() -> None:
    model = fitted(["setosa", "versicolor", "virginica"])
    x = pd.DataFrame({"a": [0.1, 0.2, -0.3, 0.4], "b": [1.0, -1.0, 0.5, 0.0]})
    y = pd.Series(["setosa", "versicolor", "setosa", "versicolor"])  # no virginica among these rows
    _, scores = measure("classification", model, x, y)
    assert "roc_auc" not in scores and set(scores) >= {"accuracy", "f1", "log_loss"}
    json.dumps(scores, allow_nan=False)  # what an XCom needs
    reason = Gate.model_validate("roc_auc >= 0.75").check(scores)
    assert reason is not None and reason.startswith("roc_auc was not computed (undefined on these evaluation rows")

    every = pd.Series(["setosa", "versicolor", "virginica", "setosa"])
    assert 0.0 <= measure("classification", model, x, every)[1]["roc_auc"] <= 1.0


def test_one_class_among_the_rows_of_a_binary_model_has_no_roc_auc() -> None:
    model = fitted(["yes", "no"])
    x = pd.DataFrame({"a": [0.1, 0.2], "b": [1.0, -1.0]})
    assert "roc_auc" not in measure("classification", model, x, pd.Series(["yes", "yes"]))[1]


def test_r2_is_left_out_on_a_single_row() -> None:
    model = LinearRegression().fit(pd.DataFrame({"a": [0.0, 1.0, 2.0]}), [0.0, 1.0, 2.5])
    _, one = measure("regression", model, pd.DataFrame({"a": [3.0]}), pd.Series([3.1]))
    assert set(one) == {"rmse", "mae"}
    _, two = measure("regression", model, pd.DataFrame({"a": [3.0, 4.0]}), pd.Series([3.1, 4.4]))
    assert set(two) == {"rmse", "mae", "r2"}


def test_a_pipeline_preprocesses_once_and_predicts_what_its_own_methods_predict() -> None:
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from mlops_ops.demo import DATA_DIR
    from mlops_ops.steps.metrics import predict

    frame = pd.read_csv(DATA_DIR / "churn.csv")
    x, y = frame.drop(columns="churned"), frame["churned"]
    text = [c for c in x.columns if x[c].dtype == object]
    encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), text), remainder="passthrough")
    model = make_pipeline(encode, HistGradientBoostingClassifier(max_iter=20, random_state=0)).fit(x, y)
    calls = []
    transform = encode.transform
    encode.transform = lambda data: calls.append(1) or transform(data)  # type: ignore[method-assign]
    found = predict("classification", model, x)
    assert len(calls) == 1
    encode.transform = transform  # type: ignore[method-assign]
    assert np.array_equal(found.predicted, model.predict(x))
    assert np.array_equal(found.proba, model.predict_proba(x))
    assert found.classes == list(model.classes_)


def test_a_classifier_without_probabilities_gets_the_metrics_of_its_labels() -> None:
    from sklearn.svm import LinearSVC

    x = pd.DataFrame({"a": np.linspace(-1, 1, 40), "b": np.resize([0.0, 1.0], 40)})
    y = pd.Series(np.where(x["a"] > 0, "yes", "no"))
    predictions, scores = measure("classification", LinearSVC().fit(x, y), x, y)
    assert predictions.proba is None and predictions.classes == ["no", "yes"]
    assert set(scores) == {"accuracy", "f1", "precision", "recall"} and scores["accuracy"] > 0.9
    reason = Gate.model_validate("roc_auc >= 0.75").check(scores)
    assert reason is not None and "the model gives no class probabilities); gate on another metric" in reason
    assert Gate.model_validate("accuracy >= 0.9").check(scores) is None
