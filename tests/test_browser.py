"""The UI in a real browser (Playwright driving Debian's chromium) against Airflow as deployed, on loopback.

Airflow (API server, scheduler, DAG processor, triggerer on PostgreSQL) runs the project's ``dags/`` against
the MLflow and S3 test servers; ``mlops_training`` is triggered twice with the promotion policy ``approval``
(a value of its trigger form), so the chain's ``approve`` task waits for a reviewer in both runs:
one is approved and one rejected in Airflow's Required Actions UI; the Models view shows the alias move
with its approver, the champion's chain with its links, and the rejection with its comment.

Screenshots of each page go to the test's output folder (printed at the end); with
``MLOPS_DOCS_SCREENSHOTS=1`` they also replace the ones in ``docs/img/``. The browser is Debian's
``chromium`` (``apt-get install -y chromium``): under ``CI=true`` a missing browser fails the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlops_ops.devstack.airflow_server import AirflowApi, AirflowServer, add_connections, start_airflow
from mlops_ops.devstack.process import ServerNotReady
from tests.conftest import REPO
from tests.servers._proc import in_ci, unavailable

if TYPE_CHECKING:
    from mlops_ops.devstack.mlflow_server import MlflowServer
    from mlops_ops.devstack.postgres import Postgres
    from mlops_ops.devstack.s3 import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "mlops_training"
MODEL = "churn-approval"
DAGS = REPO / "dags"
DOCS_IMG = REPO / "docs" / "img"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get install -y chromium"
WAIT_SECONDS = 900.0
#: Airflow 3.3 race: the scheduler fails a HITL task resumed before it has processed the executor's "finished"
#: event of the try that parked it in awaiting_input (seen when answering ~5 s after the pause). People take
#: longer than that; the test waits as long before it answers.
SETTLE_SECONDS = 20.0
#: Two runs with different estimators: two candidates, both passing evaluation, both awaiting a reviewer.
RUNS = {"approved_run": {"max_iter": 50}, "rejected_run": {"max_iter": 20}}
#: The form's values both runs share: the approval policy, and gates both candidates pass in either order.
CONF = {"registered_model": MODEL, "promotion_policy": "approval", "gate_threshold": 0.6, "min_improvement": -1.0}


# ---------------------------------------------------------------------------------------------- browser


def _missing(reason: str) -> Any:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: browser tests must not be skipped)", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    """Debian's chromium; installed with apt-get when running as root; else a one-line skip (fail under CI)."""
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(INSTALL.split(), capture_output=True, text=True, check=False, env=env, timeout=1200)
        if done.returncode != 0:  # a stale package index: refresh it once
            subprocess.run(["apt-get", "update"], capture_output=True, check=False, env=env, timeout=600)
            subprocess.run(INSTALL.split(), capture_output=True, check=False, env=env, timeout=1200)
        if CHROMIUM.exists():
            return str(CHROMIUM)
    return _missing(f"the browser tests need Debian's chromium at {CHROMIUM}: {INSTALL}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium driven by Playwright (``executable_path``: no browser download)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the browser tests need Playwright for Python: install the dev dependency group")
    executable = chromium_path()
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield found
        found.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder screenshots go to; copied to docs/img/ with MLOPS_DOCS_SCREENSHOTS=1."""
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    print(f"\nscreenshots: {folder}")
    if os.environ.get("MLOPS_DOCS_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.png")):
            shutil.copy2(path, DOCS_IMG / path.name)


def shoot(page: Any, folder: Path, name: str, *, settle: bool = True) -> None:
    if settle:  # MLflow's UI keeps polling: it never goes idle
        page.wait_for_load_state("networkidle")
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


# ------------------------------------------------------------------------------------------------ stack


@dataclass
class Stack:
    """Airflow with the project's DAGs, wired to the MLflow and S3 test servers, with two runs triggered."""

    airflow: AirflowServer
    mlflow: MlflowServer
    api: AirflowApi


