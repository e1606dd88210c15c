"""Where the embedded default keeps its state, and how the environment overrides it."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "MLOPS_HOME"
ARTIFACT_ROOT_ENV = "MLOPS_ARTIFACT_ROOT"


def mlops_home() -> Path:
    """The folder for embedded state: ``$MLOPS_HOME``, or ``.mlops/`` in the working directory."""
    return Path(os.environ.get(HOME_ENV) or ".mlops").absolute()


def artifact_root() -> str:
    """Root URI of the artifact store: ``$MLOPS_ARTIFACT_ROOT`` or a folder under the home."""
    return os.environ.get(ARTIFACT_ROOT_ENV) or (mlops_home() / "artifacts").as_uri()


def tracking_uri() -> str:
    """MLflow tracking URI: ``$MLFLOW_TRACKING_URI`` or a SQLite database under the home."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlops_home() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    """Where new MLflow experiments keep artifacts when the tracking URI is a local database."""
    return os.environ.get("MLOPS_MLFLOW_ARTIFACT_ROOT") or (mlops_home() / "mlartifacts").as_uri()
