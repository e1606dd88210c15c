"""The Models view's FastAPI app: read-only pages over MLflow lineage, behind Airflow's auth manager.

Every route requires a signed-in Airflow user allowed to see the website (``AccessView.WEBSITE``): the
UI's session cookie or a bearer token, checked by the same dependency the core API uses. Nothing is
written from a request. MLflow is found as the steps find it: ``$MLFLOW_TRACKING_URI``, else the
``mlflow_default`` connection, else the embedded default.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPBearer

if TYPE_CHECKING:
    from collections.abc import Callable

#: Seconds a browser may cache a report image (images of a run never change).
IMAGE_MAX_AGE = 3600


async def _allowed(request: Request) -> None:
    """A signed-in user the auth manager lets see the website, as the core API checks it (cookie or bearer).

    Airflow's modules are imported here, on the first request, not when every component loads the plugin.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user

    credentials = await HTTPBearer(auto_error=False)(request)
    user = await get_user(request, None, credentials)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(403, "Forbidden")


@functools.cache
def _configure_mlflow() -> None:
    """Point this process at MLflow through ``mlflow_default`` when the environment names no tracking URI."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return
    from mlops_ops.connections import MLFLOW_DEFAULT_CONN_ID, mlflow_environment

    try:
        from airflow.models.connection import Connection

        conn = Connection.get_connection_from_secrets(MLFLOW_DEFAULT_CONN_ID)
    except Exception:  # no such connection: the embedded default applies
        return
    environment = mlflow_environment(conn)  # type: ignore[arg-type]
    for key, value in (environment.env | environment.secrets).items():
        os.environ.setdefault(key, value)


def _read(call: Callable[..., Any], *args: Any) -> Any:
    """Call a lineage reader; a missing thing is a 404, an unreachable MLflow a 503, both with one line."""
    from mlops_ops.errors import SpecError, TrackingError, TrackingUnavailable

    _configure_mlflow()
    try:
        return call(*args)
    except SpecError as exc:
        raise HTTPException(404, str(exc)) from None
    except TrackingUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    except TrackingError as exc:
        raise HTTPException(502, f"MLflow answered: {exc}") from None


def create_app() -> FastAPI:
    """The app Airflow mounts under ``/mlops`` (:class:`mlops_ops.ui.plugin.MlopsUiPlugin`)."""
    app = FastAPI(
        title="mlops-ops models",
        description="Registered models, alias history and lineage, read from MLflow.",
        dependencies=[Depends(_allowed)],
    )

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("models")

    @app.get("/models", response_class=HTMLResponse)
    def models() -> str:
        from mlops_ops.lineage import views
        from mlops_ops.ui import pages

        return pages.models_page(_read(views.registered_models))

    @app.get("/models/{name}", response_class=HTMLResponse)
    def model(name: str) -> str:
        from mlops_ops.lineage import views
        from mlops_ops.ui import pages

        return pages.model_page(_read(views.model_overview, name))

    @app.get("/models/{name}/versions/{version}", response_class=HTMLResponse)
    def version(name: str, version: str) -> str:
        from mlops_ops.lineage import views
        from mlops_ops.ui import pages

        found = _read(views.version_lineage, name, version)
        reports = [_read(views.run_report, card["run_id"]) for card in found["steps"] if card["report"]]
        return pages.version_page(found, reports)

    @app.get("/runs/{run_id}/report", response_class=HTMLResponse)
    def report(run_id: str) -> str:
        from mlops_ops.lineage import views
        from mlops_ops.ui import pages

        return pages.report_page(_read(views.run_report, run_id))

    @app.get("/runs/{run_id}/images/{path:path}")
    def image(run_id: str, path: str) -> Response:
        from mlops_ops.lineage import views

        data = _read(views.run_image, run_id, path)
        return Response(data, media_type="image/png", headers={"Cache-Control": f"private, max-age={IMAGE_MAX_AGE}"})

    return app
