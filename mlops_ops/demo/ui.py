"""The two UIs on the demo's home: Airflow (``airflow standalone``) and MLflow (``mlflow ui``), on 127.0.0.1.

Each runs in a process group of its own under this process, whose pid is printed: Ctrl-C, or a SIGTERM to
that pid, stops the whole group. (``airflow standalone`` left alone on SIGTERM exits before its API server
and scheduler, which then live on as orphans.)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from mlops_ops.demo.embedded import HOST, airflow_command, airflow_env, venv_bin
from mlops_ops.settings import mlops_home, tracking_uri

AIRFLOW_PORT = 8080
MLFLOW_PORT = 5000
#: The user the demo's Airflow has (the simple auth manager's, an admin).
AIRFLOW_USER = "admin"


def password_file(airflow_home: Path) -> Path:
    """Where Airflow's simple auth manager keeps the generated passwords."""
    return airflow_home / "simple_auth_manager_passwords.json.generated"


def admin_password(airflow_home: Path) -> str:
    """The admin's password, made (random) and stored where Airflow reads it if there is none yet.

    Airflow prints a password it generates only on the first start; making it here lets every start
    print the same login.
    """
    path = password_file(airflow_home)
    stored: dict[str, str] = json.loads(path.read_text() or "{}") if path.exists() else {}
    if AIRFLOW_USER not in stored:
        stored[AIRFLOW_USER] = secrets.token_urlsafe(12)
        path.write_text(json.dumps(stored) + "\n")
        path.chmod(0o600)
    return stored[AIRFLOW_USER]


def airflow_ui(dags_folder: Path, plugins_folder: Path | None, echo: Callable[[str], None]) -> None:
    """Start Airflow's API server, scheduler, DAG processor and triggerer on the demo's home."""
    env = airflow_env(dags_folder, plugins_folder)
    home = Path(env["AIRFLOW_HOME"])
    port = env.setdefault("AIRFLOW__API__PORT", str(AIRFLOW_PORT))
    env.setdefault("AIRFLOW__API__HOST", HOST)
    env.setdefault("AIRFLOW__API__BASE_URL", f"http://{HOST}:{port}")
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = f"{AIRFLOW_USER}:admin"
    # The LocalExecutor starts a worker process per slot up front: 32 by default, too many for a laptop.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    password = admin_password(home)
    echo(
        f"Starting Airflow on {home} at http://{HOST}:{port} (pid {os.getpid()}; Ctrl-C stops it).\n"
        f"Log in as {AIRFLOW_USER} with password {password}\n"
        f"  (kept in {password_file(home)})"
    )
    raise SystemExit(supervise(airflow_command("standalone"), env))


def mlflow_ui(echo: Callable[[str], None]) -> None:
    """Start MLflow's UI on the demo's tracking database: one worker, no job consumers."""
    env = dict(os.environ)
    env.update({
        "MLOPS_HOME": str(mlops_home()),
        "PATH": os.pathsep.join([str(venv_bin()), env.get("PATH", "")]),
        # Job consumers (for GenAI jobs) crash-loop on a loaded machine and the demo has no jobs.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    })  # fmt: skip
    port = int(env.get("MLFLOW_PORT") or MLFLOW_PORT)
    store = tracking_uri()
    address = f"http://{HOST}:{port}"
    echo(f"Starting MLflow on {store} at {address} (pid {os.getpid()}; Ctrl-C stops it).")
    experiment = training_experiment()
    echo(f"Open {address}/#/experiments/{experiment}" if experiment else f"Open {address}")
    command = [str(venv_bin() / "mlflow"), "ui", "--backend-store-uri", store, "--host", HOST, "--port", str(port)]
    command += ["--workers", "1"]
    raise SystemExit(supervise(command, env))


def supervise(command: list[str], env: dict[str, str], grace: float = 20.0) -> int:
    """Run ``command`` in a new process group until it ends or this process gets SIGINT, SIGTERM or SIGHUP.

    A signal stops the whole group: SIGTERM, then SIGKILL for what is left after ``grace`` seconds. The
    exit code is the command's, or 0 after a requested stop.
    """
    process = subprocess.Popen(command, env=env, start_new_session=True)
    stopping: list[float] = []

    def stop(signum: int, frame: object) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            _signal_group(process.pid, signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    while process.poll() is None and not (stopping and time.monotonic() - stopping[0] > grace):
        time.sleep(0.5)
    _signal_group(process.pid, signal.SIGKILL)  # components the leader left behind, or all after the grace
    process.wait()
    return 0 if stopping else process.returncode


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(group, signum)


def training_experiment(pipeline: str = "mlops_training") -> str | None:
    """The id of the training pipeline's MLflow experiment, if the demo has run (read without creating it)."""
    store = tracking_uri()
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).exists():
        return None
    from mlops_ops.lineage.client import client

    found = client().get_experiment_by_name(f"mlops/{pipeline}")
    return str(found.experiment_id) if found is not None else None
