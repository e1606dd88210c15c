"""A step killed at the worst moment, then retried: nothing duplicated, nothing left dangling.

Each kill is a real SIGKILL of a real ``mlops-ops step`` process, sent by the process itself at the
chosen point (a wrapper patches one library call to kill the process from inside it), so the moment is
exact. The retry is the plain command line, as Airflow would run it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.demo import DATA_DIR
from tests.conftest import isolated_home

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("mlops-ops"))
MODEL = "crash-test"

#: Runs the CLI with one call replaced by a SIGKILL of this very process (``KILL_AT`` names the call).
KILLER = """
import os, signal, sys
target = os.environ["KILL_AT"]
module_name, _, attr = target.rpartition(":")
import importlib
owner = importlib.import_module(module_name)
path = attr.split(".")
for name in path[:-1]:
    owner = getattr(owner, name)
original = getattr(owner, path[-1])
def die(*args, **kwargs):
    if os.environ.get("KILL_AFTER") == "1":
        original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(owner, path[-1], die)
from mlops_ops.cli import main
sys.argv = ["mlops-ops", *sys.argv[1:]]
main()
"""


def run_step(name: str, spec: dict[str, Any], *, kill_at: str | None = None, after: bool = False) -> Any:
    args = ["step", name, "--spec", json.dumps(spec), "--pipeline", "crash", "--run-id", "r1"]
    env = dict(os.environ)
    if kill_at:
        env |= {"KILL_AT": kill_at, "KILL_AFTER": "1" if after else "0"}
        argv = [sys.executable, "-c", KILLER, *args]
    else:
        argv = [CLI, *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if kill_at:
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        return None
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with isolated_home(tmp_path_factory.mktemp("mlops-crash")) as path:
        yield path


@pytest.fixture(scope="module")
def ingested(home: Path) -> Any:
    return run_step("ingest", {"source": str(DATA_DIR / "churn.csv"), "target": "churned"})


def _client() -> Any:
    from mlops_ops import lineage

    return lineage.client()


def test_train_killed_while_logging_its_model_leaves_one_ready_model_after_retry(ingested: Any) -> None:
    spec = {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": 20}}
    # The model's files are being written: the LoggedModel exists and is PENDING when the process dies.
    run_step("train", spec, kill_at="mlflow.sklearn:save_model")
    client = _client()
    experiment = client.get_experiment_by_name("mlops/crash").experiment_id
    pending = client.search_logged_models([experiment])
    assert [_status(m) for m in pending] == ["PENDING"]
    trained = run_step("train", spec)
    runs = client.search_runs([experiment], "tags.`mlops.step` = 'train'")
    assert [r.info.run_id for r in runs] == [trained["mlflow_run_id"]]
    models = client.search_logged_models([experiment])
    assert [_status(m) for m in models] == ["READY"]
    assert trained["model_id"] == models[0].model_id


def _status(model: Any) -> str:
    return str(getattr(model.status, "name", model.status))


def _evaluated(ingested: Any) -> Any:
    spec = {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": 20}}
    trained = run_step("train", spec)
    return run_step("evaluate", {"dataset": ingested, "candidate": trained, "registered_model": MODEL})


def _versions(model: str) -> dict[str, dict[str, str]]:
    return {str(v.version): dict(v.tags) for v in _client().search_model_versions(f"name = '{model}'")}


@pytest.mark.parametrize(
    ("label", "kill_at", "after"),
    [
        ("after registration", "mlops_ops.steps.promote:compare_metric", False),
        ("after the alias moved", "mlflow.tracking.client:MlflowClient.set_registered_model_alias", True),
    ],
)
def test_promote_killed_then_retried_gives_one_version_and_a_whole_history(
    ingested: Any, label: str, kill_at: str, after: bool
) -> None:
    evaluation = _evaluated(ingested)
    model = f"{MODEL}-{label.replace(' ', '-')}"
    spec = {"evaluation": evaluation, "registered_model": model}
    # A first champion, so the killed move has a previous version whose history must be completed.
    first = run_step("promote", {"evaluation": _other_candidate(ingested, model), "registered_model": model})
    run_step("promote", spec, kill_at=kill_at, after=after)
    promoted = run_step("promote", spec)
    versions = _versions(model)
    runs_of = [tags["mlops.train.run_id"] for tags in versions.values()]
    assert len(runs_of) == len(set(runs_of)) == 2, versions  # one version per training run
    holder = _client().get_model_version_by_alias(model, "champion")
    assert str(holder.version) == promoted["version"] != first["version"]
    assert versions[promoted["version"]]["mlops.alias.champion.previous"] == first["version"]
    assert versions[first["version"]]["mlops.alias.champion.replaced_by"] == promoted["version"]


def _other_candidate(ingested: Any, model: str) -> Any:
    spec = {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": 2, "max_depth": 2}}
    trained = run_step("train", spec)
    return run_step("evaluate", {"dataset": ingested, "candidate": trained, "registered_model": model})
