"""Run one command so that it and everything in its process group die with the process that started it.

Started by ``mlops_ops.devstack.process.running`` as ``python -I _guard.py PARENT_PID COMMAND...`` in a new
session, so this guard leads the group. It asks Linux for a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG)``) and then kills the whole group with SIGKILL: the server and any child it forked
(MLflow's uvicorn, Airflow's executor workers) go with it. A parent-death signal set on the server alone
would leave those children behind. Standard library only: it runs before, and apart from, the package.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1
#: The guard's own alarm: nothing else sends it SIGUSR2, and it is not one a server reacts to.
PARENT_DIED = signal.SIGUSR2


def _kill_group(signum: int | None = None, frame: FrameType | None = None) -> None:
    os.killpg(0, signal.SIGKILL)  # this guard included


def _ignore(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGINT reach the whole group; the server handles them and the guard exits with its code.
    # A Python handler (not SIG_IGN) so the command does not inherit an ignored signal through exec.
    return None


def main(argv: list[str]) -> int:
    """Start ``argv[1:]``, watch for the death of process ``argv[0]``, and return the command's exit status."""
    parent, command = int(argv[0]), argv[1:]
    signal.signal(PARENT_DIED, _kill_group)
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DIED), 0, 0, 0) != 0:
        print(f"guard: prctl failed (errno {ctypes.get_errno()})", file=sys.stderr)
    if os.getppid() != parent:  # the parent died before the request took effect
        _kill_group()
    child = subprocess.Popen(command)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
