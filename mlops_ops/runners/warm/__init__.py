"""Warm step executor: a parent that has imported the step libraries forks a fresh process per step try.

A cold ``mlops-ops step`` pays for importing pandas, scikit-learn, MLflow and Great Expectations in
every process. Here one *warm parent* per user, interpreter and installed code imports them once and
then, for each step try, forks a child that runs the very command line a pod runs (same argv, same
``mlops_ops.cli.main``), with the task's environment and working directory, its own exit code, and
its stdout and stderr written straight into pipes the task process owns (passed over a Unix socket).

Fork hazards are kept out of the parent: it starts no Python thread, opens no database, HTTP client
or MLflow run, and forks only from its single-threaded loop (the native helper threads of OpenBLAS
and jemalloc that imports start are made fork-safe by their libraries' at-fork handlers). The child
re-reads everything from its own environment, as a fresh interpreter would.

The parent imports no part of mlops_ops that a step uses: each child drops the parent's ``mlops_ops``
modules and imports the package from disk, so edits to it never meet a stale parent.

The parent starts on first use and listens at once: it imports its list one module at a time and forks
the steps that asked between two imports (:class:`.parent._Tend` reports ended steps during one). It
serves every task process of the machine that connects to its socket
(under ``$MLOPS_WARM_DIR``, else ``$XDG_RUNTIME_DIR/mlops-ops``, else ``<tmp>/mlops-ops-<uid>``; mode
0700 and only the same user may connect), and exits after ``$MLOPS_WARM_IDLE_SECONDS`` (600) idle.
If the task process goes away or asks to stop, the parent kills the child's process group.

The demo's ``airflow`` commands are forked the same way from a parent of the kind ``airflow`` that has
imported Airflow and built ``airflow dags test``'s in-process Execution API; each child points Airflow at
its command's home (:mod:`.airflow_commands`).

Modules: :mod:`.config` (switches, socket folder, parent identity), :mod:`.protocol` (the socket's
messages), :mod:`.client` (what a task process calls), :mod:`.parent` (the parent's loop and its
``python -m mlops_ops.runners.warm`` entry point), :mod:`.child` (a forked child becoming the step).
"""

from __future__ import annotations

from mlops_ops.runners.warm.client import WarmProcess, prestart, spawn
from mlops_ops.runners.warm.config import (
    AIRFLOW_IDLE_ENV,
    DIR_ENV,
    ENABLED_ENV,
    IDLE_ENV,
    PRELOAD,
    PRELOAD_ENV,
    START_ENV,
    WarmUnavailable,
    enabled,
    import_time_env,
    parent_key,
    preload_modules,
    runtime_dir,
)

__all__ = [
    "AIRFLOW_IDLE_ENV",
    "DIR_ENV",
    "ENABLED_ENV",
    "IDLE_ENV",
    "PRELOAD",
    "PRELOAD_ENV",
    "START_ENV",
    "WarmProcess",
    "WarmUnavailable",
    "enabled",
    "import_time_env",
    "parent_key",
    "preload_modules",
    "prestart",
    "runtime_dir",
    "spawn",
]
