"""Demo data shipped with mlops-ops: a customer-churn table in three variants and its expectation suite.

Only paths live here, so a DAG file can point at the demo data without importing numpy or pandas.
``mlops_ops.demo.generate`` rebuilds the files.
"""

from __future__ import annotations

from pathlib import Path

#: Folder with ``churn.csv``, ``churn_drift.csv`` and ``churn_corrupt.csv``.
DATA_DIR = Path(__file__).parent / "data"
#: The expectation suite for the churn table (Great Expectations 1.x JSON).
SUITE_PATH = Path(__file__).parent / "churn_suite.json"

__all__ = ["DATA_DIR", "SUITE_PATH"]