@pytest.fixture(scope="module")
def stack(
    postgres: Postgres, s3_server: S3Server, mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("airflow-browser")
    with ExitStack() as exits:
        try:
            airflow = exits.enter_context(
                start_airflow(
                    postgres, f"s3://{s3_server.bucket}/browser", root, base_env=dict(os.environ), dags_folder=DAGS
                )
            )
        except ServerNotReady as exc:
            unavailable(f"Airflow did not start: {exc}")
        api = airflow.api()
        add_connections(api, mlflow_server, s3_server)
        deadline = time.monotonic() + 180
        while api.request("GET", f"/dags/{DAG_ID}", ok=(200, 404)).status_code == 404:
            assert time.monotonic() < deadline, f"{DAG_ID} was not parsed within 180s:\n{airflow.logs()}"
            time.sleep(1)
        api.patch(f"/dags/{DAG_ID}", {"is_paused": False})
        for run_id, params in RUNS.items():
            body = {"dag_run_id": run_id, "logical_date": None, "conf": {**CONF, "estimator_params": params}}
            api.post(f"/dags/{DAG_ID}/dagRuns", body)
        yield Stack(airflow, mlflow_server, api)


def states(stack: Stack, run_id: str) -> dict[str, str | None]:
    found = stack.airflow.api().get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in found}


def task_log(stack: Stack, run_id: str, task: str) -> str:
    """Every try's log of one task, as the UI shows it (for a failure's message)."""
    api = stack.airflow.api()
    tries = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task}")["try_number"]
    lines = []
    for number in range(1, tries + 1):
        path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task}/logs/{number}"
        content = api.get(path, params={"full_content": "true"}, headers={"Accept": "application/json"})
        lines += [f"[{task} try {number}] {entry.get('event', entry)}" for entry in content["content"]]
    return "\n".join(lines)


def wait_for(stack: Stack, run_id: str, task: str, wanted: tuple[str, ...]) -> dict[str, str | None]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = states(stack, run_id)
        if found.get(task) in wanted:
            return found
        failed = [t for t, s in found.items() if s in ("failed", "upstream_failed")]
        if failed:
            logs = "\n".join(task_log(stack, run_id, t) for t, s in found.items() if s == "failed")
            pytest.fail(f"{run_id}: {failed} failed: {found}\n{logs}\n{stack.airflow.logs()}", pytrace=False)
        assert time.monotonic() < deadline, f"{run_id}: {task} not {wanted} after {WAIT_SECONDS:.0f}s: {found}"
        time.sleep(2)


# -------------------------------------------------------------------------------------------------- UI


@pytest.fixture(scope="module")
def page(browser: Any, stack: Stack, shots: Path) -> Iterator[Any]:
    """A browser tab signed in through Airflow's login form (simple auth manager)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.goto(stack.airflow.api_url + "/", wait_until="networkidle")
    tab.locator("input[name=username]").wait_for(timeout=60_000)
    shoot(tab, shots, "login")
    tab.locator("input[name=username]").fill(stack.airflow.username)
    tab.locator("input[name=password]").fill(stack.airflow.password)
    tab.locator("button[type=submit]").click()
    tab.get_by_role("button", name="Browse").wait_for(timeout=60_000)
    yield tab
    context.close()


def open_models_view(page: Any, stack: Stack) -> Any:
    """Browse > Models in Airflow's navigation; the view's frame."""
    page.goto(stack.airflow.api_url + "/", wait_until="networkidle")
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Models").click()
    page.wait_for_url("**/plugin/mlops-models")
    frame = page.frame_locator("iframe[title=Models]")
    frame.get_by_role("heading", name="Models").wait_for(timeout=60_000)
    return frame


def respond(page: Any, stack: Stack, shots: Path, run_id: str, choice: str, comment: str) -> None:
    """Open the run's pending action from Browse > Required Actions, write a comment, and choose."""
    wait_for(stack, run_id, "approve", ("awaiting_input",))
    time.sleep(SETTLE_SECONDS)
    page.goto(stack.airflow.api_url + "/required_actions", wait_until="networkidle")
    link = page.locator(f"a[href$='/runs/{run_id}/tasks/approve/required_actions']").first
    link.wait_for(timeout=60_000)
    shoot(page, shots, f"required-actions-{choice.lower()}")
    link.click()
    page.get_by_role("button", name=choice, exact=True).wait_for(timeout=60_000)
    page.locator("input[name=element_comment]").fill(comment)
    shoot(page, shots, f"approval-{choice.lower()}")
    page.get_by_role("button", name=choice, exact=True).click()


