"""The embedded default's demo run (``mlops-ops demo``, what ``make demo`` runs), once a session.

It starts in the background when first asked for, so it overlaps with slower set-up (the deployed stack
starts its servers meanwhile), and both the embedded and the deployed tests read its outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = "churn-classifier"
RUN_TIMEOUT_SECONDS = 600.0


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Airflow, MLflow, S3 or mlops settings, plus ``extra``."""
    prefixes = ("AIRFLOW", "MLFLOW_", "MLOPS_", "AWS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)} | extra


def lineage(model: str, env: dict[str, str]) -> dict[str, Any]:
    """``mlops-ops lineage MODEL --json`` in that environment."""
    done = subprocess.run(
        [sys.executable, "-m", "mlops_ops.cli", "lineage", model, "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


#: ``mlops-ops demo`` of this virtualenv, as ``make demo`` runs it.
DEMO = [str(Path(sys.executable).with_name("mlops-ops")), "demo"]


def quickstart(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``mlops-ops demo`` on ``home`` and wait for it."""
    return subprocess.run(
        [*DEMO, *args], cwd=REPO, env=clean_env(MLOPS_HOME=str(home), **env),
        capture_output=True, text=True, check=False, timeout=RUN_TIMEOUT_SECONDS,
    )  # fmt: skip


@dataclass(frozen=True)
class EmbeddedDemo:
    """``mlops-ops demo`` on the base demo batch, running in the background on a fresh home."""

    process: subprocess.Popen[bytes]
    home: Path

    @property
    def log(self) -> Path:
        return self.home.parent / f"{self.home.name}-quickstart.log"

    def finish(self) -> tuple[int, str]:
        """Its exit code and output, once it has finished."""
        code = self.process.wait(timeout=RUN_TIMEOUT_SECONDS)
        return code, self.log.read_text()

    def lineage(self) -> dict[str, Any]:
        code, output = self.finish()
        assert code == 0, output[-3000:]
        return lineage(MODEL, clean_env(MLOPS_HOME=str(self.home)))


@pytest.fixture(scope="session")
def embedded_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedDemo]:
    home = tmp_path_factory.mktemp("embedded-default")
    log = home.parent / f"{home.name}-quickstart.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*DEMO, "--data", "base"],
            cwd=REPO, env=clean_env(MLOPS_HOME=str(home)), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield EmbeddedDemo(process, home)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
