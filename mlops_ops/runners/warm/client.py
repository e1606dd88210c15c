"""The task process's side of the warm executor: start a warm parent if none runs, and ask it for a step."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mlops_ops.runners.warm.config import (
    AIRFLOW_IDLE_ENV,
    DIR_ENV,
    IDLE_ENV,
    START_ENV,
    WarmUnavailable,
    airflow_base_env,
    enabled,
    import_time_env,
    parent_key,
    preload_modules,
    runtime_dir,
)
from mlops_ops.runners.warm.protocol import TIMEOUT, Request, read_message, send_request


@dataclass
class WarmProcess:
    """A process forked by the warm parent: read its output, wait for its exit code, or kill it.

    ``stdout`` and ``stderr`` are None when the caller gave the process its own descriptors (``output``).
    """

    pid: int
    parent_pid: int
    stdout: IO[str] | None
    stderr: IO[str] | None
    _conn: socket.socket
    _reply: bytes = b""
    returncode: int | None = None
    _lost: bool = False

    def wait(self) -> int:
        """The child's exit code as ``subprocess`` gives it (negative: killed by that signal).

        Raises WarmUnavailable, on this and every later call, if the parent ended without reporting it.
        """
        if self.returncode is None and not self._lost:
            message = read_message(self._conn, self._reply, timeout=None)
            self._conn.close()
            if message is None or "exit" not in message:
                self._lost = True
            else:
                self.returncode = int(message["exit"])
        if self.returncode is None:
            raise WarmUnavailable(f"the warm parent {self.parent_pid} ended before process {self.pid} did")
        return self.returncode

    def poll(self) -> int | None:
        """The exit code if the process has ended (the parent reported it), else None; does not block."""
        if self.returncode is None and not self._lost and b"\n" not in self._reply:
            readable, _, _ = select.select([self._conn], [], [], 0)
            if not readable:
                return None
        return self.wait()

    def kill(self) -> None:
        """Ask the warm parent to kill the step's process group; it reaps it and reports the exit code."""
        if self.returncode is None and not self._lost:
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_WR)


def spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    *,
    timeout: float | None = None,
    kind: str = "step",
    output: tuple[int, int] | None = None,
) -> WarmProcess:
    """Fork ``argv`` (entrypoint first) from the warm parent, starting the parent if none runs.

    :param kind: ``step`` for ``mlops-ops step`` command lines, ``airflow`` for ``airflow`` ones.
    :param output: Descriptors to give the process as stdout and stderr (else pipes, read from the result).
    Raises WarmUnavailable if no warm parent answers in time or it refuses the step; nothing has run then.
    """
    preload = preload_modules(kind=kind)
    folder = runtime_dir(os.environ | env)  # the command's setting first, else this process's
    key = parent_key(env, preload, kind)
    path = folder / f"warm-{key}.sock"
    if len(os.fsencode(path)) >= 100:
        raise WarmUnavailable(f"the socket path {path} is too long for a Unix socket; set {DIR_ENV}")
    limit = float(os.environ.get(START_ENV, "120")) if timeout is None else timeout
    conn = _connect(path)
    if conn is None:
        _launch(folder, key, env, preload, bin_dir=str(Path(argv[0]).parent), kind=kind)
        started = time.monotonic()
        while conn is None and time.monotonic() < started + limit:
            time.sleep(0.2)
            conn = _connect(path)
            if conn is None and time.monotonic() > started + 10 and not _locked(folder / f"warm-{key}.lock"):
                raise WarmUnavailable(f"the warm parent exited while starting; see {folder / f'warm-{key}.log'}")
        if conn is None:
            raise WarmUnavailable(f"no warm parent answered on {path} within {limit:.0f}s")
    try:
        return _request(conn, argv, env, cwd, output, wait=max(TIMEOUT, limit))
    except WarmUnavailable:
        if _exits(folder / f"warm-{key}.lock"):  # e.g. an import it preloads killed it
            raise WarmUnavailable(
                f"the warm parent exited before it forked; see {folder / f'warm-{key}.log'}"
            ) from None
        raise