def test_an_anonymous_visitor_is_refused(browser: Any, stack: Stack) -> None:
    context = browser.new_context()
    try:
        assert context.request.get(stack.airflow.api_url + "/mlops/models").status == 401
        tab = context.new_page()
        tab.goto(stack.airflow.api_url + "/plugin/mlops-models")
        tab.wait_for_url("**/auth/login**", timeout=60_000)
    finally:
        context.close()


def test_approving_a_pending_promotion_moves_the_champion(page: Any, stack: Stack, shots: Path) -> None:
    respond(page, stack, shots, "approved_run", "Approve", "better recall")
    assert wait_for(stack, "approved_run", "promote", ("success",))["approve"] == "success"
    frame = open_models_view(page, stack)
    shoot(page, shots, "models")
    frame.get_by_role("link", name=MODEL).click()
    frame.get_by_role("heading", name=f"Model {MODEL}").wait_for()
    history = frame.locator("table").filter(has_text="approver").first
    assert "approved by admin: better recall" in history.inner_text()
    assert "admin" in history.locator("tbody tr").first.inner_text()
    shoot(page, shots, "model")


def test_the_models_view_shows_the_champion_its_chain_and_links(page: Any, stack: Stack, shots: Path) -> None:
    frame = open_models_view(page, stack)
    frame.get_by_role("link", name="version 1").first.click()
    frame.get_by_role("heading", name=f"{MODEL} version 1").wait_for()
    for step in ("ingest", "validate", "train", "evaluate", "promote"):
        assert frame.locator(f"[data-step={step}]").count() == 1
    assert frame.locator("img.plot").count() >= 1
    shoot(page, shots, "lineage-in-airflow")
    # The same page on its own, for a full-length picture of the chain and the reports.
    alone = page.context.new_page()
    alone.goto(f"{stack.airflow.api_url}/mlops/models/{MODEL}/versions/1", wait_until="networkidle")
    shoot(alone, shots, "lineage")
    alone.close()
    train = frame.locator("[data-step=train]")
    with page.context.expect_page() as opened:
        train.get_by_role("link", name="MLflow run").click()
    mlflow = opened.value
    mlflow.wait_for_load_state("load")
    assert mlflow.url.startswith(stack.mlflow.tracking_uri)
    mlflow.get_by_text("train", exact=True).first.wait_for(timeout=60_000)
    mlflow.wait_for_timeout(2000)
    shoot(mlflow, shots, "mlflow-run", settle=False)
    mlflow.close()
    train.get_by_role("link", name="task try 1").click()
    page.wait_for_url("**/dags/mlops_training/runs/approved_run/tasks/train**", timeout=60_000)
    shoot(page, shots, "task-try")


def test_rejecting_a_pending_promotion_is_recorded_and_promotes_nothing(page: Any, stack: Stack, shots: Path) -> None:
    respond(page, stack, shots, "rejected_run", "Reject", "not before the audit")
    assert wait_for(stack, "rejected_run", "promote", ("skipped",))["approve"] == "success"
    frame = open_models_view(page, stack)
    frame.get_by_role("link", name=MODEL).click()
    reviews = frame.locator("table").filter(has_text="reviewer").first
    reviews.wait_for()
    rows = [row.inner_text() for row in reviews.locator("tbody tr").all()]
    assert any("rejected" in r and "admin" in r and "not before the audit" in r for r in rows), rows
    assert any("approved" in r and "better recall" in r for r in rows), rows
    versions = frame.locator("table").first.locator("tbody tr")
    assert versions.count() == 1, "a rejected promotion registers nothing"
    shoot(page, shots, "model-after-reject")
