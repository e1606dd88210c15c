"""The embedded Airflow of the demo: its environment under ``$MLOPS_HOME`` and the ``airflow`` commands run in it.

Nothing here imports Airflow: every Airflow command runs as a process of this virtualenv's ``airflow``,
so the demo's own process stays light and the environment it passes on is the whole configuration.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlparse

from mlops_ops.settings import DATA_ROOTS_ENV, artifact_root, default_data_roots, mlops_home, tracking_uri

if TYPE_CHECKING:
    from mlops_ops.runners.warm import WarmProcess

#: The address every UI and printed link of the demo uses.
HOST = "127.0.0.1"


def venv_bin() -> Path:
    """The folder of this interpreter's scripts (``.venv/bin``): ``airflow``, ``mlflow``, ``mlops-ops``."""
    return Path(sys.executable).parent


def airflow_env(dags_folder: Path, plugins_folder: Path | None = None) -> dict[str, str]:
    """Environment for an embedded Airflow under MLOPS_HOME (SQLite, no examples).

    The virtualenv's ``bin`` comes first on ``PATH``: ``airflow standalone`` starts its components by the
    bare name ``airflow``, and steps run ``mlops-ops``, so neither needs an activated virtualenv.
    """
    home = mlops_home()
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "MLOPS_HOME": str(home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder.absolute()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        "MLFLOW_TRACKING_URI": tracking_uri(),
        "MLOPS_ARTIFACT_ROOT": artifact_root(),
        "PATH": os.pathsep.join([str(venv_bin()), env.get("PATH", "")]),
    })  # fmt: skip
    if plugins_folder is not None:
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(plugins_folder.absolute())
    return env


