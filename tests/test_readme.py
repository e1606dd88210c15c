"""The README, driven on a fresh copy of the project, as a new user would in their first hour.

Every command in the README's ``bash`` blocks is run as shown, in the copy (your own file becomes a
CSV in a folder outside it), or listed in ``NOT_RUN`` with the reason. The error lines the README
quotes are compared with the real ones. ``make airflow-ui`` and ``make mlflow-ui`` are started in the
background, waited for on their ports, logged into with the login they print, and stopped by pid.

The copy shares this project's ``.venv`` (a symlink): ``make`` is told not to rebuild it (``-o``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.embedded import REPO, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = REPO / "README.md"
#: Commands of the README this ring does not run, and why.
NOT_RUN = {
    "make test": "the whole test suite, of which this test is a part",
    ".venv/bin/mlops-ops step validate --spec @validate.json --result s3://bucket/runs/x/result.json": (
        "needs an S3 bucket: `make services` or `docker compose up` (tests/test_deployed.py covers S3 results)"
    ),
}
#: Where the README's placeholder for your own file points in the copy: a folder outside the project.
OWN_FILE = "/path/to/your.csv"
TIMEOUT = 900


def readme_commands() -> list[str]:
    """The commands of the README's ``bash`` blocks, comments dropped, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files (tracked and new, not ignored) in a fresh folder, sharing the virtualenv."""
    root = tmp_path_factory.mktemp("readme") / "project"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    for shared in (".venv", ".tools"):
        (root / shared).symlink_to(REPO / shared)
    return root


@pytest.fixture(scope="module")
def own_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's CSV of their own, in a folder that is no data root: iris, with a ``species`` column."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    frame["species"] = [iris.target_names[i] for i in iris.target]
    path = tmp_path_factory.mktemp("elsewhere") / "flowers.csv"
    frame.to_csv(path, index=False)
    return path


