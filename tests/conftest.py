"""Shared fixtures: an isolated MLOPS_HOME per test, and the real servers from tests/servers/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers.s3"]


@pytest.fixture
def mlops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh embedded home (MLflow SQLite, artifact folder) for one test."""
    home = tmp_path / "mlops"
    home.mkdir()
    monkeypatch.setenv("MLOPS_HOME", str(home))
    for var in ("MLOPS_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI", "MLOPS_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(var, raising=False)
    yield home
