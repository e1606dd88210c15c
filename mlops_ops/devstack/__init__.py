"""A dev stack on loopback: SeaweedFS S3, PostgreSQL databases, an MLflow server and Airflow's components.

Tooling, not part of a pipeline: ``make services`` (``python -m mlops_ops.devstack``) and the integration
tests both start their servers through it. Each ``start_*`` function is a context manager that yields a
typed handle and stops the server on exit; every server runs in its own process group and dies with the
process that started it. Nothing heavy is imported here: boto3, psycopg2 and the ``weed``, ``mlflow`` and
``airflow`` commands are looked up when a server starts, and a missing one raises ``MissingTool`` naming
what to install.
"""

from __future__ import annotations

from mlops_ops.devstack.airflow_server import AirflowApi, AirflowServer, add_connections, deployment_env, start_airflow
from mlops_ops.devstack.mlflow_server import MlflowServer, start_mlflow
from mlops_ops.devstack.postgres import Postgres, admin_url
from mlops_ops.devstack.process import LOOPBACK, MissingTool, ServerNotReady, free_ports, running, stop_process
from mlops_ops.devstack.s3 import S3Server, start_seaweedfs
from mlops_ops.devstack.stack import Stack, start_stack

__all__ = [
    "LOOPBACK",
    "AirflowApi",
    "AirflowServer",
    "MissingTool",
    "MlflowServer",
    "Postgres",
    "S3Server",
    "ServerNotReady",
    "Stack",
    "add_connections",
    "admin_url",
    "deployment_env",
    "free_ports",
    "running",
    "start_airflow",
    "start_mlflow",
    "start_seaweedfs",
    "start_stack",
    "stop_process",
]
