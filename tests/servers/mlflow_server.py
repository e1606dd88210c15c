"""Pytest plugin: a real MLflow tracking server on loopback, PostgreSQL behind it and artifacts on S3.

The server proxies artifacts (``--serve-artifacts``, the default): clients log to ``mlflow-artifacts:/``
and only the server holds the S3 credentials, as in a shared install.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers._proc import (
    LOOPBACK,
    ServerNotReady,
    find_executable,
    free_ports,
    log_tail,
    running,
    unavailable,
    wait_until,
)

if TYPE_CHECKING:
    from tests.servers.postgres import Postgres
    from tests.servers.s3 import S3Server

#: A cold start imports MLflow's server app (about 20 s per worker here) after migrating a fresh database.
STARTUP_TIMEOUT_SECONDS = 240.0
ARTIFACT_PREFIX = "mlflow"
#: Variables of the test process that would point the server elsewhere.
_CLEARED_PREFIXES = ("MLFLOW_", "AWS_", "AIRFLOW")


@dataclass(frozen=True)
class MlflowServer:
    """A running MLflow tracking server and where it keeps its state."""

    tracking_uri: str
    backend_store_uri: str
    artifacts_destination: str
    pid: int = field(repr=False)
    log_path: Path = field(repr=False)
    #: Seconds from launching ``mlflow server`` until it answered an API call.
    startup_seconds: float = field(default=0.0, repr=False)

    def env(self) -> dict[str, str]:
        """The environment that points an MLflow client (and ``mlops-ops lineage``) at this server."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri}


def server_command(
    mlflow: str, backend_store_uri: str, artifacts_destination: str, port: int, host: str = LOOPBACK
) -> list[str]:
    """The ``mlflow server`` command line of a team install: SQL backend, proxied S3 artifacts, loopback."""
    return [
        mlflow,
        "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--serve-artifacts",
        "--host", host,
        "--port", str(port),
        # Each worker imports the whole app; on two cores one worker starts in half the time of two.
        "--workers", "1",
    ]  # fmt: skip


def _answers(tracking_uri: str) -> None:
    import requests

    response = requests.post(f"{tracking_uri}/api/2.0/mlflow/experiments/search", json={"max_results": 1}, timeout=5)
    response.raise_for_status()


@contextmanager
def start_mlflow(
    postgres: Postgres, s3: S3Server, root: Path, *, port: int | None = None, host: str = LOOPBACK
) -> Iterator[MlflowServer]:
    """Run ``mlflow server`` on a fresh PostgreSQL database with artifacts in ``s3``'s bucket until exit.

    Raises ServerNotReady (with the log's tail) when the command is missing or the server does not answer.
    """
    mlflow = find_executable("mlflow")
    if mlflow is None:
        raise ServerNotReady("the `mlflow` command is not installed: install the step extra")
    port = port or free_ports(1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLEARED_PREFIXES)}
    env |= s3.env()  # the server, not its clients, writes the artifacts to S3
    # MLflow 3 also starts a pool of job consumers for its GenAI features; tracking and the registry need none.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    destination = f"s3://{s3.bucket}/{ARTIFACT_PREFIX}"
    log_path = root / "mlflow.log"
    with postgres.database("mlflow") as database:
        backend = postgres.url(database, driver="postgresql+psycopg2")
        started = time.monotonic()
        command = server_command(mlflow, backend, destination, port, host=host)
        with running(command, log_path=log_path, cwd=root, env=env) as process:
            server = MlflowServer(
                tracking_uri=f"http://{LOOPBACK}:{port}",
                backend_store_uri=backend,
                artifacts_destination=destination,
                pid=process.pid,
                log_path=log_path,
            )
            try:
                wait_until(
                    lambda: _answers(server.tracking_uri),
                    what="MLflow tracking server",
                    timeout=STARTUP_TIMEOUT_SECONDS,
                    interval=0.5,
                    process=process,
                )
            except ServerNotReady as exc:
                raise ServerNotReady(f"{exc}\n--- tail of {log_path} ---\n{log_tail(log_path)}") from exc
            yield dataclasses.replace(server, startup_seconds=time.monotonic() - started)


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: Postgres, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free loopback port: a fresh PostgreSQL database, artifacts in the S3 test bucket.

    Skips the tests that use it when the server does not come up; fails them instead when ``CI=true``.
    """
    with ExitStack() as stack:
        try:
            server = stack.enter_context(start_mlflow(postgres, s3_server, tmp_path_factory.mktemp("mlflow-server")))
        except ServerNotReady as exc:
            unavailable(f"MLflow server did not start: {exc}")
        yield server
