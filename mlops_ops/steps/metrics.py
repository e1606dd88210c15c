"""Metrics of a fitted model on one partition, named as in ``specs.METRICS``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_ops.errors import DataError


@dataclass(frozen=True)
class Predictions:
    """One model's predictions on a partition: labels or values, and class probabilities for a classifier."""

    predicted: np.ndarray
    proba: np.ndarray | None = None
    classes: list[Any] = field(default_factory=list)


def predict(task: str, model: Any, x: pd.DataFrame) -> Predictions:
    """Predict once; metrics and plots are computed from these arrays instead of predicting again.

    A classifier pipeline's preprocessing runs once for both labels and probabilities (the scorer's way).
    """
    if task == "classification":
        from mlops_ops.steps.score import Scorer

        predicted, proba = Scorer(model, probabilities=True)(x)
        return Predictions(predicted, proba, list(model.classes_))
    return Predictions(model.predict(x))


def compute(task: str, model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Compute the task's metrics; the keys match ``specs.METRICS[task]``."""
    return measure(task, model, x, y)[1]


def measure(task: str, model: Any, x: pd.DataFrame, y: pd.Series) -> tuple[Predictions, dict[str, float]]:
    """The model's predictions on ``x`` and the task's metrics against ``y``."""
    if task == "classification":
        unseen = unseen_labels(model, y)
        if unseen:
            raise DataError(f"labels {unseen[:10]} were not seen in training; the model knows {list(model.classes_)}")
    predictions = predict(task, model, x)
    return predictions, scores(task, predictions, y)


def scores(task: str, predictions: Predictions, y: pd.Series) -> dict[str, float]:
    """The task's metrics from predictions already made (see :func:`predict`)."""
    if task == "classification":
        return _classification(predictions, y)
    return _regression(predictions, y)


def describe(metrics: dict[str, float]) -> str:
    """Metrics as ``name=value`` pairs for a log line, sorted by name."""
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def unseen_labels(model: Any, y: pd.Series) -> list[Any]:
    """Labels in ``y`` that the classifier never saw in training."""
    known = set(np.asarray(model.classes_).tolist())
    return sorted({v for v in pd.unique(y).tolist() if v not in known}, key=str)


def _classification(p: Predictions, y: pd.Series) -> dict[str, float]:
    from sklearn import metrics

    predicted, proba, classes = p.predicted, p.proba, p.classes
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    pos = {"pos_label": classes[1]} if binary else {}
    out = {
        "accuracy": metrics.accuracy_score(y, predicted),
        "f1": metrics.f1_score(y, predicted, average=average, zero_division=0, **pos),
        "precision": metrics.precision_score(y, predicted, average=average, zero_division=0, **pos),
        "recall": metrics.recall_score(y, predicted, average=average, zero_division=0, **pos),
    }
    if proba is None:  # a classifier without predict_proba (LinearSVC, say): no log_loss, no roc_auc
        return _finite(out)
    out["log_loss"] = metrics.log_loss(y, proba, labels=classes)
    present = set(pd.unique(y).tolist())
    if binary and len(present) > 1:
        out["roc_auc"] = metrics.roc_auc_score(y, proba[:, 1])
    elif not binary and present >= set(classes):  # one-vs-rest needs rows of every class
        out["roc_auc"] = metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
    return _finite(out)


def _finite(values: dict[str, Any]) -> dict[str, float]:
    """The metrics that have a value: one undefined on these rows (NaN) is left out, not recorded as NaN."""
    return {k: float(v) for k, v in values.items() if np.isfinite(v)}


def _regression(p: Predictions, y: pd.Series) -> dict[str, float]:
    from sklearn import metrics

    predicted = p.predicted
    r2 = metrics.r2_score(y, predicted) if len(y) > 1 else float("nan")  # undefined on one row
    return _finite(
        {
            "rmse": np.sqrt(metrics.mean_squared_error(y, predicted)),
            "mae": metrics.mean_absolute_error(y, predicted),
            "r2": r2,
        }
    )
