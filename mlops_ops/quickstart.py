"""``python -m mlops_ops.quickstart``: the demo's old name, kept working; it is ``mlops-ops demo`` now.

The embedded Airflow's helpers live in :mod:`mlops_ops.demo.embedded` and are re-exported here for the
modules that import them from this one.
"""

from __future__ import annotations

import re
from typing import Any

import click

from mlops_ops.demo.command import demo as main
from mlops_ops.demo.conf import BATCHES, DAG_ID
from mlops_ops.demo.embedded import airflow, airflow_env, migrate
from mlops_ops.demo.runstate import stored_results
from mlops_ops.demo.summary import STEPS
from mlops_ops.settings import mlops_home

__all__ = ["BATCHES", "DAG_ID", "STEPS", "airflow", "airflow_env", "main", "manifests", "migrate", "outcome"]

_FINISHED = re.compile(r"DagRun Finished: .*?run_id=(?P<run_id>[^,]+), .*?state=(?P<state>\w+)")
_FAILED_STEP = re.compile(r"(step \w+ failed: .*?)(?: \[airflow|$)", re.MULTILINE)


def outcome(output: str) -> tuple[dict[str, str], list[str]]:
    """The run id and state in ``airflow dags test`` output, and failed steps' errors.

    Kept for :mod:`mlops_ops.demo.loop`; the demo itself reads the run from Airflow's metadata
    database (:mod:`mlops_ops.demo.runstate`).
    """
    finished = _FINISHED.search(output)
    if finished is None:
        raise click.ClickException(f"Airflow did not finish a run; see {mlops_home() / 'demo.log'}")
    errors = list(dict.fromkeys(m.group(1).strip() for m in _FAILED_STEP.finditer(output)))
    return {"run_id": finished["run_id"], "state": finished["state"]}, errors


def manifests(run_id: str, tries: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """Each step's result manifest of a ``mlops_training`` run, read back from the artifact store.

    :param tries: The try number of each step (from its task instance); without it, the latest stored try.
    """
    return stored_results(DAG_ID, run_id, STEPS, tries)


if __name__ == "__main__":
    main()
