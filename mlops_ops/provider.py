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
            {"integration-name": "mlops-ops", "python-modules": ["mlops_ops.operators.steps", "mlops_ops.operators.base"]}
        ],
    }
