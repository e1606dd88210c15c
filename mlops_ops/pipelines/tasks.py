"""Two pipeline tasks built on :class:`~mlops_ops.operators.StepOperator`: the retraining gate and drift.

- :class:`GateOperator` runs the ``gate`` step; when it says no, the tasks downstream are skipped and the
  reason goes to the task log and the DAG run's note.
- :class:`DriftOperator` runs the ``drift`` step; when it advises retraining, it emits an event on the
  model's ``retrain-request`` Asset (through the ``retrain-requests`` alias) with the drift summary as
  ``extra``. It never triggers a DAG itself: whoever schedules on the Asset decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import DownstreamTasksSkipped

from mlops_ops.operators import StepOperator
from mlops_ops.pipelines.assets import retrain_request, retrain_requests

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The Airflow connection (type ``http``: the API's base URL, a user and password) used to write DAG run
#: notes through the public REST API; the Task SDK of Airflow 3.3 has no call that sets the note.
NOTE_CONN_ID = "airflow_api"
NOTE_MAX = 1000


class GateOperator(StepOperator):
    """The ``gate`` step; a "no" skips every task downstream and is written to the DAG run's note.

    :param spec: The gate spec (:class:`mlops_ops.specs.gate.GateSpec`). (templated)
    :param note_conn_id: Airflow connection of the REST API used to set the note; the note is skipped,
        with a log line, when the connection does not exist (``airflow dags test``).
    """

    ui_color = "#fde68a"

    def __init__(self, *, spec: dict[str, Any], note_conn_id: str | None = NOTE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(step="gate", spec=spec, **kwargs)
        self.note_conn_id = note_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        return self._decided(super().execute(context), context)

    def trigger_reentry(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        return self._decided(super().trigger_reentry(context, event), context)

    def _decided(self, result: dict[str, Any], context: Context) -> dict[str, Any]:
        model = result.get("registered_model", "")
        if result.get("go"):
            self.log.info("gate: train %s - %s", model, result.get("reason"))
            self._note(context, f"gate: training {model}: {result.get('reason')}")
            return result
        self.log.info("gate: do not train %s - %s; the tasks downstream are skipped", model, result.get("reason"))
        self._note(context, f"gate: not training {model}: {result.get('reason')}")
        context["ti"].xcom_push("return_value", result)
        downstream = [t.task_id for t in self.get_flat_relatives(upstream=False) if not t.is_teardown]
        raise DownstreamTasksSkipped(tasks=downstream)

    def _note(self, context: Context, note: str) -> None:
        """Set the DAG run's note through the REST API (best effort: a note is never worth failing a run)."""
        if not self.note_conn_id:
            return
        try:
            set_dag_run_note(self.note_conn_id, self.dag_id, str(context["run_id"]), note[:NOTE_MAX])
        except Exception as exc:  # a missing connection or an API that is down: say so and go on
            self.log.info("the DAG run's note was not set (%s: %s)", type(exc).__name__, str(exc)[:300])


def set_dag_run_note(conn_id: str, dag_id: str, run_id: str, note: str) -> None:
    """``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}`` with the note, signed in with the connection's user."""
    import httpx
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    base = (conn.host or "").rstrip("/")
    if not base.startswith(("http://", "https://")):
        base = f"{conn.schema or 'http'}://{base}" + (f":{conn.port}" if conn.port else "")
    with httpx.Client(timeout=30) as http:
        token = http.post(f"{base}/auth/token", json={"username": conn.login, "password": conn.password})
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        done = http.patch(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run_id}", json={"note": note}, headers=headers)
        done.raise_for_status()


class DriftOperator(StepOperator):
    """The ``drift`` step; when it advises retraining, an event on ``retrain-request/<model>`` with the summary.

    :param spec: The drift spec (:class:`mlops_ops.specs.monitoring.DriftSpec`). (templated)
    :param data_uri: The batch that was scored, passed on in the request so a retraining can use it
        when it is labelled. (templated)
    """

    template_fields: Sequence[str] = (*StepOperator.template_fields, "data_uri")
    ui_color = "#fce7f3"

    def __init__(self, *, spec: dict[str, Any], data_uri: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [retrain_requests()])
        super().__init__(step="drift", spec=spec, **kwargs)
        self.data_uri = data_uri

    def execute(self, context: Context) -> dict[str, Any]:
        return self._requested(super().execute(context), context)

    def trigger_reentry(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        return self._requested(super().trigger_reentry(context, event), context)

    def _requested(self, result: dict[str, Any], context: Context) -> dict[str, Any]:
        model = result.get("registered_model")
        if not result.get("retrain_advised") or not model:
            self.log.info("drift share %.3f: no retraining advised", float(result.get("drift_share") or 0.0))
            return result
        extra = drift_summary(result, self.data_uri, self.dag_id, str(context["run_id"]))
        context["outlet_events"][retrain_requests()].add(retrain_request(model), extra=extra)
        self.log.info("retraining of %s requested: %s", model, "; ".join(result.get("reasons") or []))
        return result


def drift_summary(result: dict[str, Any], data_uri: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """The ``extra`` of a retrain request: small, JSON, enough for a human and for the retraining run."""
    return {
        "registered_model": result.get("registered_model"),
        "version": result.get("version"),
        "drift_share": result.get("drift_share"),
        "drifted_columns": list(result.get("drifted_columns") or [])[:50],
        "reasons": [str(r)[:300] for r in (result.get("reasons") or [])][:10],
        "data_uri": data_uri or (result.get("current") or {}).get("uri"),
        "report_uri": result.get("report_uri"),
        "requested_by": f"{dag_id}/{run_id}",
    }
