"""Warm executor settings: its switches, the socket folder, the preload list and which parent serves a task."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

#: ``0`` (or ``false``/``no``/``off``) turns the warm executor off: every step starts a cold process.
ENABLED_ENV = "MLOPS_WARM_EXECUTOR"
#: Seconds without a step after which the warm parent exits.
IDLE_ENV = "MLOPS_WARM_IDLE_SECONDS"
#: Folder of the warm parent's socket, lock and log.
DIR_ENV = "MLOPS_WARM_DIR"
#: How long a task waits for a starting warm parent before it runs its step cold.
START_ENV = "MLOPS_WARM_START_SECONDS"
#: Comma-separated modules the warm parent imports (default: :data:`PRELOAD`).
PRELOAD_ENV = "MLOPS_WARM_PRELOAD"

#: What the built-in steps import, measured with ``-X importtime`` (docs/performance.md), in the order the
#: training pipeline first needs them (ingest, validate, train, evaluate): the parent forks a step between
#: two imports, so the first run on a machine starts its ingest once the modules ingest uses are loaded.
PRELOAD = (
    "click",
    "pydantic",
    "pandas",
    "pyarrow.parquet",
    "pyarrow.csv",
    "pyarrow.compute",
    "mlflow",
    "mlflow.data.pandas_dataset",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "great_expectations",
    "sklearn.ensemble",
    "sklearn.compose",
    "sklearn.impute",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "mlflow.sklearn",
    "mlflow.models",
    "matplotlib.pyplot",
)
#: What a warm parent of ``airflow dags test`` imports (the kind ``airflow``; :mod:`.airflow_commands` builds the rest).
AIRFLOW_PRELOAD = (
    "airflow",
    "airflow.cli.cli_parser",
    "airflow.cli.commands.dag_command",
    "airflow.sdk.execution_time.supervisor",
)
#: What differs between homes, for the kind ``airflow``: one parent serves them all (see :mod:`.airflow_commands`).
AIRFLOW_HOME_ENV = (
    "AIRFLOW_HOME",
    "AIRFLOW_CONFIG",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
)
#: The kinds of warm parent: ``step`` forks ``mlops-ops step`` processes, ``airflow`` forks ``airflow`` commands.
KINDS = ("step", "airflow")
#: Seconds without a command after which a warm parent of the kind ``airflow`` exits (it serves one home).
AIRFLOW_IDLE_ENV = "MLOPS_WARM_AIRFLOW_IDLE_SECONDS"

#: Environment read while modules are imported (so fixed in a warm parent): parents differ by these.
IMPORT_TIME_PREFIXES = (
    "PYTHON", "LD_", "OMP_", "OPENBLAS_", "MKL_", "KMP_", "GOTO", "BLIS_", "NUMEXPR_", "SKLEARN_",
    "MPL", "ARROW_", "JE_", "MALLOC_", "GX_", "GE_", "SCIPY_", "NUMPY_", "TZ", "LANG", "LC_",
)  # fmt: skip
#: Set in every step's environment by the local runner; the child re-opens its streams to match.
_EMULATED = {"PYTHONUNBUFFERED"}

#: The warm parent's own log; a forked child detaches it again (:func:`~.child.become_step`).
log = logging.getLogger("mlops_ops.runners.warm")


class WarmUnavailable(Exception):
    """The warm parent cannot run this step (off, not started in time, gone): run it cold instead."""


def enabled(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether the deployment allows the warm executor (``$MLOPS_WARM_EXECUTOR``, on by default on Linux)."""
    value = (environ if environ is not None else os.environ).get(ENABLED_ENV, "1").strip().lower()
    supported = hasattr(os, "pidfd_open") and hasattr(socket, "AF_UNIX") and hasattr(socket, "SO_PEERCRED")
    return supported and value not in {"0", "false", "no", "off", ""}


def runtime_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """The folder of warm parents' sockets, created private (0700) and refused if anyone else can use it.

    :param environ: The environment of the command to run (``$MLOPS_WARM_DIR``, ``$XDG_RUNTIME_DIR``); this
        process's by default.
    """
    environ = environ if environ is not None else os.environ
    configured = environ.get(DIR_ENV)
    if configured:
        folder = Path(configured)
    elif environ.get("XDG_RUNTIME_DIR"):
        folder = Path(environ["XDG_RUNTIME_DIR"]) / "mlops-ops"
    else:
        folder = Path(tempfile.gettempdir()) / f"mlops-ops-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not folder.is_dir() or folder.is_symlink():
        raise WarmUnavailable(f"{folder} must be a folder of this user with mode 0700")
    return folder


def import_time_env(env: dict[str, str], kind: str = "step") -> dict[str, str]:
    """The variables of ``env`` that libraries read when imported (so a warm parent is fixed to them).

    Airflow reads its whole configuration (``AIRFLOW__*``) when imported, so a parent of the kind
    ``airflow`` is fixed to those too, except the home's own settings (:data:`AIRFLOW_HOME_ENV`), which
    its children point at their command's home.
    """
    airflow = kind == "airflow"
    prefixes: tuple[str, ...] = (*IMPORT_TIME_PREFIXES, "AIRFLOW") if airflow else IMPORT_TIME_PREFIXES
    skipped = {*_EMULATED, *AIRFLOW_HOME_ENV} if airflow else _EMULATED
    return {k: v for k, v in env.items() if k.startswith(prefixes) and k not in skipped}


def airflow_base_env(folder: Path, key: str) -> dict[str, str]:
    """The private home a warm parent of the kind ``airflow`` imports Airflow for (it writes nothing there)."""
    base = folder / f"airflow-{key}"
    return {
        "AIRFLOW_HOME": str(base),
        "AIRFLOW__CORE__DAGS_FOLDER": str(base / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{base / 'airflow.db'}",
    }


def _code_stamp() -> list[str]:
    """What identifies the parent's code: every module of this package and the installed packages' folder.

    Every module here is, as the parent runs their code from memory. The rest of mlops_ops is not: the
    parent preloads only other packages, and each child imports mlops_ops afresh (see
    :func:`~.child.become_step`), so editing it never serves stale code.
    """
    package = Path(__file__).resolve().parent
    site = Path(importlib.import_module("click").__file__ or ".").resolve().parent.parent
    modules = [f"{path}:{path.stat().st_mtime_ns}" for path in sorted(package.glob("*.py"))]
    return [*modules, f"site:{site}:{site.stat().st_mtime_ns}"]


def parent_key(env: dict[str, str], preload: tuple[str, ...], kind: str = "step") -> str:
    """One warm parent per kind, interpreter, installed code, import-time environment and preload list.

    A parent of the kind ``airflow`` serves every home (see :mod:`.airflow_commands`).
    """
    parts = [kind, sys.executable, sys.version, *_code_stamp(), json.dumps(import_time_env(env, kind), sort_keys=True)]
    return hashlib.sha256("\n".join([*parts, *preload]).encode()).hexdigest()[:20]


def preload_modules(environ: dict[str, str] | os._Environ[str] | None = None, kind: str = "step") -> tuple[str, ...]:
    """The modules a warm parent imports: ``$MLOPS_WARM_PRELOAD`` (comma-separated), else :data:`PRELOAD`;
    :data:`AIRFLOW_PRELOAD` for the kind ``airflow``."""
    if kind == "airflow":
        return AIRFLOW_PRELOAD
    configured = (environ if environ is not None else os.environ).get(PRELOAD_ENV)
    if configured is None:
        return PRELOAD
    return tuple(m.strip() for m in configured.split(",") if m.strip())
