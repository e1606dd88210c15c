"""Lineage in MLflow: the only package that talks to MLflow, and the owner of what is recorded there.

- :mod:`~mlops_ops.lineage.tags`: the tag vocabulary (every key written or read);
- :mod:`~mlops_ops.lineage.client`: one client per process, bounded retries, errors in our family;
- :mod:`~mlops_ops.lineage.runs`: the parent run of a pipeline run and the child run of each step;
- :mod:`~mlops_ops.lineage.records`: what each step records (typed recorders; steps spell no tag);
- :mod:`~mlops_ops.lineage.registry`: model versions, aliases and their history;
- :mod:`~mlops_ops.lineage.chain`: reading a version's lineage and an alias's history back.
"""

from __future__ import annotations

from mlops_ops.lineage import tags
from mlops_ops.lineage.chain import alias_history, chain
from mlops_ops.lineage.client import client, guard
from mlops_ops.lineage.records import (
    record_dataset,
    record_evaluation,
    record_gate,
    record_promotion,
    record_reused_training,
    record_training,
    record_validation,
    version_lineage,
)
from mlops_ops.lineage.registry import (
    Evaluated,
    VersionRecord,
    get_version,
    load_model,
    move_alias,
    register,
    run_params,
    supersede,
    tag_version,
    version_by_alias,
    version_record,
    version_tags,
    versions_of_run,
)
from mlops_ops.lineage.runs import StepRun, experiment_id, step_run

__all__ = [
    "Evaluated",
    "StepRun",
    "VersionRecord",
    "alias_history",
    "chain",
    "client",
    "experiment_id",
    "get_version",
    "guard",
    "load_model",
    "move_alias",
    "record_dataset",
    "record_evaluation",
    "record_gate",
    "record_promotion",
    "record_reused_training",
    "record_training",
    "record_validation",
    "register",
    "run_params",
    "step_run",
    "supersede",
    "tag_version",
    "tags",
    "version_by_alias",
    "version_lineage",
    "version_record",
    "version_tags",
    "versions_of_run",
]
