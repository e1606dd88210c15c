"""``make services``: S3, MLflow and Airflow on PostgreSQL on loopback, wired with connections, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlops_ops.devstack.airflow_server import AirflowApi, AirflowServer, add_connections, start_airflow
from mlops_ops.devstack.mlflow_server import MlflowServer, start_mlflow
from mlops_ops.devstack.postgres import Postgres, admin_url
from mlops_ops.devstack.process import ServerNotReady, port_free
from mlops_ops.devstack.s3 import S3Server, start_seaweedfs

BUCKET = "mlops"
DAG_ID = "mlops_training"
#: How long the DAG processor may take to find the training DAG before it is unpaused.
DAG_WAIT_SECONDS = 120.0
#: What a state folder of the stack holds; any other entry means it is someone else's folder, not wiped.
STATE_ENTRIES = frozenset({"s3", "mlflow", "airflow", "services.env"})


@dataclass(frozen=True)
class Stack:
    """The running dev stack: S3, MLflow and Airflow, and the ``s3://`` URIs of the demo data."""

    s3: S3Server
    mlflow: MlflowServer
    airflow: AirflowServer
    data: list[str]
    state: Path


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def fresh_state(path: Path) -> Path:
    """Empty the state folder ``path`` (made if missing) and return it absolute.

    Raises ServerNotReady, wiping nothing, if it holds anything the stack did not make there.
    """
    path = path.absolute()
    foreign = sorted(entry.name for entry in path.iterdir() if entry.name not in STATE_ENTRIES) if path.is_dir() else []
    if foreign or (path.exists() and not path.is_dir()):
        raise ServerNotReady(
            f"{path} holds files the dev stack did not make ({', '.join(foreign[:5]) or 'not a folder'}): "
            "it wipes its state folder on start, so choose another --state-dir"
        )
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _upload_demo_data(s3: S3Server) -> list[str]:
    from mlops_ops.demo import DATA_DIR

    client = s3.client()
    data = []
    for path in sorted(DATA_DIR.glob("*.csv")):
        client.upload_file(str(path), s3.bucket, f"data/{path.name}")
        data.append(f"s3://{s3.bucket}/data/{path.name}")
    return data


def _unpause(api: AirflowApi, dag_id: str) -> None:
    deadline = time.monotonic() + DAG_WAIT_SECONDS
    while api.request("GET", f"/dags/{dag_id}", ok=(200, 404)).status_code == 404 and time.monotonic() < deadline:
        time.sleep(1)
    api.patch(f"/dags/{dag_id}", {"is_paused": False})


@contextmanager
def start_stack(
    state: Path,
    *,
    ports: Mapping[str, int],
    base_env: Mapping[str, str],
    dags_folder: Path,
    plugins_folder: Path | None = None,
    postgres_url: str,
) -> Iterator[Stack]:
    """Start S3, MLflow and Airflow with their state under ``state`` (an existing, empty folder) until exit.

    :param ports: ``s3``, ``mlflow`` and ``airflow`` (the API server).
    :param base_env: the environment the MLflow server and Airflow's components start from.
    :param postgres_url: the PostgreSQL admin database; the stack makes (and drops) its own databases there.
    """
    postgres = Postgres(postgres_url)
    postgres.check()
    with ExitStack() as stack:
        print(f"Starting SeaweedFS S3 on port {ports['s3']} ...", flush=True)
        s3 = stack.enter_context(start_seaweedfs(_fresh(state / "s3"), bucket=BUCKET, port=ports["s3"]))
        data = _upload_demo_data(s3)
        print(f"Starting MLflow on port {ports['mlflow']} (PostgreSQL backend) ...", flush=True)
        mlflow = stack.enter_context(
            start_mlflow(postgres, s3, _fresh(state / "mlflow"), base_env=base_env, port=ports["mlflow"])
        )
        print(f"Starting Airflow on port {ports['airflow']} (PostgreSQL, LocalExecutor) ...", flush=True)
        airflow = stack.enter_context(
            start_airflow(
                postgres,
                f"s3://{s3.bucket}/airflow",
                _fresh(state / "airflow"),
                base_env=base_env,
                dags_folder=dags_folder,
                plugins_folder=plugins_folder,
                api_port=ports["airflow"],
            )
        )
        api = airflow.api()
        add_connections(api, mlflow, s3)
        _unpause(api, DAG_ID)
        (state / "services.env").write_text(f"export MLFLOW_TRACKING_URI={mlflow.tracking_uri}\n")
        yield Stack(s3=s3, mlflow=mlflow, airflow=airflow, data=data, state=state)


def summary(stack: Stack) -> str:
    """What is running where, with the credentials and the data to trigger the training DAG with."""
    airflow, mlflow, s3 = stack.airflow, stack.mlflow, stack.s3
    return "\n".join([
        "",
        "The mlops-ops stack is up (Ctrl-C stops it and drops its databases):",
        f"  Airflow UI and API  {airflow.api_url}   user {airflow.username}, password {airflow.password}",
        f"  MLflow              {mlflow.tracking_uri}   (PostgreSQL backend, artifacts in {mlflow.artifacts_destination})",
        f"  S3 (SeaweedFS)      {s3.endpoint_url}   bucket {s3.bucket}, key {s3.access_key}, secret {s3.secret_key}",
        "  Airflow connections mlflow_default (type mlflow) and s3_default (type aws) point the steps at them.",
        "",
        f"Trigger {DAG_ID} from the UI with one of these as the data URI:",
        *[f"  {uri}" for uri in stack.data],
        "",
        f"Then read the lineage:  source {stack.state / 'services.env'} && .venv/bin/mlops-ops lineage churn-classifier",
    ])  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlops_ops.devstack", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=Path(".mlops/services"), help="wiped at start")
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--s3-port", type=int, default=8333)
    parser.add_argument("--dags-folder", type=Path, default=Path("dags"))
    parser.add_argument("--plugins-folder", type=Path, default=Path("plugins"), help="used if it exists")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Start the stack, print where everything is, and keep it up until Ctrl-C or SIGTERM."""
    args = _parser().parse_args(argv)
    ports = {"airflow": args.airflow_port, "mlflow": args.mlflow_port, "s3": args.s3_port}
    busy = [f"{name} port {port}" for name, port in ports.items() if not port_free(port)]
    if busy:
        sys.exit(f"in use: {', '.join(busy)}; choose others, e.g. make services AIRFLOW_PORT=8081 MLFLOW_PORT=5001")
    # `kill` (or make stopping) tears the stack down as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    plugins = args.plugins_folder if args.plugins_folder.is_dir() else None
    try:
        with start_stack(
            fresh_state(args.state_dir),
            ports=ports,
            base_env=os.environ,
            dags_folder=args.dags_folder,
            plugins_folder=plugins,
            postgres_url=admin_url(os.environ),
        ) as stack:
            print(summary(stack), flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopped; databases dropped.")
    except ServerNotReady as exc:
        sys.exit(f"a service did not start: {exc}")
    except Exception as exc:  # psycopg2.OperationalError and friends: say what, not a traceback
        sys.exit(f"cannot start the stack: {type(exc).__name__}: {exc}")
