"""MLflow out of reach: bounded, logged retries, then one line and the retryable exit code; nothing lost.

The outage is real from the step's point of view: the step talks to a real MLflow server through a
TCP relay on loopback that the test cuts (connections refused) and restores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.demo import DATA_DIR
from mlops_ops.errors import TrackingUnavailable
from tests.servers.mlflow_server import MlflowServer

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("mlops-ops"))


class Relay:
    """Forwards a loopback port to a target port until cut; a cut relay refuses connections."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.links: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                s.close()

    def cut(self) -> None:
        self.open.clear()
        for link in self.links:
            link.close()

    def restore(self) -> None:
        self.open.set()


@pytest.fixture
def relay(mlflow_server: MlflowServer) -> Iterator[Relay]:
    host, port = mlflow_server.tracking_uri.removeprefix("http://").split(":")
    found = Relay((host, int(port)))
    yield found
    found.listener.close()


def _env(home: Path, tracking_uri: str) -> dict[str, str]:
    return os.environ | {
        "MLOPS_HOME": str(home),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLOPS_ARTIFACT_ROOT": (home / "artifacts").as_uri(),
        "MLOPS_MLFLOW_RETRY_SECONDS": "4",
    }


def _ingest(home: Path, tracking_uri: str, pipeline: str) -> subprocess.Popen[str]:
    spec = {"source": str(DATA_DIR / "churn.csv"), "target": "churned"}
    argv = [CLI, "step", "ingest", "--spec", json.dumps(spec), "--pipeline", pipeline, "--run-id", "r1"]
    return subprocess.Popen(
        argv, env=_env(home, tracking_uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mlops-ops: error:")]


def test_an_unreachable_server_ends_in_one_line_with_the_retryable_code(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    proc = _ingest(tmp_path, f"http://127.0.0.1:{port}", "outage")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == TrackingUnavailable.exit_code, stderr[-2000:]
    errors = _errors(stderr)
    assert len(errors) == 1 and f"MLflow at http://127.0.0.1:{port} is unreachable after 4s of retries" in errors[0]
    assert "Traceback" not in stderr
    assert "did not answer" in stderr  # each retry is logged
    assert stdout == ""


def test_a_server_lost_mid_step_fails_retryably_and_the_retry_duplicates_nothing(
    relay: Relay, tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    uri = f"http://127.0.0.1:{relay.port}"
    proc = _ingest(tmp_path, uri, "outage-mid")
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "MLflow run" in line:  # the step's run exists; everything after it now fails
            relay.cut()
    proc.wait(timeout=300)
    stderr = "".join(seen)
    assert proc.returncode == TrackingUnavailable.exit_code, stderr[-2000:]
    assert len(_errors(stderr)) == 1 and "Traceback" not in stderr
    relay.restore()
    retry = _ingest(tmp_path, uri, "outage-mid")
    out, err = retry.communicate(timeout=300)
    assert retry.returncode == 0, err[-2000:]
    result: dict[str, Any] = json.loads(out)
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.tracking_uri)
    experiment = client.get_experiment_by_name("mlops/outage-mid").experiment_id
    runs = client.search_runs([experiment], "tags.`mlops.step` = 'ingest'")
    assert [r.info.run_id for r in runs] == [result["mlflow_run_id"]]
    assert runs[0].info.status == "FINISHED"
    snapshots = list((tmp_path / "artifacts").rglob("*.parquet"))
    assert len({p.name for p in snapshots}) == len(snapshots)  # content-addressed: nothing written twice
