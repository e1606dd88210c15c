"""A child forked by the warm parent becomes the step: the task's streams, environment, folder and fresh code."""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import signal
import sys
import tempfile
import threading
from typing import NoReturn

from mlops_ops.runners.warm.config import log
from mlops_ops.runners.warm.protocol import Request

#: ``prctl`` option: the signal a process gets when the thread that forked it ends (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def become_step(request: Request) -> None:
    """In the forked child: take on the task's streams, environment and folder, as a fresh process would."""
    os.setpgid(0, 0)  # its own process group, so a kill reaches what the step starts too
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(request.fds[0], 1)
    os.dup2(request.fds[1], 2)
    for fd in (devnull, *request.fds):
        os.close(fd)
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # type: ignore[misc]  # noqa: SIM115
    write_through_streams()
    os.environ.clear()
    os.environ.update(request.env)
    os.chdir(request.cwd)
    if request.umask is not None:  # files the step creates get the task's permissions
        os.umask(request.umask)
    tempfile.tempdir = None  # computed again from this step's TMPDIR
    sys.argv = list(request.argv)
    for name in [m for m in sys.modules if m == "mlops_ops" or m.startswith("mlops_ops.")]:
        del sys.modules[name]  # the step imports mlops_ops (this package too) from disk, as a fresh interpreter does
    if "numpy" in sys.modules:  # a fresh interpreter seeds numpy's global generator from the OS
        sys.modules["numpy"].random.seed()
    for handler in log.handlers[:]:  # the parent's own log is not the step's
        log.removeHandler(handler)
    log.setLevel(logging.NOTSET)
    log.propagate = True


def die_with_parent(parent: int) -> None:
    """In the forked child: have Linux SIGKILL it when the warm parent dies (``prctl(PR_SET_PDEATHSIG)``).

    A parent that ends normally waits for its children first; one that is killed (out of memory, say) can
    no longer report their exit codes or kill them on a hang-up, so they must not outlive it: the task
    reports the step failed, and a retry must not run beside a step still going. ``parent`` is the
    parent's pid read before the fork: if it died before the request took effect, the child ends now.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        log.warning("warm child %d: prctl(PR_SET_PDEATHSIG) failed (errno %d)", os.getpid(), ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(137)  # as if the signal had come


def write_through_streams() -> None:
    """``sys.stdout`` and ``sys.stderr`` on descriptors 1 and 2, writing through as ``PYTHONUNBUFFERED=1`` does.

    Also what a warm Airflow parent sets before importing Airflow: the log handlers Airflow makes keep these
    streams, so in a child they write straight into the descriptors the child was given.
    """
    sys.stdout = sys.__stdout__ = _stream(1, "strict")  # type: ignore[misc]
    sys.stderr = sys.__stderr__ = _stream(2, "backslashreplace")  # type: ignore[misc]


def _stream(fd: int, errors: str) -> io.TextIOWrapper:
    """A text stream on ``fd`` as ``PYTHONUNBUFFERED=1`` gives a fresh interpreter."""
    raw = open(fd, "wb", buffering=0, closefd=False)  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors=errors, line_buffering=False, write_through=True)


def leave(code: object) -> NoReturn:
    """End the step as the interpreter ends a process, less the tear-down of the heap shared with the parent.

    ``code`` is what ``SystemExit`` carried. As at a normal exit, the step's non-daemon threads are
    joined, its ``atexit`` handlers run (logging's flush, MLflow's run end) and its streams are flushed;
    then ``os._exit``, as the forked children of ``multiprocessing`` end. Freeing the objects inherited from
    the warm parent one by one would write to every page they share (copying it) and cost 0.2-0.5 s a step.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # what the interpreter does with sys.exit("message")
        print(code, file=sys.stderr)
        status = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: nothing more can be said on it
            stream.flush()
    os._exit(status & 0xFF)
