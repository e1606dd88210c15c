"""The warm Airflow parent: ``airflow`` commands of a home forked from a prepared interpreter, or run cold.

Real ``airflow`` commands in real homes; the forked command's output is compared with a cold one's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_ops.demo.embedded import airflow_env, start_airflow
from mlops_ops.runners.warm import DIR_ENV, ENABLED_ENV
from tests.conftest import isolated_home, stop_warm_parents

pytestmark = pytest.mark.slow
FORKED = re.compile(r"airflow config get-value is process (\d+), forked from warm parent (\d+)")


@pytest.fixture
def warm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private folder for this test's warm parents, which are ended (by their pids) afterwards."""
    folder = tmp_path_factory.mktemp("wa")
    folder.chmod(0o700)
    yield folder
    stop_warm_parents(folder)


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


def secrets(env: dict[str, str]) -> tuple[str, ...]:
    """The secrets Airflow drew for the home's airflow.cfg when it wrote it."""
    text = (Path(env["AIRFLOW_HOME"]) / "airflow.cfg").read_text()
    return tuple(re.findall(r"^(?:fernet_key|jwt_secret|secret_key) = (\S+)$", text, re.MULTILINE))


def test_homes_share_one_parent_each_command_sees_its_own_home_and_an_edited_config_runs_cold(
    tmp_path: Path, warm_dir: Path
) -> None:
    one, two = home_env(tmp_path / "one", warm_dir), home_env(tmp_path / "two", warm_dir)
    log = tmp_path / "out.log"
    _, first = dags_folder(one, log)
    _, other = dags_folder(two, log)
    assert FORKED.search(first)[2] == FORKED.search(other)[2]  # type: ignore[index]
    assert first.splitlines()[-1] == one["AIRFLOW__CORE__DAGS_FOLDER"]
    assert other.splitlines()[-1] == two["AIRFLOW__CORE__DAGS_FOLDER"]
    # Each new home's airflow.cfg was written for it, with secrets of its own, as a cold command writes it.
    assert len(secrets(one)) == len(secrets(two)) == 3 and not set(secrets(one)) & set(secrets(two))
    private = [str(path) for path in warm_dir.glob("airflow-*")]
    assert private, "the parent's own home is in its folder"
    for env in (one, two):
        assert private[0] not in (Path(env["AIRFLOW_HOME"]) / "airflow.cfg").read_text()

    # A home that a cold command set up is served by the parent too.
    cold_home = home_env(tmp_path / "cold", warm_dir)
    subprocess.run(
        ["airflow", "config", "get-value", "core", "dags_folder"],
        env=cold_home | {ENABLED_ENV: "0"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    _, served = dags_folder(cold_home, log)
    assert FORKED.search(served) and "starts cold" not in served, served

    # An edited airflow.cfg may hold a setting Airflow reads when imported: that home's commands run cold.
    config = Path(one["AIRFLOW_HOME"]) / "airflow.cfg"
    config.write_text(config.read_text() + "\n[mlops_test]\nchanged = yes\n")
    code, edited = dags_folder(one, log)
    assert code == 0 and f"airflow config get-value starts cold: {config} differs from Airflow's default" in edited
    assert edited.splitlines()[-1] == one["AIRFLOW__CORE__DAGS_FOLDER"]
    _, still = dags_folder(two, log)
    assert FORKED.search(still)[2] == FORKED.search(first)[2] and "starts cold" not in still  # type: ignore[index]


#: Run by the test below: a warm parent's preparation for one home, then repoint() to another, then a
#: search of Airflow's and logging's module state (4 levels deep) for the first home's path.
REPOINT = """
import importlib, json, os, sys, types
base, home = sys.argv[1], sys.argv[2]
def env_of(h):
    return {"AIRFLOW_HOME": h, "AIRFLOW__CORE__DAGS_FOLDER": h + "/dags",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{h}/airflow.db"}
os.environ.update(env_of(base))
from mlops_ops.runners.warm import airflow_commands
from mlops_ops.runners.warm.config import AIRFLOW_PRELOAD
for name in AIRFLOW_PRELOAD:
    importlib.import_module(name)
airflow_commands.prepare()

def traces():
    found, seen = [], set()
    def look(obj, where, depth):
        if isinstance(obj, str):
            if base in obj:
                found.append(where + " = " + obj)
            return
        if id(obj) in seen or depth > 4 or isinstance(obj, types.ModuleType):  # modules: searched below
            return
        seen.add(id(obj))
        try:
            if isinstance(obj, dict):
                items = list(obj.items())
            elif isinstance(obj, (list, tuple, set, frozenset)):
                items = list(enumerate(obj))
            elif not isinstance(obj, type) and not callable(obj) and hasattr(obj, "__dict__"):
                items = list(vars(obj).items())
            else:
                return
        except Exception:
            return
        for key, value in items:
            look(value, where + "[" + repr(key) + "]", depth + 1)
    for name, module in list(sys.modules.items()):
        if module is not None and name.split(".")[0] in ("airflow", "logging", "structlog"):
            for key, value in list(vars(module).items()):
                look(value, name + "." + key, 0)
    return found

before = traces()
os.environ.update(env_of(home))
cold = airflow_commands.repoint()
from airflow import configuration, settings
print(json.dumps({
    "cold": cold, "before": len(before), "after": traces(),
    "dags": settings.DAGS_FOLDER, "database": settings.SQL_ALCHEMY_CONN,
    "logs": configuration.conf.get("logging", "base_log_folder"), "home": configuration.AIRFLOW_HOME,
}))
"""


def test_a_child_points_airflow_at_its_home_and_leaves_no_trace_of_the_parents(tmp_path: Path) -> None:
    import json

    base, home = tmp_path / "parent-home", tmp_path / "command-home"
    done = subprocess.run(
        [sys.executable, "-c", REPOINT, str(base), str(home)], capture_output=True, text=True, check=True
    )
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["before"] > 10, "the search sees the parent's home where Airflow keeps it"
    assert found["cold"] is None and found["after"] == []
    assert found["home"] == str(home) and found["dags"] == str(home / "dags")
    assert found["database"] == f"sqlite:///{home}/airflow.db" and found["logs"] == str(home / "logs")
    assert not (base / "airflow.cfg").exists(), "the parent writes no configuration in its own home"


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
