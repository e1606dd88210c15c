"""The step registry: every step is declared here once (built-in ones) or by its own package (users').

A declaration names the step, its spec and result models and how to load its function. Everything
else derives from it: the CLI's ``mlops-ops step NAME`` choices, spec parsing in the CLI and the
operators, the generic :class:`~mlops_ops.operators.StepOperator`, and the docs' step table.

Users add steps with the :func:`step` decorator in a module that a package of theirs names under the
``mlops_ops.steps`` entry-point group (``my_step = "my_pkg.steps"``). Entry points are read from the
installed packages, so which steps exist is decided by the deployment's image, never by a run.
A step's function is imported only when the step runs, so a process pays for one step's libraries.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from mlops_ops.errors import SpecError
from mlops_ops.specs import (
    EvaluateResult,
    EvaluateSpec,
    IngestResult,
    IngestSpec,
    PromoteResult,
    PromoteSpec,
    StepResult,
    StepSpec,
    TrainResult,
    TrainSpec,
    ValidateResult,
    ValidateSpec,
    validate_spec,
)
from mlops_ops.specs.gate import GateResult, GateSpec
from mlops_ops.specs.monitoring import DriftResult, DriftSpec, ScoreResult, ScoreSpec

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mlops_ops.steps"
StepFunction = Callable[..., StepResult]


@dataclass(frozen=True)
class StepDef:
    """One step: its name, typed spec and result, and a loader of its ``run(spec, ctx, store)``."""

    name: str
    spec: type[StepSpec]
    result: type[StepResult]
    load: Callable[[], StepFunction]
    summary: str
    builtin: bool = False

    def parse(self, raw: Any) -> StepSpec:
        """Validate a raw spec; a bad one raises one SpecError naming every invalid field."""
        return validate_spec(self.spec, raw, f"{self.name} spec")


# The built-in steps. Each loader imports its module inside the function: the edge stays visible to
# import-linter, and the module's libraries are imported only by the process that runs the step.


def _ingest() -> StepFunction:
    from mlops_ops.steps import ingest

    return ingest.run


def _validate() -> StepFunction:
    from mlops_ops.steps import validate

    return validate.run


def _train() -> StepFunction:
    from mlops_ops.steps import train

    return train.run


def _evaluate() -> StepFunction:
    from mlops_ops.steps import evaluate

    return evaluate.run


def _promote() -> StepFunction:
    from mlops_ops.steps import promote

    return promote.run


def _score() -> StepFunction:
    from mlops_ops.steps import score

    return score.run


def _drift() -> StepFunction:
    from mlops_ops.steps import drift

    return drift.run


def _gate() -> StepFunction:
    from mlops_ops.steps import gate

    return gate.run


_BUILTIN = (
    StepDef("ingest", IngestSpec, IngestResult, _ingest, "CSV/Parquet to a content-addressed snapshot", True),
    StepDef("validate", ValidateSpec, ValidateResult, _validate, "a Great Expectations suite on a snapshot", True),
    StepDef("train", TrainSpec, TrainResult, _train, "a scikit-learn estimator, logged to MLflow", True),
    StepDef("evaluate", EvaluateSpec, EvaluateResult, _evaluate, "candidate vs champion on frozen rows", True),
    StepDef("promote", PromoteSpec, PromoteResult, _promote, "register and move an alias", True),
    StepDef("score", ScoreSpec, ScoreResult, _score, "predictions of a registered model on a snapshot", True),
    StepDef("drift", DriftSpec, DriftResult, _drift, "a snapshot compared with the model's training data", True),
    StepDef("gate", GateSpec, GateResult, _gate, "whether a retraining run trains: cooldown, new rows, force", True),
)
_declared: dict[str, StepDef] = {d.name: d for d in _BUILTIN}


def step(
    name: str, *, spec: type[StepSpec], result: type[StepResult], summary: str = ""
) -> Callable[[StepFunction], StepFunction]:
    """Declare a user step: decorate ``run(spec, ctx, store) -> result`` in a module an entry point names.

    :param name: The step's name (``mlops-ops step NAME``); letters, digits, ``_`` and ``-``.
    :param spec: Its pydantic spec model (derive from :class:`mlops_ops.specs.StepSpec`).
    :param result: Its pydantic result model (derive from :class:`mlops_ops.specs.StepResult`).
    """

    def declare(func: StepFunction) -> StepFunction:
        found = _declared.get(name)
        if found is not None and found.builtin:
            raise SpecError(f"step {name!r} is built in; give your step another name")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise SpecError(f"step name {name!r} may hold only letters, digits, '_' and '-'")
        doc = (func.__doc__ or "").strip().splitlines()
        _declared[name] = StepDef(name, spec, result, lambda: func, summary or (doc[0] if doc else name))
        return func

    return declare


@functools.cache
def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()  # importing the module runs its @step declarations
        except Exception as exc:
            log.warning("step package %s (%s) could not be loaded: %s", ep.name, ep.value, exc)


def refresh() -> None:
    """Read the installed packages' step declarations again (after a package was installed in this process)."""
    _load_entry_points.cache_clear()
    _load_entry_points()


def names() -> tuple[str, ...]:
    """Every step's name: the built-in ones first, then users' in name order."""
    _load_entry_points()
    users = sorted(n for n, d in _declared.items() if not d.builtin)
    return (*(d.name for d in _BUILTIN), *users)


def get(name: str) -> StepDef:
    """The declaration of step ``name``; a SpecError naming the known steps if there is none."""
    if name not in _declared:
        _load_entry_points()
    found = _declared.get(name)
    if found is None:
        raise SpecError(f"unknown step {name!r}; known steps: {', '.join(names())}")
    return found


def parse_spec(name: str, raw: Any) -> StepSpec:
    """Validate a raw spec for step ``name``."""
    return get(name).parse(raw)
