"""A warm parent of the kind ``airflow``: Airflow imported and ``airflow dags test``'s Execution API built once.

``airflow dags test`` runs its tasks in its own process through an in-process Execution API, a FastAPI
(Cadwyn) app whose versioned routes are generated on its first request: about 1 s to import Airflow and
its CLI, 1 s to build the app and 2.5-3 s for the routes, before the first task starts. A parent of this
kind does all that once per home (its configuration is read at import, so the parent is keyed by the
``AIRFLOW*`` environment) and forks each ``airflow`` command from it; the child runs Airflow's own
``main()`` on the request's argv, so the run is the same ``airflow dags test``.

The parent opens no database connection and starts no thread while preparing (Airflow's at-fork hook also
drops any pooled connection in the child). It refuses to fork once the ``airflow.cfg`` it read changed.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from mlops_ops.runners.warm.config import log

_config: tuple[Path, str] | None = None


def _stamp(path: Path) -> str:
    with contextlib.suppress(OSError):
        info = path.stat()
        return f"{info.st_mtime_ns}:{info.st_size}:{info.st_ino}"
    return "absent"


def prepare() -> None:
    """What ``airflow dags test`` does before its first task, short of touching the database."""
    global _config
    from airflow import configuration
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    started = time.perf_counter()
    configuration.write_default_airflow_configuration_if_needed()  # as Airflow's main() does for every command
    _config = (Path(configuration.AIRFLOW_CONFIG), _stamp(Path(configuration.AIRFLOW_CONFIG)))
    app = in_process_api_server().app
    routes = getattr(app, "_cadwyn_initialize", None)  # generated on the first request otherwise
    if callable(routes) and getattr(app, "_cadwyn_initialized", True) is False:
        routes()
    log.info("warm parent: built the in-process Execution API in %.2fs", time.perf_counter() - started)


def refusal() -> str | None:
    """Why this parent must not fork another command (its ``airflow.cfg`` changed), or None."""
    if _config is not None and _stamp(_config[0]) != _config[1]:
        return f"{_config[0]} changed since the warm parent read it"
    return None


def run() -> None:
    """In the forked child: Airflow's ``main()`` on ``sys.argv`` (set from the request)."""
    from airflow.__main__ import main

    main()
