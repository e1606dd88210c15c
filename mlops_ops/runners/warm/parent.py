"""The warm parent: accept, fork, reap and kill from one thread until idle, while it preloads the step libraries.

A step parent listens before it imports anything: between two preloaded modules it forks the steps that
asked, and while a module is being imported it reports the steps that ended and kills those whose task hung
up (:class:`_Tend`), so the first run on a machine overlaps its steps' work with the rest of the imports.

Run as ``python -m mlops_ops.runners.warm`` (:func:`main`), which :func:`~.client.spawn` does on first use.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlops_ops.runners.warm.child import become_step, die_with_parent, leave, write_through_streams
from mlops_ops.runners.warm.config import KINDS, PRELOAD, log
from mlops_ops.runners.warm.protocol import Request, receive_request, send_message


@dataclass
class _Job:
    conn: socket.socket
    pid: int = 0
    pidfd: int = -1
    killed: bool = False


@dataclass
class Parent:
    """The warm parent's single-threaded loop: accept, fork, reap, kill on hang-up, exit when idle."""

    socket_path: Path
    idle_seconds: float
    #: The lock held while this parent serves its key.
    lock: int = -1
    listener: socket.socket = field(init=False)
    inode: int = field(init=False, default=0)
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    jobs: dict[int, _Job] = field(default_factory=dict)

    def bind(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a parent that died left it; we hold the lock
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        self.inode = os.stat(self.socket_path).st_ino
        self.listener.listen(64)
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))

    def loop(self, preload: tuple[str, ...] = ()) -> Request | None:
        """Import ``preload`` one module at a time and serve meanwhile, then serve until idle; in a forked
        child, return its request instead.

        A step forked before the module it needs is loaded imports it itself, as a cold process would.
        """
        pending = list(preload)
        tend = _Tend(self)
        if pending:
            sys.meta_path.insert(0, tend)
        started = last = time.monotonic()
        try:
            while True:
                if pending:
                    _import(pending.pop(0))
                    gc.freeze()  # keep the imported objects' pages shared with the children
                    if not pending:
                        sys.meta_path.remove(tend)
                        log.info("warm parent %d preloaded in %.1fs", os.getpid(), time.monotonic() - started)
                events = self.selector.select(timeout=0 if pending else 5)
                while events:  # while preloading, serve all that waits before the next import
                    for key, _ in events:
                        kind, job = key.data
                        request = self._dispatch(kind, job)
                        if request is not None:
                            return request
                    last = time.monotonic()
                    events = self.selector.select(timeout=0) if pending else []
                if pending or self.jobs:
                    last = time.monotonic()
                elif time.monotonic() - last > self.idle_seconds:
                    self.close()
                    return None
        finally:  # a child forked mid-preload imports as a fresh interpreter does
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(tend)

    def tend(self) -> None:
        """Report the children that ended and kill those whose task hung up; forks nothing (see :class:`_Tend`)."""
        for key, _ in self.selector.select(timeout=0):
            kind, job = key.data
            if kind != "accept":
                self._dispatch(kind, job)

    def _dispatch(self, kind: str, job: _Job | None) -> Request | None:
        if kind == "accept":
            return self._accept()
        assert job is not None
        if job.pid not in self.jobs:  # reaped already by an event of the same batch
            return None
        if kind == "exited":
            self._reap(job)
        else:
            self._hang_up(job)
        return None

    def _accept(self) -> Request | None:
        conn, _ = self.listener.accept()
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            conn.close()
            return None
        try:
            request = receive_request(conn)
        except (OSError, ValueError) as exc:
            send_message(conn, {"error": f"bad request: {exc}"})
            conn.close()
            return None
        if threading.active_count() != 1:  # never fork with a second Python thread alive
            send_message(conn, {"error": "the warm parent has a thread; refusing to fork"})
            conn.close()
            return None
        return self._fork(conn, request)

    def _fork(self, conn: socket.socket, request: Request) -> Request | None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            die_with_parent(parent)
            self._forget(conn)
            return request
        with contextlib.suppress(OSError):  # also done by the child: whichever runs first wins the race
            os.setpgid(pid, pid)
        for fd in request.fds:
            os.close(fd)
        job = _Job(conn=conn, pid=pid, pidfd=os.pidfd_open(pid))
        self.jobs[pid] = job
        self.selector.register(job.pidfd, selectors.EVENT_READ, ("exited", job))
        self.selector.register(conn, selectors.EVENT_READ, ("hangup", job))
        send_message(conn, {"pid": pid, "parent": os.getpid()})
        return None

    def _forget(self, conn: socket.socket) -> None:
        """In the child: close the parent's sockets and process handles (their objects, so no finaliser
        later closes a reused descriptor)."""
        conn.close()
        self.listener.close()
        if self.lock >= 0:
            os.close(self.lock)
            self.lock = -1
        for job in self.jobs.values():
            job.conn.close()
            os.close(job.pidfd)
        self.selector.close()
        self.jobs.clear()

    def _hang_up(self, job: _Job) -> None:
        """The task process is gone or asked to stop: kill the step's process group."""
        self.selector.unregister(job.conn)
        job.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)

    def _reap(self, job: _Job) -> None:
        _, status = os.waitpid(job.pid, 0)
        self.selector.unregister(job.pidfd)
        os.close(job.pidfd)
        if not job.killed:
            self.selector.unregister(job.conn)
        send_message(job.conn, {"exit": os.waitstatus_to_exitcode(status)})
        job.conn.close()
        del self.jobs[job.pid]

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.socket_path).st_ino == self.inode:  # not a newer parent's socket
                self.socket_path.unlink()
        self.listener.close()
        self.selector.close()


