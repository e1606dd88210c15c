"""Resolving an estimator named by an import path, safely: deny by default at the trust boundary.

The estimator comes from a run's spec, which a DAG run's conf can set, so the name is untrusted.
Resolution imports only modules the deployment allows (public ``sklearn`` modules, plus what
``MLOPS_ALLOWED_ESTIMATORS`` or the operator's ``allowed_estimators`` adds), then requires the object
to be a class deriving from scikit-learn's ``BaseEstimator`` with ``fit`` and ``predict``, of the kind
the task needs, **before** anything is instantiated or called. scikit-learn's modules re-export system
functions (``sklearn.utils._testing.check_output`` is ``subprocess.check_output``), so a prefix check on
the path alone is no boundary.
"""

from __future__ import annotations

import importlib
import inspect
import os
import reprlib
from typing import Any

from mlops_ops.errors import SpecError
from mlops_ops.specs.core import check_estimator_path

#: Deployment setting: import paths (``xgboost.XGBClassifier``) or module prefixes ending in ``.``
#: (``lightgbm.``) allowed besides scikit-learn's public estimators; comma-separated.
ALLOWED_ENV = "MLOPS_ALLOWED_ESTIMATORS"


def deployment_allowed() -> list[str]:
    """What the deployment allows besides scikit-learn (``MLOPS_ALLOWED_ESTIMATORS``)."""
    return [p.strip() for p in os.environ.get(ALLOWED_ENV, "").split(",") if p.strip()]


def _allowed(path: str, extra: list[str]) -> bool:
    if path.startswith("sklearn."):
        return True
    return any(path == entry or (entry.endswith(".") and path.startswith(entry)) for entry in extra)


def check_allowed(path: str, extra: list[str] | None = None) -> None:
    """Refuse a path outside scikit-learn and the allow-list, importing nothing (cheap, for operators)."""
    try:
        check_estimator_path(path)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    if not _allowed(path, deployment_allowed() if extra is None else extra):
        raise SpecError(
            f"estimator {path!r} is not allowed: only scikit-learn estimators are, unless the deployment adds "
            f"the path to {ALLOWED_ENV} or the DAG author to the operator's allowed_estimators"
        )


def resolve(path: str, task: str | None = None) -> type:
    """The estimator class ``path`` names, checked before anything of it is called.

    :raises SpecError: the path is not allowed, not importable, or not an estimator class for ``task``.
    """
    check_allowed(path)
    module_name, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"estimator {path!r} cannot be imported: {type(exc).__name__}") from exc
    _check_class(path, found, task)
    return found  # type: ignore[no-any-return]


def _check_class(path: str, found: Any, task: str | None) -> None:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

    if not inspect.isclass(found) or not issubclass(found, BaseEstimator):
        raise SpecError(f"estimator {path!r} is not a scikit-learn estimator class (a BaseEstimator subclass)")
    if inspect.isabstract(found) or not all(callable(getattr(found, m, None)) for m in ("fit", "predict")):
        raise SpecError(f"estimator {path!r} has no fit and predict; give a classifier or regressor")
    # The kind is read from the class's bases: nothing of the estimator runs.
    if task == "classification" and not issubclass(found, ClassifierMixin):
        raise SpecError(f"estimator {path!r} is not a classifier; use a classifier or task 'regression'")
    if task == "regression" and not issubclass(found, RegressorMixin):
        raise SpecError(f"estimator {path!r} is not a regressor; use a regressor or task 'classification'")


def brief(params: dict[str, Any]) -> str:
    """Parameters for an error line: a few keys, short values (a spec may carry thousands)."""
    shortener = reprlib.Repr()
    shortener.maxdict, shortener.maxstring, shortener.maxother, shortener.maxlevel = 8, 60, 60, 2
    return shortener.repr(params)


def instantiate(path: str, params: dict[str, Any], seed: int, task: str | None = None) -> Any:
    """A new estimator of the resolved class, with its parameters and the spec's seed."""
    cls = resolve(path, task)
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise SpecError(f"estimator {path!r} rejects its parameters {brief(params)}: {str(exc)[:200]}") from exc
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=seed)
    return estimator
