"""A warm parent of the kind ``airflow``: Airflow imported and ``airflow dags test``'s Execution API built once.

``airflow dags test`` runs its tasks in its own process through an in-process Execution API, a FastAPI
(Cadwyn) app whose versioned routes are generated on its first request: about 1 s to import Airflow and
its CLI, 1 s to build the app and 2.5-3 s for the routes, before the first task starts. A parent of this
kind does all that once and forks each ``airflow`` command from it; the child runs Airflow's own
``main()`` on the request's argv, so the run is the same ``airflow dags test``.

One parent serves every home. Airflow reads its home (``AIRFLOW_HOME``, the DAGs and plugins folders, the
database) when imported, so the parent is prepared for a private home of its own, where it never writes a
configuration or opens a database, and each child points Airflow at its command's home (:func:`repoint`)
before it runs: the configuration read again from the home's ``airflow.cfg``, new secrets drawn where
Airflow would draw them, the settings, logging and ORM set up again, and the module-level copies of the
private home's paths replaced. Everything else Airflow reads at import (every other ``AIRFLOW*`` variable)
is in the parent's key. A home whose ``airflow.cfg`` is not exactly Airflow's default for it (the user
edited it) could hold a setting that Airflow read at import, so its commands run cold instead, replacing
the child by a new ``airflow`` process and saying so in the log.

The parent opens no database connection and starts no thread while preparing (Airflow's at-fork hook also
drops any pooled connection in the child).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

from mlops_ops.runners.warm.config import log

#: The private home the parent imported Airflow for (its ``AIRFLOW_HOME``).
_base: str | None = None


def prepare() -> None:
    """What ``airflow dags test`` does before its first task, short of touching a home or the database."""
    global _base
    from airflow import configuration
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    started = time.perf_counter()
    _base = configuration.AIRFLOW_HOME
    app = in_process_api_server().app
    routes = getattr(app, "_cadwyn_initialize", None)  # generated on the first request otherwise
    if callable(routes) and getattr(app, "_cadwyn_initialized", True) is False:
        routes()
    log.info("warm parent: built the in-process Execution API in %.2fs", time.perf_counter() - started)


def run() -> None:
    """In the forked child: Airflow pointed at the command's home, then its ``main()`` on ``sys.argv``.

    A home whose configuration Airflow could not have read at import is served by a cold ``airflow``
    process instead, started in this one's place (same pid, streams and exit code).
    """
    cold = repoint()
    if cold is not None:
        print(f"mlops-ops: airflow {' '.join(sys.argv[1:3])} starts cold: {cold}", file=sys.stderr, flush=True)
        os.execv(sys.argv[0], sys.argv)
    from airflow.__main__ import main

    main()


def repoint() -> str | None:
    """Point Airflow, imported for the parent's private home, at the home of ``os.environ``; or say why not.

    Mirrors what a new ``airflow`` process would have done at import with this environment. Returns None
    when done, else why the command must run cold (nothing has been changed then).
    """
    import importlib
    from base64 import b64encode

    from airflow import configuration, settings

    assert _base is not None, "prepare() runs first"
    home = configuration.get_airflow_home()
    config = configuration.get_airflow_config(home)
    if os.path.exists(config):
        custom = _not_default(config, home)
        if custom is not None:
            return custom
    before = {name: getattr(settings, name, None) for name in _SETTINGS}
    configuration.AIRFLOW_HOME = settings.AIRFLOW_HOME = home
    configuration.AIRFLOW_CONFIG = config
    # What a new interpreter draws at import; a new home's airflow.cfg gets its own secrets from them.
    configuration.SECRET_KEY = b64encode(os.urandom(16)).decode("utf-8")
    configuration._SecretKeys.fernet_key = configuration._SecretKeys.jwt_secret_key = ""
    # A new process reads its configuration before logging is set up: the line it would log is not shown.
    with _quiet("airflow.configuration"):
        _replace(configuration.conf, configuration.initialize_config())
        configuration.secrets_backend_list[:] = configuration.initialize_secrets_backends()
        sdk = sys.modules.get("airflow.sdk.configuration")
        if sdk is not None and "conf" in vars(sdk):
            _replace(sdk.conf, sdk.initialize_config())
    sys.path[:] = [entry for entry in sys.path if not _under(entry, _base)]  # its config and plugins folders
    importlib.reload(importlib.import_module("airflow.config_templates.airflow_local_settings"))  # log folders
    settings.initialize()
    after = {name: getattr(settings, name, None) for name in _SETTINGS}
    _rebind(_base, home, {old: str(after[name]) for name, old in before.items() if isinstance(old, str)})
    return None


#: Settings derived from the home; modules that copied them at import get the command's values.
_SETTINGS = ("AIRFLOW_HOME", "DAGS_FOLDER", "PLUGINS_FOLDER", "SQL_ALCHEMY_CONN", "SQL_ALCHEMY_CONN_ASYNC")


def _not_default(config: str, home: str) -> str | None:
    """None if ``config`` is the ``airflow.cfg`` Airflow writes for ``home`` (with its own secrets), else why not."""
    import configparser
    import io

    from airflow import configuration

    written = configparser.ConfigParser(interpolation=None)
    try:
        with open(config, encoding="utf-8") as file:
            text = file.read()
        written.read_string(text)
        secrets = (
            written.get("core", "fernet_key"),
            written.get("api_auth", "jwt_secret"),
            written.get("api", "secret_key"),
        )
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        return f"{config} could not be compared with Airflow's default ({exc})"
    saved = (configuration.AIRFLOW_HOME, configuration.AIRFLOW_CONFIG, configuration.SECRET_KEY)
    keys = (configuration._SecretKeys.fernet_key, configuration._SecretKeys.jwt_secret_key)
    try:
        configuration.AIRFLOW_HOME, configuration.AIRFLOW_CONFIG = home, config
        configuration._SecretKeys.fernet_key, configuration._SecretKeys.jwt_secret_key, configuration.SECRET_KEY = (
            secrets
        )
        default = io.StringIO()
        configuration.AirflowConfigParser().write(
            default, include_sources=False, include_env_vars=True, include_providers=True,
            extra_spacing=True, only_defaults=True, show_values=True,
        )  # fmt: skip  # as write_default_airflow_configuration_if_needed writes it
    finally:
        configuration.AIRFLOW_HOME, configuration.AIRFLOW_CONFIG, configuration.SECRET_KEY = saved
        configuration._SecretKeys.fernet_key, configuration._SecretKeys.jwt_secret_key = keys
    if default.getvalue() != text:
        return f"{config} differs from Airflow's default, and Airflow reads some settings when imported"
    return None


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    found = logging.getLogger(logger)
    disabled, found.disabled = found.disabled, True
    try:
        yield
    finally:
        found.disabled = disabled


def _replace(old: object, new: object) -> None:
    """Make ``old`` (imported by name across Airflow) the parser ``new`` is."""
    vars(old).clear()
    vars(old).update(vars(new))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _rebind(base: str, home: str, moved: dict[str, str]) -> None:
    """Module-level strings of Airflow naming the private home: a copied setting takes its new value, any
    other path under the private home the same path under ``home``."""
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "airflow" or name.startswith("airflow.")):
            continue
        for attribute, value in list(vars(module).items()):
            if isinstance(value, str) and base in value:
                setattr(module, attribute, moved.get(value, value.replace(base, home)))
