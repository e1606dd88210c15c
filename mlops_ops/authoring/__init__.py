"""Pipelines without hand-written DAG code: YAML pipeline files, their loader, and the Python builder.

``from mlops_ops.authoring import training_pipeline`` (or ``retraining_pipeline``, ``scoring_pipeline``)
returns a DAG; ``dags/yaml_pipelines.py`` turns each file of ``dags/pipelines/`` into the same DAG. The
builders import Airflow, so they are loaded on first use: ``pipeline lint`` and ``pipeline schema``
never pay for it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "training_pipeline": "mlops_ops.authoring.builder",
    "retraining_pipeline": "mlops_ops.authoring.builder",
    "scoring_pipeline": "mlops_ops.authoring.builder",
    "build": "mlops_ops.authoring.builder",
    "load": "mlops_ops.authoring.loader",
    "parse_file": "mlops_ops.authoring.parse",
    "PipelineFileError": "mlops_ops.authoring.source",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
