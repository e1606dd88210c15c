"""What Airflow recorded about a DAG run, read from its metadata database: the run, its task instances, their XComs.

The demo reads these while ``airflow dags test`` runs (for live progress) and after it (for the summary),
with plain SQL through SQLAlchemy, so it needs neither Airflow's import (5 s) nor its ORM. Only columns
that Airflow 3's ``dag_run``, ``task_instance``, ``xcom`` and ``dag`` tables have had since 3.0 are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

#: Task instance states after which a task will not change in this run (``up_for_retry`` will).
FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


@dataclass(frozen=True)
class TaskState:
    """One task instance of a run, as recorded."""

    task_id: str
    state: str | None
    try_number: int
    start_date: datetime | None
    end_date: datetime | None
    duration: float | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


@dataclass(frozen=True)
class RunState:
    """A DAG run, as recorded."""

    dag_id: str
    run_id: str
    state: str
    start_date: datetime | None
    end_date: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.start_date is None or self.end_date is None:
            return None
        return (self.end_date - self.start_date).total_seconds()


def _datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


class MetadataDB:
    """Read-only queries on an Airflow metadata database given by its SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        self.url = url

    @cached_property
    def engine(self) -> Any:
        from sqlalchemy import create_engine

        return create_engine(self.url)

    def _rows(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as connection:
            return list(connection.execute(text(sql), params))

    def last_run_number(self, dag_id: str) -> int:
        """The largest ``dag_run.id`` of ``dag_id`` so far (0 if none): later runs have larger ones."""
        rows = self._rows("SELECT MAX(id) FROM dag_run WHERE dag_id = :dag_id", dag_id=dag_id)
        return int(rows[0][0] or 0)

    def run_after(self, dag_id: str, number: int) -> RunState | None:
        """The first run of ``dag_id`` created after run number ``number``, if there is one yet."""
        rows = self._rows(
            "SELECT run_id FROM dag_run WHERE dag_id = :dag_id AND id > :number ORDER BY id LIMIT 1",
            dag_id=dag_id,
            number=number,
        )
        return self.run(dag_id, rows[0][0]) if rows else None

    def run(self, dag_id: str, run_id: str) -> RunState | None:
        rows = self._rows(
            "SELECT state, start_date, end_date FROM dag_run WHERE dag_id = :dag_id AND run_id = :run_id",
            dag_id=dag_id,
            run_id=run_id,
        )
        if not rows:
            return None
        state, start, end = rows[0]
        return RunState(dag_id, run_id, str(state), _datetime(start), _datetime(end))

    def tasks(self, dag_id: str, run_id: str) -> dict[str, TaskState]:
        """The run's task instances by task id (unmapped tasks: ``map_index`` -1)."""
        rows = self._rows(
            "SELECT task_id, state, try_number, start_date, end_date, duration FROM task_instance "
            "WHERE dag_id = :dag_id AND run_id = :run_id AND map_index = -1",
            dag_id=dag_id,
            run_id=run_id,
        )
        return {
            task_id: TaskState(task_id, state, int(tries or 0), _datetime(start), _datetime(end), duration)
            for task_id, state, tries, start, end, duration in rows
        }

    def result(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
        """The task's ``return_value`` XCom (a step's result manifest), if it pushed one."""
        value = self.xcom(dag_id, run_id, task_id, "return_value")
        return value if isinstance(value, dict) else None

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str) -> Any:
        """The value the task pushed under ``key`` (None if it pushed none)."""
        rows = self._rows(
            "SELECT value FROM xcom WHERE dag_id = :dag_id AND run_id = :run_id AND task_id = :task_id "
            "AND key = :key AND map_index = -1",
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            key=key,
        )
        if not rows or rows[0][0] is None:
            return None
        value = rows[0][0]
        # A JSON column: the driver of PostgreSQL returns the object, SQLite's returns its text.
        return json.loads(value) if isinstance(value, str | bytes) else value

    def paused(self, dag_ids: list[str]) -> list[str]:
        """Those of ``dag_ids`` that are paused."""
        rows = self._rows("SELECT dag_id, is_paused FROM dag")
        return [dag_id for dag_id, is_paused in rows if dag_id in dag_ids and is_paused]


def stored_results(
    pipeline: str, run_id: str, steps: tuple[str, ...] | list[str], tries: dict[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """Each step's result manifest of a pipeline run, read back from the artifact store (``MLOPS_ARTIFACT_ROOT``).

    :param tries: The try number of each step (from its task instance); without it, the latest stored try.
        Steps without a stored result (not run, failed, or a task that is not a step) are left out.
    """
    from mlops_ops.context import RunContext
    from mlops_ops.settings import artifact_root
    from mlops_ops.store import Store

    store = Store(artifact_root())
    found: dict[str, dict[str, Any]] = {}
    for step in steps:
        candidates = [tries[step]] if tries and step in tries else list(range(10, 0, -1))
        for attempt in candidates:
            uri = store.uri(RunContext(pipeline=pipeline, run_id=run_id, step=step, try_number=attempt).result_key())
            if store.exists(uri):
                found[step] = json.loads(store.get_bytes(uri))
                break
    return found