def prestart(env: dict[str, str], entrypoint: str, kind: str = "step") -> bool:
    """Start the warm parent that commands run with ``env`` would use, without waiting for it (e.g. while
    Airflow migrates its database); False if the warm executor is off or a parent already answers."""
    if not enabled(env):
        return False
    preload = preload_modules(kind=kind)
    folder = runtime_dir(os.environ | env)  # the command's setting first, else this process's
    key = parent_key(env, preload, kind)
    conn = _connect(folder / f"warm-{key}.sock")
    if conn is not None:
        conn.close()
        return False
    _launch(folder, key, env, preload, bin_dir=str(Path(entrypoint).parent), kind=kind)
    return True


def _locked(lock: Path) -> bool:
    """Whether a warm parent holds ``lock`` (it does from its start to its exit)."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _exits(lock: Path, within: float = 0.5) -> bool:
    """Whether the warm parent holding ``lock`` has ended or ends ``within`` seconds (its lock goes with it)."""
    deadline = time.monotonic() + within
    while _locked(lock):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _umask() -> int | None:
    """This process's umask, read without changing it (``os.umask`` would race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return None


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _request(
    conn: socket.socket, argv: list[str], env: dict[str, str], cwd: str, output: tuple[int, int] | None, wait: float
) -> WarmProcess:
    """Send the request and wait up to ``wait`` seconds for the fork (a starting parent forks between two
    of its imports, which can take seconds each)."""
    ours: list[int] = []  # read ends of the pipes made here
    if output is None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ours, given = [out_r, err_r], [out_w, err_w]
    else:
        given = list(output)
    try:
        send_request(conn, Request(argv=argv, env=env, cwd=cwd, fds=given, umask=_umask()))
        reply = read_message(conn, b"", timeout=wait)
    except OSError as exc:
        reply = None
        reason = str(exc)
    else:
        reason = "it closed the connection"
    finally:
        if ours:
            for fd in given:
                os.close(fd)
    if reply is None or "pid" not in reply:
        conn.close()
        for fd in ours:
            os.close(fd)
        refused = (reply or {}).get("error")
        raise WarmUnavailable(f"the warm parent did not start the process: {refused or reason}")
    return WarmProcess(
        pid=int(reply["pid"]),
        parent_pid=int(reply["parent"]),
        stdout=open(ours[0], encoding="utf-8", errors="replace") if ours else None,
        stderr=open(ours[1], encoding="utf-8", errors="replace") if ours else None,
        _conn=conn,
        _reply=reply["_rest"],
    )


def _launch(
    folder: Path, key: str, env: dict[str, str], preload: tuple[str, ...], *, bin_dir: str, kind: str = "step"
) -> None:
    """Start a warm parent in its own session; it detaches at once (a second one exits on the lock).

    The parent runs as ``python -m mlops_ops.runners.warm`` (:func:`mlops_ops.runners.warm.parent.main`).
    """
    keep = {k: v for k, v in env.items() if k in {"PATH", "HOME", "TMPDIR", "USER", "LOGNAME"}}
    parent_env = keep | import_time_env(env, kind) | (airflow_base_env(folder, key) if kind == "airflow" else {})
    idle = env.get(AIRFLOW_IDLE_ENV, "300") if kind == "airflow" else os.environ.get(IDLE_ENV, "600")
    argv = [sys.executable, "-m", "mlops_ops.runners.warm", "--dir", str(folder), "--key", key, "--bin", bin_dir]
    argv += ["--idle", idle, "--preload", ",".join(preload), "--kind", kind]
    with open(os.open(folder / f"warm-{key}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as err:
        subprocess.run(
            argv, env=parent_env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True, check=False, timeout=60,
        )  # fmt: skip
