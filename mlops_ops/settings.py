"""Where the embedded default keeps its state, which local files a spec may read, and the input limits."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "MLOPS_HOME"
ARTIFACT_ROOT_ENV = "MLOPS_ARTIFACT_ROOT"
#: Folders (``os.pathsep``-separated) under which a spec may name local files; set by the deployment.
DATA_ROOTS_ENV = "MLOPS_DATA_ROOTS"

#: Largest spec the CLI accepts, in bytes of JSON (an inline ``--spec`` or an ``@file``).
MAX_SPEC_BYTES = 1024 * 1024
#: Deepest nesting of lists and objects the CLI accepts in a spec.
MAX_SPEC_DEPTH = 64
#: Longest error line the CLI prints, in characters; longer messages are cut with a count of what was cut.
MAX_ERROR_LINE = 500


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


def default_data_roots() -> list[Path]:
    """The data roots when ``$MLOPS_DATA_ROOTS`` is unset: the working directory, the home, the demo folder.

    The working directory is left out when it is the user's home folder or one of its parents (``/`` in
    many containers), as it would then expose ``~/.ssh``, ``~/.aws`` and every system file.
    """
    from mlops_ops.demo import SUITE_PATH

    roots = [mlops_home(), SUITE_PATH.parent]
    cwd = Path.cwd()
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no passwd entry: only the filesystem root is out of bounds
        home = Path(cwd.anchor)
    if not (cwd == Path(cwd.anchor) or home == cwd or cwd in home.parents):
        roots.insert(0, cwd)
    return roots


def data_roots() -> list[Path]:
    """The folders under which a spec may name local files, symlinks resolved.

    ``$MLOPS_DATA_ROOTS`` (folders separated by ``os.pathsep``) replaces the defaults of
    :func:`default_data_roots`. It is a deployment setting: a run or a spec cannot change it.
    """
    configured = os.environ.get(DATA_ROOTS_ENV)
    if configured is None:
        roots = default_data_roots()
    else:
        roots = [Path(entry).absolute() for entry in configured.split(os.pathsep) if entry.strip()]
    return [root.resolve() for root in roots]
