"""Pytest plugin: a real MLflow tracking server (``mlops_ops.devstack.mlflow_server``) for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from mlops_ops.devstack.mlflow_server import (
    ARTIFACT_PREFIX,
    STARTUP_TIMEOUT_SECONDS,
    MlflowServer,
    server_command,
    start_mlflow,
)
from mlops_ops.devstack.postgres import Postgres
from mlops_ops.devstack.process import ServerNotReady
from mlops_ops.devstack.s3 import S3Server
from tests.servers._proc import unavailable

__all__ = [
    "ARTIFACT_PREFIX",
    "STARTUP_TIMEOUT_SECONDS",
    "MlflowServer",
    "mlflow_server",
    "server_command",
    "start_mlflow",
]


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: Postgres, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free loopback port: a fresh PostgreSQL database, artifacts in the S3 test bucket.

    Skips the tests that use it when the server does not come up; fails them instead when ``CI=true``.
    """
    root = tmp_path_factory.mktemp("mlflow-server")
    with ExitStack() as stack:
        try:
            server = stack.enter_context(start_mlflow(postgres, s3_server, root, base_env=dict(os.environ)))
        except ServerNotReady as exc:
            unavailable(f"MLflow server did not start: {exc}")
        yield server
