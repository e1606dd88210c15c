"""Shared fixtures: an isolated MLOPS_HOME per test, and the real servers from tests/servers/."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.servers.s3",
    "tests.servers.embedded",
    "tests.servers.postgres",
    "tests.servers.mlflow_server",
    "tests.servers.airflow_server",
]

REPO = Path(__file__).resolve().parent.parent

# Airflow reads its configuration when first imported: point this process (and the DAG tests that run
# in it) at a throwaway home with a SQLite database before any test module imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="mlops-test-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
})  # fmt: skip
os.environ.setdefault("MLOPS_HOME", str(_AIRFLOW_HOME / "mlops"))
# Every test home gets its own warm Airflow parent (docs/performance.md): let each go a minute after its last run.
os.environ.setdefault("MLOPS_WARM_AIRFLOW_IDLE_SECONDS", "60")
# Tests read data from pytest's temporary folders as well as the repository (docs/security.md: data roots).
os.environ.setdefault("MLOPS_DATA_ROOTS", os.pathsep.join([tempfile.gettempdir(), str(REPO)]))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """This process's Airflow metadata database, migrated once per session."""
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return _AIRFLOW_HOME


#: The step image the pod tests expect the runner to use.
STEP_IMAGE = "registry.example.com/ml/mlops-ops:1.2.3"


@pytest.fixture
def loopback_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig on a closed loopback port: enough for the provider to render pods, never contacted."""
    path = tmp_path / "kubeconfig.json"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "loop",
        "clusters": [{"name": "loop", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "u"}}],
    }))  # fmt: skip
    # The kubernetes client reads $KUBECONFIG once, when first imported: name the file explicitly.
    monkeypatch.setenv("MLOPS_POD_SETTINGS", json.dumps({"config_file": str(path)}))
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    monkeypatch.setenv("MLOPS_STEP_IMAGE", STEP_IMAGE)
    for name in (
        "MLOPS_K8S_NAMESPACE",
        "MLOPS_K8S_CREDENTIALS_SECRET",
        "MLOPS_ARTIFACT_ROOT",
        "MLFLOW_TRACKING_URI",
        "MLOPS_MLFLOW_ARTIFACT_ROOT",
    ):
        monkeypatch.delenv(name, raising=False)
    return path


def stop_warm_parents(folder: Path) -> None:
    """End the warm parents whose sockets are in ``folder`` (by the pids in their lock files)."""
    import signal

    for lock in folder.glob("warm-*.lock"):
        text = lock.read_text().strip()
        if text.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(text), signal.SIGTERM)


@contextlib.contextmanager
def isolated_home(path: Path) -> Iterator[Path]:
    """Point MLOPS_HOME at ``path`` (MLflow SQLite, artifact folder) with no other store or tracking setting."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(path))
        for var in ("MLOPS_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI", "MLOPS_MLFLOW_ARTIFACT_ROOT"):
            mp.delenv(var, raising=False)
        yield path


@pytest.fixture
def mlops_home(tmp_path: Path) -> Iterator[Path]:
    """A fresh embedded home for one test."""
    with isolated_home(tmp_path / "mlops") as home:
        home.mkdir()
        yield home


#: Fixtures that start a server or run Airflow: a test using one is in the integration ring.
SERVER_FIXTURES = {
    "s3_server",
    "s3_env",
    "postgres",
    "mlflow_server",
    "airflow_server",
    "embedded_demo",
    "airflow_db",
    "kube",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the integration ring automatically, so ``make check`` (``-m "not slow and not integration"``)
    keeps only what needs no server and no Airflow run."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI every test must really run: a skip (a server that did not start, say) fails the run."""
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        names = ", ".join(sorted({r.nodeid for r in skipped})[:10])
        if reporter is not None:
            reporter.write_line(
                f"CI=true: {len(skipped)} test(s) were skipped, which CI does not allow: {names}", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
