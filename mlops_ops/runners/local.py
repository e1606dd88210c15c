"""Local runner: the step as a child process with the very command line a pod would run.

The process is forked from a warm parent that has already imported the step libraries
(:mod:`mlops_ops.runners.warm`) when it can be, else started cold; either way it runs the same argv and
``mlops_ops.cli.main``, has its own exit code, streams stderr to the task log and dies with the task.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from mlops_ops.runners.base import ENTRYPOINT, StepFailed, StepInvocation, error_line, parse_result


def entrypoint() -> str:
    """The ``mlops-ops`` script beside the running interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name(ENTRYPOINT)
    if beside.exists():
        return str(beside)
    found = shutil.which(ENTRYPOINT)
    if found is None:
        raise StepFailed(127, f"{ENTRYPOINT} is not installed beside {sys.executable} nor on PATH")
    return found


class StepProcess(Protocol):
    """What the runner needs of a started step: its output streams, its exit code, a way to kill it."""

    @property
    def stdout(self) -> IO[str] | None: ...

    @property
    def stderr(self) -> IO[str] | None: ...

    def wait(self) -> int: ...

    def kill(self) -> None: ...


class LocalRunner:
    """Runs ``mlops-ops step ...`` as a child process, streaming its log lines as they come.

    :param inherit_env: Start from this process's environment (else only ``PATH``).
    :param tail_lines: Lines of stderr kept to find the step's one-line error.
    :param warm: False to always start the step cold; ``MLOPS_WARM_EXECUTOR=0`` turns warm starts off for all.
    """

    #: Steps read this machine's files, so the operator may check their inputs to reuse a result.
    shares_filesystem = True

    def __init__(self, *, inherit_env: bool = True, tail_lines: int = 200, warm: bool | None = None) -> None:
        self.inherit_env = inherit_env
        self.tail_lines = tail_lines
        self.warm = warm
        self._active: StepProcess | None = None

    def environment(self, invocation: StepInvocation) -> dict[str, str]:
        base = dict(os.environ) if self.inherit_env else {"PATH": os.environ.get("PATH", "")}
        return base | invocation.env | invocation.secret_env | {"PYTHONUNBUFFERED": "1"}

    def start(self, argv: list[str], env: dict[str, str], log: Callable[[str], None]) -> StepProcess:
        """Fork the step from the warm parent if allowed and available, else start a cold process."""
        from mlops_ops.runners import warm

        if self.warm is not False and warm.enabled():
            try:
                forked = warm.spawn(argv, env, os.getcwd())
            except warm.WarmUnavailable as exc:
                log(f"warm executor unavailable ({exc}); starting the step cold")
            else:
                log(f"step process {forked.pid} forked from warm parent {forked.parent_pid}")
                return forked
        return subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )

    def run(self, invocation: StepInvocation, log: Callable[[str], None], context: Any = None) -> dict[str, Any]:
        argv = [entrypoint(), *invocation.args()]
        proc = self._active = self.start(argv, self.environment(invocation), log)
        tail: deque[str] = deque(maxlen=self.tail_lines)
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read() if proc.stdout else ""), daemon=True)
        reader.start()
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip("\n")
                tail.append(line)
                log(line)
            code = _exit_code(proc)
        except BaseException:
            # The task was killed or timed out: do not leave the step running behind it.
            proc.kill()
            _exit_code(proc)
            raise
        finally:
            self._active = None
        reader.join()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        if code != 0:
            raise StepFailed(code, error_line(list(tail)) or f"step exited with code {code}; see the log above")
        return parse_result("".join(chunks))

    def resume(
        self, invocation: StepInvocation, event: dict[str, Any], log: Callable[[str], None], context: Any
    ) -> dict[str, Any]:
        """A local step never defers, so there is nothing to resume."""
        raise StepFailed(
            1, f"the local runner does not defer; step {invocation.step} cannot resume from {event!r:.200}"
        )

    def on_kill(self) -> None:
        """The task was killed: kill the running step (the operator's ``on_kill`` calls this)."""
        if self._active is not None:
            self._active.kill()


def _exit_code(proc: StepProcess) -> int:
    from mlops_ops.runners.warm import WarmUnavailable

    try:
        return proc.wait()
    except WarmUnavailable as exc:
        raise StepFailed(1, str(exc)) from None
