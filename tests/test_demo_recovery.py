"""A whole `make demo` killed mid-run (SIGKILL to its process group), then run again: it completes, and
the registry holds one version with a whole history — nothing the killed run left behind gets in the way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, isolated_home

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("mlops-ops"))


def test_a_demo_killed_while_training_then_rerun_promotes_once(tmp_path: Path) -> None:
    home = tmp_path / "mlops"
    env = os.environ | {"MLOPS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    argv = [CLI, "demo", "--dags-folder", str(REPO / "dags")]
    first = subprocess.Popen(
        argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert first.stdout is not None
    seen, deadline = [], time.monotonic() + 600
    for line in first.stdout:
        seen.append(line)
        if line.strip().startswith("train") and "running" in line:
            os.killpg(first.pid, signal.SIGKILL)  # the demo, Airflow's dags test and the step, all at once
            break
        assert time.monotonic() < deadline, "".join(seen)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, "".join(seen)

    again = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "churn-classifier v1 took @champion" in again.stdout
    with isolated_home(home):
        from mlops_ops import lineage

        versions = lineage.client().search_model_versions("name = 'churn-classifier'")
        moves = lineage.alias_history("churn-classifier")
    assert [str(v.version) for v in versions] == ["1"]
    assert [(m["from"], m["to"]) for m in moves] == [("", "1")]
