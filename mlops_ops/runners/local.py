"""Local runner: the step as a child process with the very command line a pod would run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class LocalRunner:
    """Runs ``mlops-ops step ...`` as a child process, streaming its log lines as they come."""

    def __init__(self, *, inherit_env: bool = True, tail_lines: int = 200) -> None:
        self.inherit_env = inherit_env
        self.tail_lines = tail_lines

    def environment(self, invocation: StepInvocation) -> dict[str, str]:
        base = dict(os.environ) if self.inherit_env else {"PATH": os.environ.get("PATH", "")}
        return base | invocation.env | invocation.secret_env | {"PYTHONUNBUFFERED": "1"}

    def run(self, invocation: StepInvocation, log: Callable[[str], None], context: Any = None) -> dict[str, Any]:
        argv = [entrypoint(), *invocation.args()]
        proc = subprocess.Popen(
            argv,
            env=self.environment(invocation),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
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
            code = proc.wait()
        except BaseException:
            # The task was killed or timed out: do not leave the step running behind it.
            proc.kill()
            proc.wait()
            raise
        reader.join()
        if code != 0:
            raise StepFailed(code, error_line(list(tail)) or f"step exited with code {code}; see the log above")
        return parse_result("".join(chunks))
