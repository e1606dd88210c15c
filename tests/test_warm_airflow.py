"""The warm Airflow parent: ``airflow`` commands of a home forked from a prepared interpreter, or run cold.

Real ``airflow`` commands in real homes; the forked command's output is compared with a cold one's.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_ops.demo.embedded import airflow_env, start_airflow
from mlops_ops.runners.warm import DIR_ENV, ENABLED_ENV
from tests.conftest import isolated_home

pytestmark = pytest.mark.slow
FORKED = re.compile(r"airflow config get-value is process (\d+), forked from warm parent (\d+)")


@pytest.fixture
def warm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private folder for this test's warm parents, which are ended (by their pids) afterwards."""
    folder = tmp_path_factory.mktemp("wa")
    folder.chmod(0o700)
    yield folder
    for lock in folder.glob("warm-*.lock"):
        text = lock.read_text().strip()
        if text.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(text), signal.SIGTERM)


def home_env(home: Path, warm_dir: Path, **extra: str) -> dict[str, str]:
    with isolated_home(home):
        env = airflow_env(home / "dags")
    (home / "dags").mkdir(parents=True, exist_ok=True)
    return env | {DIR_ENV: str(warm_dir), ENABLED_ENV: "1"} | extra


def dags_folder(env: dict[str, str], log: Path) -> tuple[int, str]:
    """``airflow config get-value core dags_folder`` through start_airflow: its exit code and the log's new text."""
    offset = log.stat().st_size if log.exists() else 0
    with log.open("a") as out:
        code = start_airflow(env, ["config", "get-value", "core", "dags_folder"], out).wait()
    return code, log.read_text()[offset:]


def test_a_forked_command_prints_what_a_cold_one_prints(tmp_path: Path, warm_dir: Path) -> None:
    env = home_env(tmp_path / "home", warm_dir)
    log = tmp_path / "out.log"
    code, first = dags_folder(env, log)
    assert code == 0 and FORKED.search(first), first
    code, second = dags_folder(env, log)
    forked_first, forked_second = FORKED.search(first), FORKED.search(second)
    assert code == 0 and forked_second is not None
    assert forked_second[2] == forked_first[2], "the second command is forked from the same parent"  # type: ignore[index]
    assert forked_second[1] != forked_first[1]  # type: ignore[index]
    cold = subprocess.run(
        ["airflow", "config", "get-value", "core", "dags_folder"],
        env=env | {ENABLED_ENV: "0"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    printed = [line for line in second.splitlines() if not line.startswith("mlops-ops: ")]
    assert printed == [env["AIRFLOW__CORE__DAGS_FOLDER"]] == cold.stdout.split()


def test_each_home_has_its_own_parent_and_a_changed_config_retires_it(tmp_path: Path, warm_dir: Path) -> None:
    one, two = home_env(tmp_path / "one", warm_dir), home_env(tmp_path / "two", warm_dir)
    log = tmp_path / "out.log"
    _, first = dags_folder(one, log)
    _, other = dags_folder(two, log)
    assert FORKED.search(first)[2] != FORKED.search(other)[2]  # type: ignore[index]
    assert other.splitlines()[-1] == two["AIRFLOW__CORE__DAGS_FOLDER"]

    config = Path(one["AIRFLOW_HOME"]) / "airflow.cfg"
    config.write_text(config.read_text() + "\n[mlops_test]\nchanged = yes\n")
    code, refused = dags_folder(one, log)
    assert code == 0 and "starts cold" in refused and f"{config} changed since the warm parent read it" in refused
    assert refused.splitlines()[-1] == one["AIRFLOW__CORE__DAGS_FOLDER"]
    _, fresh = dags_folder(one, log)
    assert FORKED.search(fresh) and FORKED.search(fresh)[2] != FORKED.search(first)[2]  # type: ignore[index]


def test_the_switch_off_runs_airflow_cold(tmp_path: Path, warm_dir: Path) -> None:
    env = home_env(tmp_path / "home", warm_dir, **{ENABLED_ENV: "0"})
    code, text = dags_folder(env, tmp_path / "out.log")
    assert code == 0 and "forked" not in text and text.strip() == env["AIRFLOW__CORE__DAGS_FOLDER"]
    assert not list(warm_dir.glob("warm-*.sock"))


SLEEPY = """
import time

from airflow.sdk import dag, task


@dag(schedule=None)
def sleepy():
    @task
    def nap():
        time.sleep(300)

    nap()


sleepy()
"""


def test_a_killed_warm_parent_takes_its_command_along_and_the_demo_says_so_in_one_line(
    tmp_path: Path, warm_dir: Path
) -> None:
    """The warm Airflow parent is SIGKILLed while ``airflow dags test`` runs a task: the command dies with it
    (nobody could report its exit code or kill it any more) and run_dag raises an InfraError naming the log."""
    import threading
    import time

    import psutil

    from mlops_ops.demo.embedded import migrate
    from mlops_ops.demo.run import run_dag
    from mlops_ops.errors import InfraError

    env = home_env(tmp_path / "home", warm_dir)
    (Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / "sleepy.py").write_text(SLEEPY)
    log = tmp_path / "run.log"
    migrate(env, log, echo=None)
    forked: dict[str, int] = {}

    def kill_parent_once_the_task_runs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            found = re.search(r"airflow dags test is process (\d+), forked from warm parent (\d+)", text)
            if found and "[DAG TEST] running task" in text:
                forked.update(command=int(found[1]), parent=int(found[2]))
                os.kill(forked["parent"], signal.SIGKILL)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_parent_once_the_task_runs)
    killer.start()
    with pytest.raises(InfraError) as raised:
        run_dag(env, "sleepy", {}, log, echo=lambda line: None)
    killer.join()
    assert forked, log.read_text()[-3000:]
    message = str(raised.value)
    assert message.startswith(f"airflow dags test (process {forked['command']}) was stopped: ")
    assert f"the warm parent {forked['parent']} ended before process {forked['command']} did" in message
    assert f"its output is in {log}" in message and "MLOPS_WARM_EXECUTOR=0" in message

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 10
    while not gone(forked["command"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(forked["command"]), "airflow dags test outlived its warm parent"
