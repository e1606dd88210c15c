"""Pytest plugin: Airflow as it is deployed (``mlops_ops.devstack.airflow_server``), for the session.

API server, scheduler, DAG processor and triggerer on a fresh PostgreSQL metadata database, with the
repository's ``dags/`` and ``plugins/``. The stack for people (``make services``) is ``python -m
mlops_ops.devstack``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from mlops_ops.devstack.airflow_server import (
    COMPONENTS,
    STARTUP_TIMEOUT_SECONDS,
    USERNAME,
    AirflowApi,
    AirflowServer,
    add_connections,
    deployment_env,
    start_airflow,
)
from mlops_ops.devstack.postgres import Postgres
from mlops_ops.devstack.process import ServerNotReady
from mlops_ops.devstack.s3 import S3Server
from tests.servers._proc import unavailable

__all__ = [
    "COMPONENTS",
    "REPO",
    "STARTUP_TIMEOUT_SECONDS",
    "USERNAME",
    "AirflowApi",
    "AirflowServer",
    "add_connections",
    "airflow_server",
    "deployment_env",
    "start_airflow",
]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def airflow_server(
    postgres: Postgres, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowServer]:
    """Airflow's API server, scheduler, DAG processor and triggerer on a fresh PostgreSQL metadata database.

    Tasks run on the LocalExecutor with the artifact store in the S3 test bucket. Skips the tests that use it
    when a component does not come up; fails them instead when ``CI=true``.
    """
    root = tmp_path_factory.mktemp("airflow-deployed")
    plugins = REPO / "plugins"
    with ExitStack() as stack:
        try:
            server = stack.enter_context(
                start_airflow(
                    postgres,
                    f"s3://{s3_server.bucket}/airflow",
                    root,
                    base_env=dict(os.environ),
                    dags_folder=REPO / "dags",
                    plugins_folder=plugins if plugins.is_dir() else None,
                )
            )
        except ServerNotReady as exc:
            unavailable(f"Airflow did not start: {exc}")
        yield server
