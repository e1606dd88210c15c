"""mlops-ops: Airflow-native operators for the ML lifecycle, with lineage in MLflow."""

from __future__ import annotations

__version__ = "0.1.0"
