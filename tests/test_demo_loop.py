"""`make demo SCENARIO=loop`: the continuous-training loop in the embedded default, decisions printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, isolated_home

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("mlops-ops"))


def test_the_loop_trains_scores_detects_drift_retrains_and_decides(tmp_path: Path) -> None:
    home = tmp_path / "mlops"
    done = subprocess.run(
        [CLI, "demo", "--scenario", "loop", "--dags-folder", str(REPO / "dags")],
        env=os.environ | {"MLOPS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "v1 took @champion" in out
    assert "drifted: retraining requested" in out
    assert "gate      train:" in out
    decided = [line for line in out.splitlines() if line.strip().startswith("promote")]
    assert len(decided) == 2, out  # the first training and the retraining each decided
    with isolated_home(home):
        from mlops_ops import lineage

        moves = lineage.alias_history("churn-loop")
        champion = lineage.version_by_alias("churn-loop", "champion")
    assert moves[0]["to"] == "1" and moves[0]["from"] == ""
    assert champion is not None and str(champion.version) == moves[-1]["to"]
    if "v2 took @champion" in out:  # the retrained model won: the history says so
        assert [m["to"] for m in moves] == ["1", "2"]
