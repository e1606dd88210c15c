"""The estimator boundary: nothing reachable by an import path is called unless it is an estimator class."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from mlops_ops.errors import SpecError
from mlops_ops.steps.estimators import ALLOWED_ENV, instantiate, resolve

CLI = str(Path(sys.executable).with_name("mlops-ops"))


class TinyClassifier(ClassifierMixin, BaseEstimator):
    """A user's own estimator, allowed only when the deployment lists it."""

    def fit(self, x: object, y: object) -> TinyClassifier:
        return self

    def predict(self, x: object) -> list[int]:
        return [0]


def _is_estimator_class(obj: object) -> bool:
    return (
        inspect.isclass(obj)
        and issubclass(obj, BaseEstimator)
        and not inspect.isabstract(obj)
        and callable(getattr(obj, "fit", None))
        and callable(getattr(obj, "predict", None))
    )


def _sklearn_callables() -> tuple[list[str], list[str]]:
    """Every callable attribute of every importable sklearn module: (not estimators, estimator classes)."""
    import sklearn

    others, estimators = [], []
    names = ["sklearn"] + [m.name for m in pkgutil.walk_packages(sklearn.__path__, "sklearn.", onerror=lambda _: None)]
    for module_name in names:
        if ".tests" in module_name or module_name.endswith("conftest"):
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception:  # optional dependencies of some modules are not installed
            continue
        for attr in dir(module):
            obj = getattr(module, attr, None)
            if callable(obj):
                (estimators if _is_estimator_class(obj) else others).append(f"{module_name}.{attr}")
    return others, estimators


@pytest.mark.slow
def test_no_sklearn_reachable_callable_but_an_estimator_class_resolves() -> None:
    others, estimators = _sklearn_callables()
    assert len(others) > 2000, len(others)  # the walk really covered scikit-learn
    assert "sklearn.utils._testing.check_output" in others
    resolved = []
    for path in others:
        with pytest.raises(SpecError):
            resolve(path)
    for path in estimators:
        try:
            resolved.append(resolve(path))
        except SpecError as exc:
            assert "not a public import path" in str(exc), f"{path}: {exc}"
    assert len(resolved) > 100
    assert all(_is_estimator_class(cls) for cls in resolved)


def _step(spec: dict[str, object], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "step", "train", "--spec", json.dumps(spec)],
        env=os.environ | {"MLOPS_HOME": str(home)} | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


REF = {"uri": "file:///nowhere/x.parquet", "digest": "ab" * 32, "rows": 10}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("sklearn.utils._testing.check_output", {"args": ["sh", "-c", "touch {canary}"]}),
        ("sklearn.datasets._base.makedirs", {"name": "{canary}"}),
        ("sklearn.datasets._rcv1.remove", {"path": "{victim}"}),
        ("sklearn.utils.check_array", {"array": [[1]]}),
    ],
)
def test_attack_payloads_exit_2_and_run_nothing(estimator: str, params: dict[str, object], tmp_path: Path) -> None:
    canary, victim = tmp_path / "canary", tmp_path / "victim"
    victim.write_text("keep me")
    text = json.dumps(params).replace("{canary}", str(canary)).replace("{victim}", str(victim))
    spec = {"dataset": REF, "target": "y", "estimator": estimator, "estimator_params": json.loads(text)}
    done = _step(spec, tmp_path / "home", **{ALLOWED_ENV: ""})
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("mlops-ops: error:")]
    assert len(errors) == 1 and estimator in errors[0]
    assert "Traceback" not in done.stderr
    assert not canary.exists() and victim.read_text() == "keep me"
    assert not (tmp_path / "home" / "mlflow.db").exists()  # refused before anything was recorded


def test_the_deployment_allows_other_estimators_not_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    path = f"{__name__}.TinyClassifier"
    monkeypatch.delenv(ALLOWED_ENV, raising=False)
    with pytest.raises(SpecError, match="is not allowed: only scikit-learn estimators are"):
        resolve(path)
    monkeypatch.setenv(ALLOWED_ENV, f"xgboost.XGBClassifier, {path}")
    assert resolve(path, "classification") is TinyClassifier
    with pytest.raises(SpecError, match="is not a regressor"):
        resolve(path, "regression")


def test_an_allowed_prefix_still_admits_only_estimator_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_ENV, "os.,subprocess.")
    for path in ("os.system", "subprocess.Popen", "subprocess.check_output"):
        with pytest.raises(SpecError, match="not a scikit-learn estimator class"):
            resolve(path)


def test_kind_and_parameters_are_checked_before_fitting() -> None:
    with pytest.raises(SpecError, match="is not a classifier"):
        resolve("sklearn.linear_model.Ridge", "classification")
    with pytest.raises(SpecError, match="has no fit and predict"):
        resolve("sklearn.preprocessing.StandardScaler")
    many = {f"p{i}": i for i in range(10_000)}
    with pytest.raises(SpecError) as caught:
        instantiate("sklearn.linear_model.Ridge", many, 0)
    assert len(str(caught.value)) < 600
    model = instantiate("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 3}, seed=7)
    assert model.get_params()["random_state"] == 7
