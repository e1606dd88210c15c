"""Run a DAG of the demo under ``airflow dags test`` and follow it in Airflow's metadata database.

The run's outcome (the DagRun's state, each task instance's state, try and duration, each step's result
manifest from XCom) is read from the database, never from the command's output. The one thing Airflow
does not record there is the message of a failed task, so that alone is taken from the task's exception
line in the run's own output (the operator raises ``step NAME failed: <the step's one-line error>``).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlops_ops.demo.embedded import AirflowProcess, log_since, start_airflow
from mlops_ops.demo.runstate import MetadataDB, RunState, TaskState
from mlops_ops.demo.summary import Champion, Outcome, step_line
from mlops_ops.errors import InfraError
from mlops_ops.specs import DEFAULT_GATES

#: Seconds between two looks at the metadata database while a run goes on.
POLL_SECONDS = 0.25


def warm_mlflow() -> threading.Thread:
    """Import MLflow in the background while Airflow works, so reading the registry afterwards is quick."""

    def load() -> None:
        import contextlib

        with contextlib.suppress(Exception):
            import mlflow  # noqa: F401

    thread = threading.Thread(target=load, name="warm-mlflow", daemon=True)
    thread.start()
    return thread


def run_dag(
    env: dict[str, str],
    dag_id: str,
    conf: dict[str, Any],
    log: Path,
    echo: Callable[[str], None],
    on_start: Callable[[], None] | None = None,
    on_finished: Callable[[AirflowProcess], None] | None = None,
) -> tuple[RunState, dict[str, TaskState], str]:
    """``airflow dags test DAG -c CONF``, echoing a line per step as it starts and ends.

    :param on_start: called once when the run is recorded (the folder's DAGs are in the database by then).
    :param on_finished: given the command while it is still shutting down (1-2 s after its run finished),
        when every task succeeded: the caller reads the outcome meanwhile and must wait for it. Without
        it, or when a task did not succeed (its error line is in the output), this waits for the command.
    :returns: the recorded run, its task instances, and the run's part of the output (for error lines).
    """
    db = MetadataDB(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    before = db.last_run_number(dag_id)
    offset = log.stat().st_size if log.exists() else 0
    with log.open("a") as out:
        process = start_airflow(env, ["dags", "test", dag_id, "-c", json.dumps(conf)], out)
        try:
            run = _follow(db, dag_id, before, process, log, offset, echo, on_start)
        except BaseException:
            if not isinstance(process, subprocess.Popen):  # a warm fork is not this process's child: stop it here
                process.kill()
            raise
    final = (db.run(dag_id, run.run_id) or run) if run is not None else None
    tasks = db.tasks(dag_id, final.run_id) if final is not None else {}
    if on_finished is None or final is None or any(t.state != "success" for t in tasks.values()):
        process.wait()
    elif process.poll() is None:
        on_finished(process)
    output = log_since(log, offset)
    if final is None:
        raise InfraError(f"airflow dags test {dag_id} ended with code {process.returncode} without a run; see {log}")
    return final, tasks, output


def _follow(
    db: MetadataDB,
    dag_id: str,
    before: int,
    process: AirflowProcess,
    log: Path,
    offset: int,
    echo: Callable[[str], None],
    on_start: Callable[[], None] | None = None,
) -> RunState | None:
    """Poll the database until the command ends or its run has finished, echoing each change of a task's state."""
    run: RunState | None = None
    shown: dict[str, tuple[str | None, int]] = {}
    while True:
        ended = process.poll() is not None
        if run is None:
            run = db.run_after(dag_id, before)
            if run is not None and on_start is not None:
                on_start()
        tasks = db.tasks(dag_id, run.run_id) if run is not None else {}
        if run is not None:
            for task in tasks.values():
                if shown.get(task.task_id) != (task.state, task.try_number) and task.state is not None:
                    previous = shown.get(task.task_id)
                    shown[task.task_id] = (task.state, task.try_number)
                    started = task.try_number > 0 and task.state != "upstream_failed"
                    if task.finished and started and previous != ("running", task.try_number):
                        # It started and ended between two looks: its start still gets its line.
                        echo(step_line(replace(task, state="running"), None, None))
                    if task.state in ("running", "up_for_retry") or task.finished:
                        echo(_line(db, run, task, log, offset))
        if ended or (run is not None and _run_over(db, run, tasks, shown)):
            return run
        time.sleep(POLL_SECONDS)


def _run_over(
    db: MetadataDB, run: RunState, tasks: dict[str, TaskState], shown: dict[str, tuple[str | None, int]]
) -> bool:
    """Whether the run is recorded as finished, with every task's final state (``tasks``) already echoed."""
    now = db.run(run.dag_id, run.run_id)
    if now is None or now.state not in ("success", "failed"):
        return False
    return all(t.finished and shown.get(t.task_id) == (t.state, t.try_number) for t in tasks.values())


def _line(db: MetadataDB, run: RunState, task: TaskState, log: Path, offset: int) -> str:
    result = db.result(run.dag_id, run.run_id, task.task_id) if task.state == "success" else None
    reused = _reused(db, run, task.task_id) if result is not None else None
    error = task_error(log_since(log, offset), task.task_id) if task.finished else None
    return step_line(task, result, error, reused)


def _reused(db: MetadataDB, run: RunState, task_id: str) -> str | None:
    """Whose result the task reused instead of running its step (None if it ran it)."""
    from mlops_ops.context import REUSED_XCOM

    origin = db.xcom(run.dag_id, run.run_id, task_id, REUSED_XCOM)
    return str(origin) if origin else None


def task_error(output: str, task_id: str) -> str | None:
    """The one-line error of a failed or skipped step: the message of the exception its operator raised.

    A step that ran says ``step NAME failed: <its error>``; a task that failed before its step started (a
    spec the operator refused, say) is known by the last exception line between its start and its end.
    """
    marker = f"step {task_id} failed: "
    found = None
    for line in output.splitlines():
        if "Exception: " + marker in line:
            found = line.split(marker, 1)[1].strip()
    if found is None:
        starts = output.rsplit(f"[DAG TEST] starting task_id={task_id} ", 1)
        section = starts[1].split(f"[DAG TEST] end task task_id={task_id} ", 1)[0] if len(starts) == 2 else ""
        for line in section.splitlines():
            raised = _RAISED.match(line)
            if raised:
                found = raised[1].strip()
    return found


#: The last line of a traceback: ``package.module.SomeError: message``.
_RAISED = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Exception|Error): (.+)$")