class _Tend:
    """A finder on ``sys.meta_path`` that finds nothing: each module the parent imports lets it tend its children.

    Importing one library (Great Expectations, scikit-learn) takes seconds, and a step that ended meanwhile
    would wait that long for its exit code to reach its task. The parent only reaps and kills here, never
    forks: a child must not inherit a half-imported module.
    """

    def __init__(self, parent: Parent) -> None:
        self.parent = parent
        self.busy = False

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if not self.busy:  # what tending imports itself (nothing, normally) does not tend again
            self.busy = True
            try:
                self.parent.tend()
            finally:
                self.busy = False


def _import(name: str) -> None:
    started = time.perf_counter()
    try:
        importlib.import_module(name)
    except Exception as exc:  # a missing optional library leaves that import to the step
        log.warning("warm parent: could not import %s: %s", name, exc)
        return
    log.info("warm parent: imported %s in %.2fs", name, time.perf_counter() - started)


def _detach() -> None:
    """Leave the launching task: the launcher's ``run`` returns and the parent lives on by itself."""
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """``python -m mlops_ops.runners.warm --dir D --key K --bin B``: the warm parent (started by ``spawn``)."""
    import argparse
    import fcntl

    parser = argparse.ArgumentParser(prog="mlops_ops.runners.warm")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--bin", required=True, help="Folder of the mlops-ops script (sys.path[0] of a step).")
    parser.add_argument("--idle", type=float, default=600.0)
    parser.add_argument("--preload", default=",".join(PRELOAD))
    parser.add_argument(
        "--kind", choices=KINDS, default="step", help="step: mlops-ops steps; airflow: airflow commands"
    )
    parser.add_argument("--foreground", action="store_true")
    args = parser.parse_args(argv)
    if not args.foreground:
        _detach()
    folder = Path(args.dir)
    lock = os.open(folder / f"warm-{args.key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another warm parent of this key runs or is starting
    os.write(lock, f"{os.getpid()}\n".encode())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Only our own lines go to the parent's log; the root logger is left as a fresh interpreter has it.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    sys.path[0] = args.bin  # what the console script's interpreter puts first
    started = time.perf_counter()
    from mlops_ops.runners.warm import airflow_commands

    preload = tuple(m for m in args.preload.split(",") if m and m.split(".")[0] != "mlops_ops")
    parent = Parent(folder / f"warm-{args.key}.sock", args.idle, lock=lock)
    if args.kind == "airflow":  # its children need Airflow ready for any home: it listens once it is
        write_through_streams()
        for name in preload:
            _import(name)
        airflow_commands.prepare()
        gc.freeze()
        preload = ()
    parent.bind()
    log.info(
        "warm parent %d ready after %.1fs on %s; %d modules to preload",
        os.getpid(), time.perf_counter() - started, parent.socket_path, len(preload),
    )  # fmt: skip
    request = parent.loop(preload)
    if request is None:
        log.info("warm parent %d idle: exiting", os.getpid())
        return
    become_step(request)
    if args.kind == "airflow":
        try:
            airflow_commands.run()
        except SystemExit as exc:
            leave(exc.code)
        leave(0)
    from mlops_ops.cli import main as cli_main

    try:
        cli_main(args=request.argv[1:], prog_name=Path(request.argv[0]).name)
    except SystemExit as exc:
        leave(exc.code)
    leave(0)
