"""Processes of the dev stack: free ports, start-up waits, and servers that die with whoever started them."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from mlops_ops.errors import InfraError

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
#: How long a server group gets to exit after SIGTERM before it is killed (SeaweedFS ignores SIGTERM for ~10 s).
STOP_GRACE_SECONDS = 3.0
_GUARD = Path(__file__).with_name("_guard.py")


class ServerNotReady(InfraError):
    """A dev-stack server could not start, did not become ready in time, or exited while starting."""


class MissingTool(ServerNotReady):
    """A program or library the dev stack needs is not installed; the message says what to install."""


def require(module: str, install: str) -> ModuleType:
    """Import ``module`` (a dev-stack dependency), or raise MissingTool saying to install ``install``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingTool(f"the dev stack needs `{module}`: install {install}") from exc


def find_executable(name: str) -> str | None:
    """Path of the executable ``name`` in this interpreter's bin directory (the venv) or on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(name, path=search)


def require_executable(name: str, install: str) -> str:
    """Path of the executable ``name``, or raise MissingTool saying to install ``install``."""
    path = find_executable(name)
    if path is None:
        raise MissingTool(f"the dev stack needs the `{name}` command: install {install}")
    return path


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


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether TCP ``port`` on ``host`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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
    started = time.monotonic()
    while True:
        try:
            return check()
        except Exception as exc:  # refused, timed out, not healthy yet: whatever the check says
            last = exc
        elapsed = time.monotonic() - started
        if process is not None and process.poll() is not None:
            raise ServerNotReady(
                f"{what} exited with code {process.returncode} while starting (last check: {last!r})"
            ) from last
        if elapsed >= timeout:
            raise ServerNotReady(f"{what} not ready after {elapsed:.1f}s (last check: {last!r})") from last
        time.sleep(interval)


def group_members(pgid: int) -> list[int]:
    """Live processes (zombies left out) in process group ``pgid``, read from ``/proc`` (Linux)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if state != "Z" and int(pgrp) == pgid:
            members.append(int(entry.name))
    return members


def stop_process(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop a process started by ``running`` and its whole group: SIGTERM, then SIGKILL after ``grace``.

    The group gets the grace period as a whole, so children still shutting down after the leader exited are
    given the same time and then killed, never left behind.
    """
    pgid = process.pid
    deadline = time.monotonic() + grace
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    while time.monotonic() < deadline and (process.poll() is None or group_members(pgid)):
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=10)


def guarded(command: Sequence[str]) -> list[str]:
    """``command`` wrapped so its process group is killed when this process dies (see ``_guard``).

    Linux delivers the parent-death signal when the *thread* that started the guard exits: start servers
    from a thread that lives as long as they should (the main thread, say).
    """
    return [sys.executable, "-I", str(_GUARD), str(os.getpid()), *command]


@contextmanager
def running(
    command: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own process group, output to ``log_path``, until exit; it dies with this process.

    The yielded process is the group's leader (a small guard that runs ``command``): its ``pid`` is the group
    id. On exit the whole group is stopped; if this process is killed instead, the guard kills the group.
    """
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            guarded(command),
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
