"""The five ML steps: plain functions of a typed spec and a run context, with no Airflow import.

Each step module exposes ``run(spec, ctx, store) -> result``. Modules are imported only when their
step runs, so a process pays for the libraries of the one step it executes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

STEP_NAMES = ("ingest", "validate", "train", "evaluate", "promote")


def step_function(name: str) -> Callable[..., Any]:
    """The ``run`` function of a step, imported on demand."""
    if name not in STEP_NAMES:
        raise KeyError(name)
    return importlib.import_module(f"mlops_ops.steps.{name}").run  # type: ignore[no-any-return]
