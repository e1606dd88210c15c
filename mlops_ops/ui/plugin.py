"""The Airflow plugin: the Models view's FastAPI app under ``/mlops`` and its entry in the UI's navigation.

Registered through the ``airflow.plugins`` entry point, so installing mlops-ops is enough. Airflow imports
this module in every component; the app itself imports MLflow only when a page is requested.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_ops.operators.links import UI_PREFIX
from mlops_ops.ui.app import create_app


class MlopsUiPlugin(AirflowPlugin):
    """The Models view (``/mlops/models``), the report pages, and a **Models** entry under Browse."""

    name = "mlops_ops"
    fastapi_apps = [{"app": create_app(), "url_prefix": UI_PREFIX, "name": "mlops-ops models"}]
    external_views = [
        {
            "name": "Models",
            "href": f"{UI_PREFIX}/models",
            "destination": "nav",
            "category": "browse",
            "url_route": "mlops-models",
        }
    ]