def outcome(
    env: dict[str, str],
    run: RunState,
    tasks: dict[str, TaskState],
    output: str,
    conf: dict[str, Any],
    defaults: dict[str, Any],
) -> Outcome:
    """Everything recorded about the run: task states, result manifests, errors, and the registry now."""
    db = MetadataDB(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    results = {t: r for t in tasks if (r := db.result(run.dag_id, run.run_id, t)) is not None}
    reused = {t: origin for t in results if (origin := _reused(db, run, t))}
    errors = {
        t.task_id: e
        for t in tasks.values()
        if t.state in ("failed", "skipped") and (e := task_error(output, t.task_id))
    }
    settings = defaults | conf
    champion = read_champion(
        str(settings.get("registered_model", "churn-classifier")),
        str(settings.get("promotion_policy", "champion")),
        (results.get("evaluate") or {}).get("champion_version"),
    )
    gate_metric = settings.get("gate_metric") or DEFAULT_GATES[str(settings.get("task") or "classification")][0]
    return Outcome(run, tasks, results, errors, champion, str(gate_metric), reused)


def read_champion(model: str, alias: str, compared: str | None) -> Champion | None:
    """Where ``alias`` points in MLflow's registry now, and the metrics recorded on the versions concerned."""
    from mlops_ops.lineage import tags as t
    from mlops_ops.lineage.registry import version_by_alias, version_tags
    from mlops_ops.settings import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return Champion(model, alias, None)  # nothing was ever tracked in this home

    def recorded(tags: dict[str, str]) -> dict[str, float]:
        prefix = t.metric("")
        return {k.removeprefix(prefix): float(v) for k, v in tags.items() if k.startswith(prefix)}

    found = version_by_alias(model, alias)
    now = recorded(dict(found.tags)) if found is not None else {}
    before = recorded(version_tags(model, compared)) if compared else {}
    return Champion(model, alias, str(found.version) if found is not None else None, now, before)
