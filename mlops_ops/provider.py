"""Provider metadata, so ``airflow providers list`` shows mlops-ops (read through an entry point)."""

from __future__ import annotations

from typing import Any

from mlops_ops import __version__


def get_provider_info() -> dict[str, Any]:
    """The provider description Airflow reads from the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "mlops-ops",
        "name": "mlops-ops",
        "description": "ML lifecycle operators (ingest, validate, train, evaluate, promote) with MLflow lineage.",
        "versions": [__version__],
        "operators": [
            {
                "integration-name": "mlops-ops",
                "python-modules": [
                    "mlops_ops.operators.steps",
                    "mlops_ops.operators.base",
                    "mlops_ops.operators.approval",
                ],
            }
        ],
        "hooks": [{"integration-name": "mlops-ops", "python-modules": ["mlops_ops.connections"]}],
        # Buttons on every step task (MLflow run, model version, reports); the Models view is the plugin
        # registered through the ``airflow.plugins`` entry point (mlops_ops.ui.plugin).
        "extra-links": [
            "mlops_ops.operators.links.MlflowRunLink",
            "mlops_ops.operators.links.ModelVersionLink",
            "mlops_ops.operators.links.ValidationReportLink",
            "mlops_ops.operators.links.EvaluationPlotsLink",
            "mlops_ops.operators.links.DriftReportLink",
        ],
        # Declared here (not by hook methods) so the UI builds the form without importing the hook.
        "connection-types": [
            {
                "hook-class-name": "mlops_ops.connections.MlflowHook",
                "hook-name": "MLflow tracking server",
                "connection-type": "mlflow",
                "conn-fields": {
                    "token": {
                        "label": "Token",
                        "description": "Bearer token (MLFLOW_TRACKING_TOKEN), instead of login and password.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "insecure_tls": {
                        "label": "Skip TLS verification",
                        "schema": {"type": ["boolean", "null"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {"host": "Tracking URI", "login": "Username", "password": "Password"},
                    "placeholders": {"host": "http://mlflow:5000"},
                },
            }
        ],
    }
