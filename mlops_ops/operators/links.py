"""Operator extra links: each step task links to what it made (MLflow run, model version, reports, plots).

Airflow 3 computes a link once, in the worker, when the task finishes (``get_link`` with the task's key)
and keeps it in XCom; the UI shows it as a button on the task instance. Every link here is read from the
task's own result manifest (its ``return_value`` XCom); a task without the thing a link names gets an
empty link, which the UI shows disabled.

Where links point:

- MLflow's UI: ``$MLOPS_MLFLOW_UI_URL``, else the host of the ``mlflow_default`` connection when it is an
  ``http(s)`` URL, else :data:`DEFAULT_MLFLOW_UI_URL` (``make mlflow-ui``);
- the package's report pages (:mod:`mlops_ops.ui`), under Airflow's ``[api] base_url``.

This module is imported when DAG files are parsed: it imports nothing heavy.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

MLFLOW_UI_URL_ENV = "MLOPS_MLFLOW_UI_URL"
#: MLflow's UI as ``make mlflow-ui`` serves it for the embedded default.
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
#: Where :mod:`mlops_ops.ui` is mounted in Airflow's API server.
UI_PREFIX = "/mlops"


# ---------------------------------------------------------------------------------------------- bases


def mlflow_ui_url(conn_id: str | None = "mlflow_default") -> str:
    """Base URL of MLflow's UI: the setting, else an ``http(s)`` host of the connection, else the default."""
    configured = os.environ.get(MLFLOW_UI_URL_ENV, "").strip()
    if configured:
        return configured.rstrip("/")
    host = _connection_url(conn_id) if conn_id else None
    if host and host.startswith(("http://", "https://")):
        return host.rstrip("/")
    return DEFAULT_MLFLOW_UI_URL


def _connection_url(conn_id: str) -> str | None:
    from mlops_ops.connections import connection_url, get_connection

    try:
        conn = get_connection(conn_id, required=False)
    except Exception:  # no connection backend here (a unit test): the default applies
        return None
    return connection_url(conn) if conn is not None else None


def airflow_base_url() -> str:
    """Airflow's ``[api] base_url`` without a trailing slash; empty (links relative to the UI) when unset."""
    configured = os.environ.get("AIRFLOW__API__BASE_URL")
    if configured is None:
        try:
            from airflow.configuration import conf

            configured = conf.get("api", "base_url", fallback="")
        except Exception:  # configuration not readable in this process: relative links still work in the UI
            configured = ""
    return (configured or "").rstrip("/")


# ----------------------------------------------------------------------------------------------- URLs


def mlflow_run_url(base: str, run_id: str) -> str:
    """MLflow's page of a run (its UI redirects ``#/runs/<id>`` to the run in its experiment)."""
    return f"{base}/#/runs/{quote(run_id, safe='')}"


def mlflow_version_url(base: str, name: str, version: str) -> str:
    """MLflow's page of one registered model version."""
    return f"{base}/#/models/{quote(name, safe='')}/versions/{quote(str(version), safe='')}"


def report_url(base: str, run_id: str) -> str:
    """The package's report page of a step run: its report rendered, with its plots inline."""
    return f"{base}{UI_PREFIX}/runs/{quote(run_id, safe='')}/report"


def version_url(base: str, name: str, version: str) -> str:
    """The package's lineage page of one model version."""
    return f"{base}{UI_PREFIX}/models/{quote(name, safe='')}/versions/{quote(str(version), safe='')}"


# ---------------------------------------------------------------------------------------------- links


def _manifest(ti_key: TaskInstanceKey) -> dict[str, Any]:
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_value(ti_key=ti_key, key="return_value")
    return value if isinstance(value, dict) else {}


class _ManifestLink(BaseOperatorLink):
    """A link built from the task's result manifest; empty when the manifest has nothing for it."""

    name: ClassVar[str] = ""  # type: ignore[misc]
    steps: ClassVar[tuple[str, ...]] = ()

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        manifest = _manifest(ti_key)
        if self.steps and manifest.get("step") not in self.steps:
            return ""
        return self.url(manifest, getattr(operator, "mlflow_conn_id", "mlflow_default"))

    def url(self, manifest: dict[str, Any], conn_id: str | None) -> str:
        raise NotImplementedError


class MlflowRunLink(_ManifestLink):
    """The step's MLflow run."""

    name = "MLflow run"

    def url(self, manifest: dict[str, Any], conn_id: str | None) -> str:
        run_id = manifest.get("mlflow_run_id")
        return mlflow_run_url(mlflow_ui_url(conn_id), run_id) if run_id else ""


class ModelVersionLink(_ManifestLink):
    """The registered model version a promotion made (MLflow's page of it)."""

    name = "Model version"
    steps = ("promote",)

    def url(self, manifest: dict[str, Any], conn_id: str | None) -> str:
        name, version = manifest.get("model_name"), manifest.get("version")
        return mlflow_version_url(mlflow_ui_url(conn_id), name, version) if name and version else ""


class _ReportLink(_ManifestLink):
    def url(self, manifest: dict[str, Any], conn_id: str | None) -> str:
        run_id = manifest.get("mlflow_run_id")
        return report_url(airflow_base_url(), run_id) if run_id else ""


class ValidationReportLink(_ReportLink):
    """The validation report of a validate step."""

    name = "Validation report"
    steps = ("validate",)


class EvaluationPlotsLink(_ReportLink):
    """The evaluation report and its plots (confusion matrices, ROC, residuals)."""

    name = "Evaluation plots"
    steps = ("evaluate",)


class DriftReportLink(_ReportLink):
    """The drift report and its per-column plots."""

    name = "Drift report"
    steps = ("drift",)


#: The links every step task offers (``MlopsStepOperator.operator_extra_links``).
STEP_LINKS: tuple[BaseOperatorLink, ...] = (
    MlflowRunLink(),
    ModelVersionLink(),
    ValidationReportLink(),
    EvaluationPlotsLink(),
    DriftReportLink(),
)
