"""``mlops-ops pipeline init``: a starting pipeline file for a user's own CSV or Parquet.

It reads the table the way ingest does, guesses the task from the target column (and says why),
infers an expectation suite beside the file, picks an estimator for the task and the table's size, and
a gate on a metric the task computes: ``roc_auc`` for two classes, ``accuracy`` above the
most-common-class baseline for more, ``r2`` for regression. The file it writes passes ``pipeline lint``.
A target no model can train on (missing values, a single value) is refused before anything is written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ops.errors import DataError, SpecError

if TYPE_CHECKING:
    import pandas as pd

#: Most distinct values an integer (or integral float) target may have to be read as classes.
MAX_CLASSES = 20
#: Below this many rows a random forest is the starting estimator; above it, histogram gradient boosting.
SMALL_TABLE = 5000


@dataclass(frozen=True)
class Guess:
    """The task guessed from the target column, and the reason shown to the user."""

    task: str
    reason: str
    classes: int = 0
    majority_share: float = 0.0


@dataclass(frozen=True)
class Started:
    """What ``init`` wrote and chose."""

    pipeline: Path
    suite: Path
    guess: Guess
    estimator: str
    estimator_params: dict[str, Any]
    gate: str
    rows: int


def check_trainable(target: pd.Series) -> None:
    """Refuse a target no model can train on: one with missing values, or with fewer than two values.

    Ingest refuses missing targets and training needs two classes (or values), so a pipeline written for
    such a target could never run; init says so before it writes anything.

    Raises:
        DataError: The target has missing values, or fewer than two distinct values.
    """
    missing = int(target.isna().sum())
    if missing:
        raise DataError(
            f"target column {target.name!r} has {missing} missing values in {len(target)} rows; "
            "drop or fill those rows (every row needs a label to train on), then run init again"
        )
    distinct = int(target.nunique())
    if distinct < 2:
        raise DataError(
            f"target column {target.name!r} has a single value in all {len(target)} rows; a target needs at "
            "least two classes (or values) to learn: use data that has them, or choose another column"
        )


def guess_task(target: pd.Series) -> Guess:
    """Classification for text, booleans and integer-like columns with few values; regression otherwise.

    The guess looks at the non-missing values only: empty cells make pandas read whole numbers as floats,
    and must not decide the task.

    Raises:
        DataError: The target has fewer than two distinct non-missing values.
    """
    values = target.dropna()
    distinct = int(values.nunique())
    if distinct < 2:
        raise DataError(
            f"target column {target.name!r} has {distinct} distinct values; a target needs at least two classes "
            "(or values) to learn: use data that has them, or choose another column"
        )
    kind = values.dtype.kind
    integral = kind in "iub" or (kind == "f" and bool((values % 1 == 0).all()))
    if kind in "OSUb" or str(values.dtype) in ("category", "string", "str") or (integral and distinct <= MAX_CLASSES):
        share = float(values.value_counts(normalize=True).iloc[0])
        why = (
            "text or boolean values"
            if kind in "OSUb" or not integral
            else f"whole numbers with {distinct} distinct values"
        )
        return Guess("classification", f"{distinct} classes ({why})", distinct, share)
    return Guess("regression", f"numbers with {distinct} distinct values")


def choose_estimator(task: str, rows: int) -> tuple[str, dict[str, Any]]:
    """A sensible starting estimator: a forest on small tables, gradient boosting on larger ones."""
    if rows < SMALL_TABLE:
        name = "RandomForestClassifier" if task == "classification" else "RandomForestRegressor"
        return f"sklearn.ensemble.{name}", {"n_estimators": 200, "min_samples_leaf": 2}
    name = "HistGradientBoostingClassifier" if task == "classification" else "HistGradientBoostingRegressor"
    return f"sklearn.ensemble.{name}", {"max_iter": 200, "learning_rate": 0.1}


def choose_gate(guess: Guess) -> str:
    """A gate that means "better than guessing": on the metric that fits the task."""
    if guess.task == "regression":
        return "r2 >= 0.3"
    if guess.classes == 2:
        return "roc_auc >= 0.7"
    baseline = min(0.95, round(guess.majority_share + 0.05, 2))
    return f"accuracy >= {baseline:g}"


def _name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_").lower() or "my_pipeline"


def _relative(target: str, base: Path) -> str:
    """A local path as written in the file: relative to the file's folder when that is short and clear."""
    if "://" in target:
        return target
    try:
        return os.path.relpath(Path(target).absolute(), base.absolute())
    except ValueError:  # another drive on Windows
        return str(Path(target).absolute())


def init_pipeline(data: str, target: str, out: str | Path | None = None, *, force: bool = False) -> Started:
    """Write a training pipeline file for ``data`` (and its suite beside it); see the module docstring."""
    from mlops_ops.authoring.parse import parse_file, suite_beside
    from mlops_ops.steps.ingest import read_source
    from mlops_ops.store import store_for
    from mlops_ops.suite import write_suite

    out_path = Path(out) if out else Path(f"{_name(Path(data.rstrip('/')).stem)}.yaml")
    if out_path.suffix.lower() not in (".yaml", ".yml"):
        raise SpecError(f"--out {str(out_path)!r} must end in .yaml or .yml")
    suite_path = suite_beside(out_path)
    for path in (out_path, suite_path):
        if path.exists() and not force:
            raise SpecError(f"{path} exists; pass --force to overwrite it, or choose another --out")
    frame = read_source(data, store_for()).to_pandas()
    if target not in frame.columns:
        raise DataError(
            f"target column {target!r} is not in {data!r}; its columns: {', '.join(map(str, frame.columns))}"
        )
    check_trainable(frame[target])
    guess = guess_task(frame[target])
    estimator, params = choose_estimator(guess.task, len(frame))
    gate = choose_gate(guess)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_suite(data, suite_path.absolute(), name=out_path.stem, target=target)
    text = render(
        name=_name(out_path.stem), data=_relative(data, out_path.parent), target=target, guess=guess,
        suite=suite_path.name, estimator=estimator, params=params, gate=gate, rows=len(frame),
    )  # fmt: skip
    out_path.write_text(text)
    parse_file(out_path)  # what init writes must lint; a failure here is a bug worth seeing
    return Started(out_path, suite_path, guess, estimator, params, gate, len(frame))


def render(
    *,
    name: str,
    data: str,
    target: str,
    guess: Guess,
    suite: str,
    estimator: str,
    params: dict[str, Any],
    gate: str,
    rows: int,
) -> str:
    """The pipeline file's text, commented so a user can edit it with the docs closed."""
    import json

    model = name.replace("_", "-")
    return f"""\
# Written by `mlops-ops pipeline init`; check it with `mlops-ops pipeline lint {name}.yaml`,
# run it with `mlops-ops run {name}.yaml`. Keys: docs/authoring.md.
kind: training
dag_id: {name}
schedule: null            # or "@daily", a cron such as "0 3 * * 1", or {{assets: [...]}}
tags: [{json.dumps(name)}]

data: {json.dumps(data)}   # relative to this file; or file:// or s3://
target: {json.dumps(target)}
task: {guess.task}           # guessed: target has {guess.reason}
suite: {json.dumps(suite)}   # inferred from {rows} rows; review its ranges and value sets

estimator: {estimator}
estimator_params: {json.dumps(params)}
gates:
  - {gate}
margin: 0.0               # how much a new model must beat the champion by
registered_model: {model}
promotion: champion       # or challenger, for a later approval

runner: local             # or kubernetes (docs/kubernetes.md)
retries: 1
"""
