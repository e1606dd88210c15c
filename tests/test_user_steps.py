"""A user's own step, installed as a package declares it: same CLI, runners, lineage and operator.

The package is written here the way a user's would be installed: a module with a ``@step`` function
and a ``.dist-info`` folder whose ``entry_points.txt`` names it under ``mlops_ops.steps``. Nothing in
mlops-ops changes for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.context import RunContext
from mlops_ops.runners.base import StepInvocation
from mlops_ops.runners.local import LocalRunner
from mlops_ops.steps import registry
from tests.conftest import isolated_home

CLI = str(Path(sys.executable).with_name("mlops-ops"))

USER_MODULE = '''
"""Row-count check: a team's own step."""

from __future__ import annotations

from typing import Literal

from mlops_ops import lineage
from mlops_ops.specs import DatasetRef, StepResult, StepSpec
from mlops_ops.steps.registry import step


class RowCountSpec(StepSpec):
    dataset: DatasetRef
    minimum: int = 1


class RowCountResult(StepResult):
    step: Literal["row_count"] = "row_count"
    rows: int
    enough: bool
    mlflow_run_id: str | None = None


@step("row_count", spec=RowCountSpec, result=RowCountResult)
def run(spec, ctx, store):
    """Check that a snapshot has enough rows."""
    with lineage.step_run(ctx) as mlrun:
        mlrun.log_metrics({"rows": spec.dataset.rows})
        enough = spec.dataset.rows >= spec.minimum
        return RowCountResult(rows=spec.dataset.rows, enough=enough, mlflow_run_id=mlrun.run_id)
'''
REF = {"uri": "file:///data/x.parquet", "digest": "ab" * 32, "rows": 120}


@pytest.fixture(scope="module")
def user_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``acme-steps`` installed into a folder on ``sys.path`` (as pip would lay it out)."""
    root = tmp_path_factory.mktemp("site")
    (root / "acme_steps").mkdir()
    (root / "acme_steps" / "__init__.py").write_text("")
    (root / "acme_steps" / "steps.py").write_text(USER_MODULE)
    info = root / "acme_steps-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-steps\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mlops_ops.steps]\nrow_count = acme_steps.steps\n")
    sys.path.insert(0, str(root))
    registry.refresh()
    yield root
    sys.path.remove(str(root))


def _env(root: Path, home: Path) -> dict[str, str]:
    return os.environ | {
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        "MLOPS_HOME": str(home),
    }


def test_the_registry_and_the_cli_list_the_user_step(user_package: Path, tmp_path: Path) -> None:
    assert (
        registry.names()[-1] == "row_count"
        and registry.get("row_count").summary == "Check that a snapshot has enough rows."
    )
    listed = subprocess.run(
        [CLI, "steps"], env=_env(user_package, tmp_path), capture_output=True, text=True, check=True
    )
    assert "row_count  Check that a snapshot has enough rows." in listed.stdout
    assert "spec: dataset, minimum" in listed.stdout


def test_a_bad_spec_for_the_user_step_is_one_line(user_package: Path, tmp_path: Path) -> None:
    spec = json.dumps({"dataset": REF, "minimum": "many"})
    done = subprocess.run(
        [CLI, "step", "row_count", "--spec", spec], env=_env(user_package, tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1].startswith("mlops-ops: error: SpecError: invalid row_count spec: minimum:")
    )


@pytest.mark.slow
def test_the_local_runner_runs_it_and_lineage_records_it(user_package: Path, tmp_path: Path) -> None:
    invocation = StepInvocation(
        step="row_count",
        spec={"dataset": REF, "minimum": 100},
        ctx=RunContext(pipeline="acme", run_id="r1", step="count_rows"),
        env=_env(user_package, tmp_path),
    )
    lines: list[str] = []
    result = LocalRunner().run(invocation, log=lines.append)
    assert (result["step"], result["rows"], result["enough"]) == ("row_count", 120, True)
    with isolated_home(tmp_path):
        from mlops_ops import lineage

        run = lineage.client().get_run(result["mlflow_run_id"])
    assert run.data.metrics == {"rows": 120.0}
    assert run.data.tags["mlops.step"] == "count_rows" and run.data.tags["mlops.pipeline"] == "acme"
    assert run.info.status == "FINISHED"


def test_a_pod_for_it_runs_the_same_command(user_package: Path, loopback_kubeconfig: Path) -> None:
    from airflow.sdk import DAG
    from kubernetes.client import ApiClient

    from mlops_ops.runners.pod import resolve_settings
    from mlops_ops.runners.step_pod import pod_operator
    from tests.test_kubernetes_pod import FakeTI, restricted_violations

    invocation = StepInvocation(
        step="row_count", spec={"dataset": REF}, ctx=RunContext(pipeline="acme", run_id="r1", step="count_rows")
    )
    ti = FakeTI(dag_id="acme", task_id="count_rows", map_index=-1, try_number=1, run_id="r1")
    context: dict[str, Any] = {"ti": ti, "run_id": "r1", "params": {}, "dag": DAG("acme", schedule=None)}
    operator = pod_operator(invocation, resolve_settings("row_count", {}), context)
    pod = ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(context))
    (container,) = pod["spec"]["containers"]
    assert [*container.get("command", []), *container["args"]][-len(invocation.argv()) :] == invocation.argv()
    assert restricted_violations(pod) == []
