"""An MLflow tracking server as a team runs it: PostgreSQL backend store, artifacts proxied to S3.

The server proxies artifacts (``--serve-artifacts``): clients log to ``mlflow-artifacts:/`` and only the
server holds the S3 credentials, as in a shared install.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_ops.devstack.process import (
    LOOPBACK,
    ServerNotReady,
    free_ports,
    log_tail,
    require_executable,
    running,
    wait_until,
)

if TYPE_CHECKING:
    from mlops_ops.devstack.postgres import Postgres
    from mlops_ops.devstack.s3 import S3Server

#: A cold start imports MLflow's server app (about 20 s per worker here) after migrating a fresh database.
STARTUP_TIMEOUT_SECONDS = 240.0
ARTIFACT_PREFIX = "mlflow"
#: Variables of the caller's environment that would point the server elsewhere.
CLEARED_PREFIXES = ("MLFLOW_", "AWS_", "AIRFLOW")
MLFLOW_INSTALL = "MLflow (`pip install 'mlops-ops[step]'`)"


@dataclass(frozen=True)
class MlflowServer:
    """A running MLflow tracking server and where it keeps its state."""

    tracking_uri: str
    backend_store_uri: str
    artifacts_destination: str
    #: The server's process group (and the pid of its guard, see ``process.running``).
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
    # B310: plain http to our own server on loopback.
    request = urllib.request.Request(  # nosec B310
        f"{tracking_uri}/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # nosec B310
        response.read()


def server_env(base_env: Mapping[str, str], s3: S3Server) -> dict[str, str]:
    """The server's environment: ``base_env`` without MLflow, AWS or Airflow settings, plus ``s3``'s keys."""
    env = {k: v for k, v in base_env.items() if not k.startswith(CLEARED_PREFIXES)}
    env |= s3.env()  # the server, not its clients, writes the artifacts to S3
    # MLflow 3 also starts a pool of job consumers for its GenAI features; tracking and the registry need none.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


@contextmanager
def start_mlflow(
    postgres: Postgres,
    s3: S3Server,
    root: Path,
    *,
    base_env: Mapping[str, str],
    port: int | None = None,
    host: str = LOOPBACK,
    timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> Iterator[MlflowServer]:
    """Run ``mlflow server`` on a fresh PostgreSQL database with artifacts in ``s3``'s bucket until exit.

    :param root: a folder (made if missing) for the server's working directory and log (``mlflow.log``).
    :param base_env: the environment to start from (``os.environ``, say); see ``server_env``.
    :param port: the port to serve on (a free one by default).
    Raises MissingTool when ``mlflow`` is not installed, ServerNotReady (with the log's tail) when the server
    does not answer. The database is dropped on exit.
    """
    mlflow = require_executable("mlflow", MLFLOW_INSTALL)
    root = root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_ports(1)[0]
    env = server_env(base_env, s3)
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
                    timeout=timeout,
                    interval=0.5,
                    process=process,
                )
            except ServerNotReady as exc:
                raise ServerNotReady(f"{exc}\n--- tail of {log_path} ---\n{log_tail(log_path)}") from exc
            yield dataclasses.replace(server, startup_seconds=time.monotonic() - started)