def shell(copy: Path, command: str, own_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """One README command in the copy, as typed (``make`` keeps the shared virtualenv as it is)."""
    command = command.replace(OWN_FILE, str(own_file))
    if command.startswith("make "):
        command = "make -o .venv/.synced " + command.removeprefix("make ")
    return subprocess.run(
        ["bash", "-c", command], cwd=copy, env=clean_env(**env),
        capture_output=True, text=True, check=False, timeout=TIMEOUT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ran(copy: Path, own_file: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every README command that is run, run once in README order (the demo ones share the copy's home)."""
    done: dict[str, subprocess.CompletedProcess[str]] = {}
    for command in readme_commands():
        if command in NOT_RUN or command in done or command.startswith(("make airflow-ui", "make mlflow-ui")):
            continue
        done[command] = shell(copy, command, own_file)
    return done


def test_every_readme_command_is_run_or_listed_as_needing_services(ran: dict[str, object]) -> None:
    ui = {"make airflow-ui", "make mlflow-ui"}
    assert set(readme_commands()) == set(ran) | set(NOT_RUN) | ui
    assert set(NOT_RUN) <= set(readme_commands())  # nothing listed that the README no longer shows


def test_the_demo_commands_do_what_the_readme_says(
    ran: dict[str, subprocess.CompletedProcess[str]], own_file: Path
) -> None:
    outputs = {c: r for c, r in ran.items() if c.startswith("make demo")}
    base, drift, corrupt = outputs["make demo"], outputs["make demo DATA=drift"], outputs["make demo DATA=corrupt"]
    assert base.returncode == 0, base.stdout[-3000:] + base.stderr[-3000:]
    assert "promote     churn-classifier v1 took @champion" in base.stdout
    assert drift.returncode == 0, drift.stdout[-3000:] + drift.stderr[-3000:]
    assert "drift       this batch has drifted" in drift.stdout
    assert corrupt.returncode != 0 and "  validate  failed " in corrupt.stdout
    assert "  train     upstream_failed not run" in corrupt.stdout
    own = next(r for c, r in outputs.items() if OWN_FILE in c)
    assert own.returncode == 0, own.stdout[-3000:] + own.stderr[-3000:]
    assert f":{own_file.parent} in this run (MLOPS_DATA_ROOTS, your file's folder added)" in own.stdout
    assert "Registering your model as flowers-model" in own.stdout
    assert "Validating with the suite inferred from your data: .mlops/suites/flowers-" in own.stdout
    assert "promote     flowers-model v1 took @champion" in own.stdout
    for printed in re.findall(r"^  (\.venv/bin/mlops-ops .*?)\s+#", base.stdout, re.M):
        assert printed.startswith(".venv/bin/mlops-ops ")  # the next steps work as printed, from here


def test_the_command_line_block_runs_as_shown(ran: dict[str, subprocess.CompletedProcess[str]]) -> None:
    for command, done in ran.items():
        if command.startswith(".venv/bin/mlops-ops"):
            assert done.returncode == 0, (command, done.stderr[-2000:])
    ingest = json.loads(ran[next(c for c in ran if " step ingest " in c)].stdout)
    assert ingest["snapshot"]["rows"] == 5000
    text = ran[".venv/bin/mlops-ops lineage churn-classifier --alias champion"].stdout
    for label in ("source ", "snapshot ", "train partition ", "eval partition ", "validation ", "estimator ",
                  "parameters ", "airflow ", "evaluation ", "decision "):  # fmt: skip
        assert f"\n  {label}" in text, label
    assert "gates roc_auc >= 0.75" in text and "expectations passed, suite " in text


def test_the_readme_error_lines_are_the_real_ones(
    copy: Path, own_file: Path, ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    quoted = re.findall(r"```text\n(mlops-ops: error: .*?)\n```", README.read_text(), re.S)
    conf_error = next(q for q in quoted if "--conf" in q)
    done = shell(copy, """.venv/bin/mlops-ops demo --conf '{"targt": "species"}'""", own_file)
    assert done.returncode == 2 and done.stderr.strip() == conf_error
    # A step's own error line; the demo shows its message on the failed step's line.
    validation = next(q for q in quoted if "ValidationFailed" in q).removesuffix(" ...")
    assert validation.removeprefix("mlops-ops: error: ") in ran["make demo DATA=corrupt"].stdout
    helped = shell(copy, ".venv/bin/mlops-ops demo --help", own_file).stdout
    assert "gate_threshold    null or a number; default null (" in helped and "0.75 for roc_auc, 0.0 for r2" in helped


# ------------------------------------------------------------------------------------------------- UIs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, process: subprocess.Popen[str], seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f}s")


@pytest.fixture
def started(copy: Path, tmp_path: Path, ran: object) -> Iterator[dict[str, tuple[subprocess.Popen[str], Path, int]]]:
    """``make airflow-ui`` and ``make mlflow-ui`` in the background (on free ports), output in files."""
    ports = {"airflow-ui": free_port(), "mlflow-ui": free_port()}
    env = clean_env(AIRFLOW__API__PORT=str(ports["airflow-ui"]), MLFLOW_PORT=str(ports["mlflow-ui"]))
    running = {}
    for target, port in ports.items():
        out = tmp_path / f"{target}.out"
        with out.open("w") as handle:
            process = subprocess.Popen(
                ["make", "-o", ".venv/.synced", target], cwd=copy, env=env, stdout=handle,
                stderr=subprocess.STDOUT, text=True, start_new_session=True,
            )  # fmt: skip
        running[target] = (process, out, port)
    try:
        yield running
    finally:
        for process, out, _ in running.values():
            pid = re.search(r"\(pid (\d+);", out.read_text())
            if pid and process.poll() is None:
                os.kill(int(pid.group(1)), signal.SIGTERM)  # the UI's own pid, as printed
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the session this test started, nothing else
                process.wait()


def test_the_uis_start_print_their_login_and_serve_the_demo(
    started: dict[str, tuple[subprocess.Popen[str], Path, int]],
) -> None:
    airflow, airflow_out, airflow_port = started["airflow-ui"]
    mlflow, mlflow_out, mlflow_port = started["mlflow-ui"]
    wait_for(mlflow_port, mlflow)
    page = re.search(r"^Open (http://127\.0\.0\.1:\d+/#/experiments/\d+)$", mlflow_out.read_text(), re.M)
    assert page is not None, mlflow_out.read_text()[-2000:]
    with urllib.request.urlopen(page.group(1), timeout=60) as response:
        assert response.status == 200
    experiment = page.group(1).rsplit("/", 1)[1]
    url = f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/get?experiment_id={experiment}"
    with urllib.request.urlopen(url, timeout=60) as response:
        assert json.load(response)["experiment"]["name"] == "mlops/mlops_training"

    wait_for(airflow_port, airflow, seconds=600)
    login = re.search(r"^Log in as (\w+) with password (\S+)$", airflow_out.read_text(), re.M)
    assert login is not None and login.group(1) == "admin", airflow_out.read_text()[-2000:]
    token = _airflow_token(airflow_port, login.group(1), login.group(2))
    request = urllib.request.Request(
        f"http://127.0.0.1:{airflow_port}/api/v2/dags?dag_id_pattern=mlops_training",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        dags = json.load(response)["dags"]
    assert [(d["dag_id"], d["is_paused"]) for d in dags] == [("mlops_training", False)]


def _airflow_token(port: int, user: str, password: str) -> str:
    """The API server's token for the printed login (it answers once its auth manager is up)."""
    body = json.dumps({"username": user, "password": password}).encode()
    deadline = time.monotonic() + 120
    while True:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/auth/token", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return str(json.load(response)["access_token"])
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
