"""The pipeline-kind registry: each kind (``training``, ``retraining``, ``scoring``) is one entry here.

An entry names the kind's file model and how to load its builder (a function of the validated model
returning a DAG). The loader, ``pipeline lint``, ``pipeline schema`` and the docs derive from it. A
package adds a kind under the ``mlops_ops.pipeline_kinds`` entry-point group, naming a :class:`Kind`.
The builders import Airflow, so they are loaded only when a DAG is built, never by ``lint``.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from mlops_ops.authoring.models import Pipeline, RetrainingPipeline, ScoringPipeline, TrainingPipeline

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "mlops_ops.pipeline_kinds"


@dataclass(frozen=True)
class Kind:
    """One kind of pipeline file: its model and its builder (``"module:function"``, imported when used)."""

    name: str
    model: type[Pipeline]
    builder: str
    summary: str

    def build(self, pipeline: Pipeline, **kwargs: Any) -> Any:
        """The DAG of a validated pipeline of this kind."""
        module, _, func = self.builder.partition(":")
        build: Callable[..., Any] = getattr(importlib.import_module(module), func)
        return build(pipeline, **kwargs)


_BUILTIN = (
    Kind("training", TrainingPipeline, "mlops_ops.authoring.builder:build_training", "ingest, validate, train, evaluate, promote"),
    Kind("retraining", RetrainingPipeline, "mlops_ops.authoring.builder:build_retraining", "a gate (cooldown, rows), then the training chain"),
    Kind("scoring", ScoringPipeline, "mlops_ops.authoring.builder:build_scoring", "score a batch with a registered model and check drift"),
)  # fmt: skip
_declared: dict[str, Kind] = {k.name: k for k in _BUILTIN}


@functools.cache
def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            kind = ep.load()
        except Exception as exc:
            log.warning("pipeline kind %s (%s) could not be loaded: %s", ep.name, ep.value, exc)
            continue
        if isinstance(kind, Kind) and kind.name not in _declared:
            _declared[kind.name] = kind


def names() -> tuple[str, ...]:
    """Every kind's name, built-in ones first."""
    _load_entry_points()
    return tuple(_declared)


def get(name: str) -> Kind | None:
    """The kind called ``name``, or None."""
    _load_entry_points()
    return _declared.get(name)