def local_path(uri: str) -> Path | None:
    """The local file a data URI names (a path or ``file://``), absolute; ``None`` for other schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).absolute()
    if parsed.scheme and len(parsed.scheme) > 1:  # s3://, https:// (a one-letter scheme is a Windows drive)
        return None
    return Path(uri).expanduser().absolute()


def with_data_roots(env: dict[str, str], files: Iterable[Path]) -> dict[str, str]:
    """``env`` whose ``MLOPS_DATA_ROOTS`` also admits the folders of ``files`` (the user's own data).

    Only when the user did not set ``MLOPS_DATA_ROOTS``: a deployment's setting is never widened. The
    defaults (:func:`mlops_ops.settings.default_data_roots`) stay, and each file adds its own folder.
    """
    if DATA_ROOTS_ENV in os.environ:
        return env
    roots = [root.absolute() for root in default_data_roots()]
    added: list[Path] = []
    for file in files:
        folder = file.resolve().parent
        if not any(folder.is_relative_to(root.resolve()) for root in [*roots, *added]):
            added.append(folder)
    if not added:
        return env
    return env | {DATA_ROOTS_ENV: os.pathsep.join(str(path) for path in [*roots, *added])}


def airflow_command(*args: str) -> list[str]:
    """The argv of this virtualenv's ``airflow`` with ``args``."""
    return [str(venv_bin() / "airflow"), *args]


class AirflowProcess(Protocol):
    """A running ``airflow`` command: a ``subprocess.Popen`` or a process forked by a warm parent."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def kill(self) -> None: ...


def log_since(log: Path, offset: int) -> str:
    """What was appended to ``log`` after its first ``offset`` bytes (a command's part of a shared log)."""
    with log.open("rb") as text:
        text.seek(offset)
        return text.read().decode("utf-8", "replace")


def prestart_airflow(env: dict[str, str]) -> None:
    """Start the warm Airflow parent now if it is not up, so its preparation overlaps the demo's own (no wait)."""
    from mlops_ops.runners import warm

    with contextlib.suppress(warm.WarmUnavailable, OSError):  # the first command starts it, or runs cold and says why
        warm.prestart(env, str(venv_bin() / "airflow"), kind="airflow")


@dataclass
class ForkedAirflow:
    """An ``airflow`` command forked by the warm Airflow parent, whose parent's death is an :class:`InfraError`.

    A warm parent killed while its command runs takes the command with it (the child dies with its
    parent), and nobody is left to report an exit code: the demo says so in one line, naming the log.
    """

    process: WarmProcess
    command: str
    log: str

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        with self._reported():
            return self.process.poll()

    def wait(self) -> int:
        with self._reported():
            return self.process.wait()

    def kill(self) -> None:
        self.process.kill()

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        from mlops_ops.errors import InfraError
        from mlops_ops.runners.warm import WarmUnavailable

        try:
            yield
        except WarmUnavailable as exc:
            raise InfraError(
                f"{self.command} (process {self.pid}) was stopped: {exc}; its output is in {self.log}; run "
                f"again, or set MLOPS_WARM_EXECUTOR=0 to start Airflow without a warm parent"
            ) from None


def start_airflow(env: dict[str, str], args: list[str], out: IO[str]) -> AirflowProcess:
    """Start ``airflow ARGS`` in this home, its output appended to ``out``, and return without waiting.

    It is forked from the warm Airflow parent (:mod:`mlops_ops.runners.warm.airflow_commands`: Airflow
    imported, ``dags test``'s Execution API built, one for every home), started on first use, unless
    ``MLOPS_WARM_EXECUTOR=0``; a cold process otherwise, with a line in ``out`` saying why.
    """
    from mlops_ops.runners import warm

    argv = airflow_command(*args)
    if warm.enabled(env):
        try:
            forked = warm.spawn(argv, env, os.getcwd(), kind="airflow", output=(out.fileno(), out.fileno()))
        except (warm.WarmUnavailable, OSError) as exc:
            out.write(f"mlops-ops: airflow {' '.join(args[:2])} starts cold: {exc}\n")
            out.flush()
        else:
            out.write(
                f"mlops-ops: airflow {' '.join(args[:2])} is process {forked.pid}, forked from warm parent {forked.parent_pid}\n"
            )
            out.flush()
            return ForkedAirflow(forked, f"airflow {' '.join(args[:2])}", str(out.name))
    return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def airflow(env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``airflow`` command of this environment and wait for it (output captured, or appended to ``log``)."""
    if log is None:
        return subprocess.run(airflow_command(*args), env=env, text=True, capture_output=True, check=False)
    with log.open("a") as out:
        return subprocess.run(
            airflow_command(*args), env=env, text=True, stdout=out, stderr=subprocess.STDOUT, check=False
        )


#: Where migrated empty metadata databases are kept, to copy into a new home instead of migrating again.
TEMPLATE_DIR_ENV = "MLOPS_AIRFLOW_TEMPLATE_DIR"


def cache_folder() -> Path:
    """What the demo keeps between homes: ``$MLOPS_AIRFLOW_TEMPLATE_DIR``, else ``$XDG_CACHE_HOME/mlops-ops``,
    else ``~/.cache/mlops-ops``. Everything in it is keyed by what it was made from."""
    found = os.environ.get(TEMPLATE_DIR_ENV)
    if found:
        return Path(found)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops-ops"


def template_path(env: dict[str, str]) -> Path | None:
    """The migrated empty database a new home of this Airflow can start from; None unless it is SQLite.

    Keyed by the Airflow version and the settings ``airflow db migrate`` writes from (the DAGs folder and
    bundles), kept under ``$MLOPS_AIRFLOW_TEMPLATE_DIR``, else ``$XDG_CACHE_HOME/mlops-ops``, else
    ``~/.cache/mlops-ops``.
    """
    import hashlib
    from importlib.metadata import version

    if sqlite_file(env) is None:
        return None
    folder = cache_folder()
    keyed = [version("apache-airflow"), env.get("AIRFLOW__CORE__DAGS_FOLDER", "")]
    keyed.append(env.get("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", ""))
    digest = hashlib.sha256("\0".join(keyed).encode()).hexdigest()[:16]
    return folder / f"airflow-{keyed[0]}-{digest}.db"


def sqlite_file(env: dict[str, str]) -> Path | None:
    """The SQLite file of the home's metadata database, or None when it is another database."""
    database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return Path(database.removeprefix("sqlite:///")) if database.startswith("sqlite:///") else None


def _copy_sqlite(source: Path, destination: Path) -> None:
    """Copy a SQLite database consistently (its backup API), written beside and renamed into place."""
    import sqlite3
    import tempfile

    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    os.close(handle)
    try:
        with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(temporary)) as dst:
            src.backup(dst)
        os.replace(temporary, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def migrate(env: dict[str, str], log: Path, echo: object = print) -> None:
    """Create or upgrade Airflow's metadata database, once per Airflow version and database.

    A new home's SQLite database is a copy of the one an earlier home of the same Airflow migrated (see
    :func:`template_path`): ``airflow db migrate`` costs 10-15 CPU seconds, the copy milliseconds.
    """
    from importlib.metadata import version

    from mlops_ops.errors import InfraError

    marker = Path(env["AIRFLOW_HOME"]) / f".migrated-{version('apache-airflow')}"
    database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if marker.exists() and marker.read_text() == database:
        return
    file, template = sqlite_file(env), template_path(env)
    # Only a database that held nothing may become a template, and only a new one is made from it.
    fresh = file is not None and not file.exists()
    if file is not None and fresh and template is not None and template.is_file():
        _copy_sqlite(template, file)
        marker.write_text(database)
        return
    if callable(echo):
        echo("Preparing the Airflow metadata database (once per home) …")
    if airflow(env, "db", "migrate", log=log).returncode != 0:
        raise InfraError(f"airflow db migrate failed; its output is in {log}")
    if fresh and file is not None and template is not None and not template.exists():
        with contextlib.suppress(OSError):  # a read-only cache only costs the next home a migration
            _copy_sqlite(file, template)
    marker.write_text(database)
