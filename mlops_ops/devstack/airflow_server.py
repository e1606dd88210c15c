"""Airflow as it is deployed, on loopback: API server, scheduler, DAG processor and triggerer.

The metadata database is a fresh PostgreSQL database, tasks run on the LocalExecutor and users sign in
through the simple auth manager. The components get only the environment a deployment gives them: the
artifact root, but no MLflow tracking URI and no S3 credentials, which belong in Airflow connections
(``add_connections``).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ops.devstack.process import (
    LOOPBACK,
    ServerNotReady,
    free_ports,
    log_tail,
    require,
    require_executable,
    running,
)

if TYPE_CHECKING:
    import requests

    from mlops_ops.devstack.mlflow_server import MlflowServer
    from mlops_ops.devstack.postgres import Postgres
    from mlops_ops.devstack.s3 import S3Server

#: The API server imports the whole core app and the scheduler parses providers; both are slow on two cores.
STARTUP_TIMEOUT_SECONDS = 300.0
MIGRATE_TIMEOUT_SECONDS = 600.0
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Components whose heartbeat the API's health endpoint reports.
_MONITORED = ("metadatabase", "scheduler", "triggerer", "dag_processor")
#: Variables of the caller's environment that must not leak into the deployment.
CLEARED_PREFIXES = ("AIRFLOW", "MLFLOW_", "AWS_", "MLOPS_")
USERNAME = "admin"
AIRFLOW_INSTALL = "Airflow (`pip install 'mlops-ops[airflow]'`)"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class AirflowApi:
    """A signed-in client of the public REST API (``/api/v2``)."""

    def __init__(self, base_url: str, token: str) -> None:
        requests = require("requests", AIRFLOW_INSTALL)
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """Send a request to ``/api/v2{path}``; raise AssertionError unless the status is one of ``ok``."""
        response = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=60, **kwargs)
        if response.status_code not in ok:
            raise AssertionError(f"{method} {path} answered {response.status_code}: {response.text[:2000]}")
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        """``GET`` and decode the JSON answer."""
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        """``POST`` a JSON body and decode the JSON answer."""
        return self.request("POST", path, json=body, **kwargs).json()

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        """``PATCH`` with a JSON body and decode the JSON answer."""
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
        requests = require("requests", AIRFLOW_INSTALL)
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


def deployment_env(
    *,
    base_env: Mapping[str, str],
    root: Path,
    database_url: str,
    artifact_root: str,
    ports: Mapping[str, int],
    dags_folder: Path,
    plugins_folder: Path | None = None,
) -> dict[str, str]:
    """The environment of every component: what a deployment sets, over ``base_env`` cleaned of our settings.

    :param base_env: the environment to start from (``os.environ``, say); Airflow, MLflow, AWS and mlops
        settings are dropped from it, so the steps find MLflow and S3 only through Airflow connections.
    :param root: the deployment's state folder (``MLOPS_HOME`` is ``root/mlops``, Airflow's home below it).
    :param database_url: the metadata database (``postgresql+psycopg2://…``).
    :param artifact_root: ``MLOPS_ARTIFACT_ROOT``, a location (``s3://bucket/prefix``), not a credential.
    :param ports: ``api``, ``worker_logs`` and ``trigger_logs``.
    :param dags_folder: the DAGs folder; ``plugins_folder`` the plugins folder, if any.
    """
    home = root / "mlops"
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in base_env.items() if not k.startswith(CLEARED_PREFIXES)}
    # Airflow starts some processes by the bare command `airflow`: the interpreter's bin folder comes first.
    env["PATH"] = str(Path(sys.executable).parent) + (f":{env['PATH']}" if env.get("PATH") else "")
    api = f"http://{LOOPBACK}:{ports['api']}"
    env.update({
        "MLOPS_HOME": str(home),
        "MLOPS_ARTIFACT_ROOT": artifact_root,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder.absolute()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        # Airflow derives an asyncpg URL for its async engine, and asyncpg need not be installed. An empty URL
        # turns the async engine off; nothing the pipeline uses needs it (only the dag-run wait endpoint,
        # multi-team mode and the async task-state store do).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": "",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
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
    if plugins_folder is not None:
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(plugins_folder.absolute())
    return env


def _fernet_key() -> str:
    require("cryptography", AIRFLOW_INSTALL)
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _healthy(api_url: str) -> None:
    # B310: plain http to our own server on loopback.
    with urllib.request.urlopen(f"{api_url}/api/v2/monitor/health", timeout=5) as response:  # nosec B310
        health = json.load(response)
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


def _wait_healthy(server: AirflowServer, processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    started = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - started < timeout:
        for process, name in zip(processes, COMPONENTS, strict=True):
            if process.poll() is not None:
                raise ServerNotReady(f"airflow {name} exited with code {process.returncode} while starting")
        try:
            _healthy(server.api_url)
            return
        except Exception as exc:  # refused while starting, or a component without a heartbeat yet
            last = exc
        time.sleep(1.0)
    raise ServerNotReady(f"Airflow not healthy after {timeout:.0f}s (last check: {last!r})")


@contextmanager
def start_airflow(
    postgres: Postgres,
    artifact_root: str,
    root: Path,
    *,
    base_env: Mapping[str, str],
    dags_folder: Path,
    plugins_folder: Path | None = None,
    api_port: int | None = None,
    timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> Iterator[AirflowServer]:
    """Run the four components on a fresh metadata database (``airflow db migrate`` first) until exit.

    :param artifact_root: where the steps keep their artifacts (``s3://bucket/prefix``).
    :param root: a folder (made if missing) for the deployment's state and logs (``root/logs``).
    :param base_env: the environment to start from; see ``deployment_env``.
    :param api_port: the API server's port (a free one by default).
    Raises MissingTool when Airflow is not installed, ServerNotReady (with the components' log tails) when a
    component does not come up. The database is dropped on exit.
    """
    require_executable("airflow", AIRFLOW_INSTALL)
    root = root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    log_dir = root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    # The simple auth manager reads passwords from this file and generates the ones it lacks.
    (root / "passwords.json").write_text(json.dumps({USERNAME: password}))
    free = iter(free_ports(3))
    ports = {"api": api_port or next(free), "worker_logs": next(free), "trigger_logs": next(free)}
    with postgres.database("airflow") as database:
        env = deployment_env(
            base_env=base_env,
            root=root,
            database_url=postgres.url(database, "postgresql+psycopg2"),
            artifact_root=artifact_root,
            ports=ports,
            dags_folder=dags_folder,
            plugins_folder=plugins_folder,
        )
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
                _wait_healthy(server, processes, timeout)
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
