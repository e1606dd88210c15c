"""Helpers for the real servers tests run on loopback: free ports, start-up waits, clean stops, skip-or-fail."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
#: How long a server gets to exit after SIGTERM before it is killed (SeaweedFS ignores SIGTERM for ~10 s).
STOP_GRACE_SECONDS = 3.0


class ServerNotReady(Exception):
    """A server process did not become ready in time, or exited while starting."""


def in_ci() -> bool:
    """Whether we run under CI (``CI=true``), where a missing server must fail the build, not skip."""
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the requesting test because a server is unavailable, or fail it when running under CI."""
    if in_ci():
        pytest.fail(f"{reason}\n(CI=true: a real-server test must not be skipped)", pytrace=False)
    pytest.skip(reason)


def find_executable(name: str) -> str | None:
    """Path of the executable ``name`` in this interpreter's bin directory (the venv) or on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(name, path=search)


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now.

    All sockets are held open until every port is chosen, so the kernel never hands out the same port twice.
    Another process may still take one before the server binds it; the server then exits and the start-up
    wait reports it with the log.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    return ports


def log_tail(path: str | Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], T],
    *,
    what: str,
    timeout: float,
    interval: float = 0.25,
    process: subprocess.Popen[bytes] | None = None,
) -> T:
    """Call ``check`` until it returns without raising; return its result.

    Gives up after ``timeout`` seconds, or at once if ``process`` has exited, raising ServerNotReady with the
    last error.
    """
    from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, wait_fixed

    def exited() -> bool:
        return process is not None and process.poll() is not None

    def give_up(state: RetryCallState) -> bool:
        return exited() or (state.seconds_since_start or 0.0) >= timeout

    started = time.monotonic()
    retrying = Retrying(stop=give_up, wait=wait_fixed(interval), retry=retry_if_exception_type(Exception))
    try:
        return retrying(check)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        elapsed = time.monotonic() - started
        if process is not None and exited():
            raise ServerNotReady(
                f"{what} exited with code {process.returncode} while starting (last check: {last!r})"
            ) from last
        raise ServerNotReady(f"{what} not ready after {elapsed:.1f}s (last check: {last!r})") from last


def stop_process(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop a process started by ``running`` and its children: SIGTERM to its group, SIGKILL after ``grace``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        process.wait(timeout=10)


@contextmanager
def running(
    command: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own process group with output to ``log_path``; stop it on exit."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group, so stop_process reaches every child
        )
    try:
        yield process
    finally:
        stop_process(process)
