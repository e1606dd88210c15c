"""The one MLflow client of a process: configured once, quiet, and wrapped so outages end in one line.

Every call to MLflow goes through :func:`client` (a proxy of ``MlflowClient``) or :func:`guard`. A call
that fails because the tracking server cannot be reached (or a local store is busy) is retried with a
bounded, logged back-off (``MLOPS_MLFLOW_RETRY_SECONDS``, default 30 s); if it still fails the step ends
with :class:`~mlops_ops.errors.TrackingUnavailable` (the retryable exit code). Other MLflow errors
become :class:`~mlops_ops.errors.TrackingError` with MLflow's message on one line.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mlops_ops.errors import TrackingError, TrackingUnavailable
from mlops_ops.settings import tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("mlops_ops.lineage")
T = TypeVar("T")

RETRY_SECONDS_ENV = "MLOPS_MLFLOW_RETRY_SECONDS"
#: MLflow's own HTTP retries default to 7 tries with a doubling back-off (minutes); ours are bounded.
_MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
_TRANSIENT_TEXT = ("API request to", "database is locked", "Max retries exceeded", "Connection refused")


@functools.cache
def quiet() -> None:
    """Once per process: bounded HTTP retries, and none of MLflow's noise nobody can act on."""
    for key, value in _MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Advice about pickle formats and pip probing is about MLflow's defaults, not about this run.
    for name in (
        "mlflow.sklearn",
        "mlflow.utils.environment",
        "mlflow.models.model",
        "mlflow.utils.requirements_utils",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)


def is_transient(exc: BaseException) -> bool:
    """Whether an MLflow failure may heal by itself (server unreachable, store busy)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, MlflowException):
        return exc.error_code in _TRANSIENT_CODES or any(t in exc.message for t in _TRANSIENT_TEXT)
    return type(exc).__name__ in ("ConnectionError", "Timeout", "OperationalError")


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def guard(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call into MLflow with bounded retries of transient failures; translate what is left to our errors."""
    import tenacity
    from mlflow.exceptions import MlflowException

    budget = float(os.environ.get(RETRY_SECONDS_ENV) or 30)
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_delay(budget),
        wait=tenacity.wait_exponential(multiplier=0.5, max=8),
        before_sleep=lambda state: log.warning(
            "MLflow at %s did not answer (%s); retrying in %.0fs",
            tracking_uri(),
            _one_line(str(state.outcome.exception() if state.outcome else ""), 160),
            state.next_action.sleep if state.next_action else 0,
        ),
        reraise=True,
    )
    try:
        return retrying(call, *args, **kwargs)
    except MlflowException as exc:
        if is_transient(exc):
            raise TrackingUnavailable(
                f"MLflow at {tracking_uri()} is unreachable after {budget:.0f}s of retries: {_one_line(exc.message)}"
            ) from exc
        raise TrackingError(_one_line(exc.message)) from exc
    except Exception as exc:
        if is_transient(exc):
            raise TrackingUnavailable(
                f"MLflow at {tracking_uri()} is unreachable after {budget:.0f}s of retries: {_one_line(str(exc))}"
            ) from exc
        raise


class GuardedClient:
    """``MlflowClient`` whose every method call goes through :func:`guard`."""

    def __init__(self, inner: MlflowClient) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr
        return functools.partial(guard, attr)


def _point_fluent_api(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` for this process only.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` (and the registry's) into
    ``os.environ``, which every later child process would inherit and which ``settings.tracking_uri()``
    would then read back as if a user had set it: the environment is put back as it was.
    """
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


#: How long a process waits for another to finish creating or upgrading a SQLite tracking database.
SQLITE_SETUP_SECONDS = 300.0


@functools.cache
def _client_for(uri: str) -> GuardedClient:
    import mlflow

    _point_fluent_api(uri)
    if not uri.startswith("sqlite:///"):
        return GuardedClient(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri))
    with _sqlite_setup(Path(uri.removeprefix("sqlite:///"))):
        found = GuardedClient(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri))  # opens the tracking store
        found.search_registered_models(max_results=1)  # opens the registry's
    return found


@contextlib.contextmanager
def _sqlite_setup(database: Path) -> Iterator[None]:
    """Open the stores of a SQLite tracking database one process at a time.

    MLflow creates and upgrades the schema of a SQLite database when a process first opens it, with no lock:
    steps that start together on a new home (parallel tasks) would each run the migrations and fail
    (``table ... already exists``). An ``flock`` beside the database makes the others wait for the first.
    """
    from mlops_ops.store.lock import file_lock

    database.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(database.with_name(database.name + ".lock"), timeout=SQLITE_SETUP_SECONDS):
        yield


def client() -> Any:
    """The process's MLflow client on the configured tracking URI (the fluent API is pointed there too)."""
    quiet()
    import mlflow

    uri = tracking_uri()
    found = _client_for(uri)
    # Another piece of code in this process (a test, say) may have pointed the fluent API elsewhere.
    if mlflow.get_tracking_uri() != uri:
        _point_fluent_api(uri)
    return found
