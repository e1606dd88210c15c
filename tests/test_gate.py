"""The retraining gate on a real MLflow SQLite registry: cooldown, minimum new rows, force, its own record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.context import RunContext
from mlops_ops.demo import DATA_DIR
from mlops_ops.specs.gate import GateResult
from mlops_ops.steps import registry
from mlops_ops.store import store_for
from tests.conftest import isolated_home

DATA = str(DATA_DIR / "churn.csv")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with isolated_home(tmp_path_factory.mktemp("mlops-gate")) as path:
        yield path


def gate(run_id: str, **spec: Any) -> GateResult:
    """Run the registered gate step as the CLI would, in pipeline ``mlops_retraining``."""
    declared = registry.get("gate")
    ctx = RunContext(pipeline="mlops_retraining", run_id=run_id, step="gate")
    result = declared.load()(declared.parse(spec), ctx, store_for())
    assert isinstance(result, GateResult)
    return result


def register_version(name: str) -> str:
    """A model version as promote registers it (the registry does not look inside the source)."""
    from mlops_ops.lineage import client

    mlflow_client = client()
    if not mlflow_client.search_registered_models(f"name = '{name}'"):
        mlflow_client.create_registered_model(name)
    return str(mlflow_client.create_model_version(name, source="file:///nowhere/model", tags={}).version)


def test_gate_is_a_registered_step() -> None:
    assert "gate" in registry.names()
    assert set(registry.get("gate").spec.model_fields) >= {"registered_model", "cooldown_hours", "min_rows", "force"}


def test_a_model_never_trained_passes_and_the_pass_starts_a_cooldown(home: Path) -> None:
    first = gate("r1", registered_model="fresh")
    assert first.go and first.last_training_at is None and "no training yet" in first.reason
    second = gate("r2", registered_model="fresh", cooldown_hours=6)
    assert not second.go
    assert second.reason.startswith("cooldown: a training let through by the gate of run r1")
    assert "set force to train anyway" in second.reason


def test_a_retried_gate_is_not_blocked_by_its_own_pass(home: Path) -> None:
    assert gate("retry", registered_model="retried").go
    again = gate("retry", registered_model="retried")
    assert again.go, again.reason


def test_a_version_registered_recently_blocks_until_the_cooldown_ends(home: Path) -> None:
    version = register_version("recent")
    blocked = gate("c1", registered_model="recent", cooldown_hours=2)
    assert not blocked.go and f"version {version} registered" in blocked.reason and "h left" in blocked.reason
    assert gate("c2", registered_model="recent", cooldown_hours=0).go


def test_an_alias_move_counts_as_training_activity(home: Path) -> None:
    from mlops_ops import lineage

    version = register_version("moved")
    lineage.move_alias("moved", "champion", version, "test", "pytest")
    result = gate("m1", registered_model="moved", cooldown_hours=1)
    assert not result.go and result.last_training in (
        f"champion moved to version {version}",
        f"version {version} registered",
    )


def test_force_wins_over_the_cooldown_and_the_row_count(home: Path) -> None:
    register_version("forced")
    result = gate("f1", registered_model="forced", force=True, min_rows=10**9, data_uri=DATA, trigger="manual")
    assert result.go and result.forced and result.reason == "forced (asked by manual)"


def test_too_few_new_rows_say_no_with_the_count(home: Path) -> None:
    rows = len(Path(DATA).read_text().splitlines()) - 1
    result = gate("n1", registered_model="rows", min_rows=rows + 1, data_uri=DATA)
    assert not result.go and result.rows == rows
    assert result.reason == f"the new batch has {rows} rows, fewer than min_rows={rows + 1}"
    enough = gate("n2", registered_model="rows-ok", min_rows=rows, data_uri=DATA)
    assert enough.go and enough.rows == rows


def test_the_decision_is_recorded_on_the_gate_run(home: Path) -> None:
    from mlops_ops.lineage import client, tags

    result = gate("t1", registered_model="recorded", cooldown_hours=0)
    recorded = client().get_run(result.mlflow_run_id).data.tags
    assert recorded[tags.GATE_MODEL] == "recorded" and recorded[tags.GATE_GO] == "true"
    assert recorded[tags.GATE_REASON] == result.reason


@pytest.mark.slow
def test_the_gate_step_runs_through_the_cli(home: Path) -> None:
    import json
    import subprocess
    import sys

    spec = json.dumps({"registered_model": "via-cli", "cooldown_hours": 0})
    done = subprocess.run(
        [sys.executable, "-m", "mlops_ops.cli", "step", "gate", "--spec", spec, "--run-id", "cli"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["go"] is True
