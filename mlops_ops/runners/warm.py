"""Warm step executor: a parent that has imported the step libraries forks a fresh process per step try.

A cold ``mlops-ops step`` pays for importing pandas, scikit-learn, MLflow and Great Expectations in
every process. Here one *warm parent* per user, interpreter and installed code imports them once and
then, for each step try, forks a child that runs the very command line a pod runs (same argv, same
``mlops_ops.cli.main``), with the task's environment and working directory, its own exit code, and
its stdout and stderr written straight into pipes the task process owns (passed over a Unix socket).

Fork hazards are kept out of the parent: it starts no Python thread, opens no database, HTTP client
or MLflow run, and forks only from its single-threaded loop (the native helper threads of OpenBLAS
and jemalloc that imports start are made fork-safe by their libraries' at-fork handlers). The child
re-reads everything from its own environment, as a fresh interpreter would.

The parent imports no part of mlops_ops that a step uses: each child drops the parent's ``mlops_ops``
modules and imports the package from disk, so edits to it never meet a stale parent.

The parent starts on first use, serves every task process of the machine that connects to its socket
(under ``$MLOPS_WARM_DIR``, else ``$XDG_RUNTIME_DIR/mlops-ops``, else ``<tmp>/mlops-ops-<uid>``; mode
0700 and only the same user may connect), and exits after ``$MLOPS_WARM_IDLE_SECONDS`` (600) idle.
If the task process goes away or asks to stop, the parent kills the child's process group.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import io
import json
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: ``0`` (or ``false``/``no``/``off``) turns the warm executor off: every step starts a cold process.
ENABLED_ENV = "MLOPS_WARM_EXECUTOR"
#: Seconds without a step after which the warm parent exits.
IDLE_ENV = "MLOPS_WARM_IDLE_SECONDS"
#: Folder of the warm parent's socket, lock and log.
DIR_ENV = "MLOPS_WARM_DIR"
#: How long a task waits for a starting warm parent before it runs its step cold.
START_ENV = "MLOPS_WARM_START_SECONDS"
#: Comma-separated modules the warm parent imports (default: :data:`PRELOAD`).
PRELOAD_ENV = "MLOPS_WARM_PRELOAD"

#: What the built-in steps import, measured with ``-X importtime`` (docs/performance.md).
PRELOAD = (
    "click",
    "pydantic",
    "pandas",
    "pyarrow.parquet",
    "pyarrow.csv",
    "pyarrow.compute",
    "sklearn.ensemble",
    "sklearn.compose",
    "sklearn.impute",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "matplotlib.pyplot",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.models",
    "mlflow.data.pandas_dataset",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "great_expectations",
)
#: Environment read while modules are imported (so fixed in a warm parent): parents differ by these.
IMPORT_TIME_PREFIXES = (
    "PYTHON", "LD_", "OMP_", "OPENBLAS_", "MKL_", "KMP_", "GOTO", "BLIS_", "NUMEXPR_", "SKLEARN_",
    "MPL", "ARROW_", "JE_", "MALLOC_", "GX_", "GE_", "SCIPY_", "NUMPY_", "TZ", "LANG", "LC_",
)  # fmt: skip
#: Set in every step's environment by the local runner; the child re-opens its streams to match.
_EMULATED = {"PYTHONUNBUFFERED"}
_HEADER = struct.Struct("!Q")
_PROTOCOL = 1

log = logging.getLogger("mlops_ops.runners.warm")


class WarmUnavailable(Exception):
    """The warm parent cannot run this step (off, not started in time, gone): run it cold instead."""


def enabled(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether the deployment allows the warm executor (``$MLOPS_WARM_EXECUTOR``, on by default on Linux)."""
    value = (environ if environ is not None else os.environ).get(ENABLED_ENV, "1").strip().lower()
    supported = hasattr(os, "pidfd_open") and hasattr(socket, "AF_UNIX") and hasattr(socket, "SO_PEERCRED")
    return supported and value not in {"0", "false", "no", "off", ""}


def runtime_dir() -> Path:
    """The folder of warm parents' sockets, created private (0700) and refused if anyone else can use it."""
    configured = os.environ.get(DIR_ENV)
    if configured:
        folder = Path(configured)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "mlops-ops"
    else:
        folder = Path(tempfile.gettempdir()) / f"mlops-ops-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not folder.is_dir() or folder.is_symlink():
        raise WarmUnavailable(f"{folder} must be a folder of this user with mode 0700")
    return folder


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    """The variables of ``env`` that libraries read when imported (so a warm parent is fixed to them)."""
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_PREFIXES) and k not in _EMULATED}


def _code_stamp() -> list[str]:
    """What identifies the parent's code: this module and the installed packages' folder.

    mlops_ops itself is not in it: the parent imports only other packages, and each child imports
    mlops_ops afresh (see :func:`become_step`), so editing the package never serves stale code.
    """
    this = Path(__file__).resolve()
    site = Path(importlib.import_module("click").__file__ or ".").resolve().parent.parent
    return [f"{this}:{this.stat().st_mtime_ns}", f"site:{site}:{site.stat().st_mtime_ns}"]


def parent_key(env: dict[str, str], preload: tuple[str, ...]) -> str:
    """One warm parent per interpreter, installed code, import-time environment and preload list."""
    parts = [sys.executable, sys.version, *_code_stamp(), json.dumps(import_time_env(env), sort_keys=True), *preload]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def preload_modules(environ: dict[str, str] | os._Environ[str] | None = None) -> tuple[str, ...]:
    configured = (environ if environ is not None else os.environ).get(PRELOAD_ENV)
    if configured is None:
        return PRELOAD
    return tuple(m.strip() for m in configured.split(",") if m.strip())


# ------------------------------------------------------------------------------------------- client


@dataclass
class WarmProcess:
    """A step process forked by the warm parent: read its output, wait for its exit code, or kill it."""

    pid: int
    parent_pid: int
    stdout: IO[str]
    stderr: IO[str]
    _conn: socket.socket
    _reply: bytes = b""
    returncode: int | None = None

    def wait(self) -> int:
        """The child's exit code as ``subprocess`` gives it (negative: killed by that signal)."""
        if self.returncode is None:
            message = _read_line(self._conn, self._reply, timeout=None)
            self._conn.close()
            if message is None or "exit" not in message:
                raise WarmUnavailable(f"the warm parent {self.parent_pid} ended before step process {self.pid} did")
            self.returncode = int(message["exit"])
        return self.returncode

    def kill(self) -> None:
        """Ask the warm parent to kill the step's process group; it reaps it and reports the exit code."""
        if self.returncode is None:
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_WR)


def _read_line(conn: socket.socket, buffered: bytes, timeout: float | None) -> dict[str, Any] | None:
    conn.settimeout(timeout)
    data = buffered
    while b"\n" not in data:
        try:
            chunk = conn.recv(4096)
        except (TimeoutError, OSError):
            return None
        if not chunk:
            return None
        data += chunk
    line, _, rest = data.partition(b"\n")
    message: dict[str, Any] = json.loads(line)
    message["_rest"] = rest
    return message


def spawn(argv: list[str], env: dict[str, str], cwd: str, *, timeout: float | None = None) -> WarmProcess:
    """Fork ``argv`` (entrypoint first) from the warm parent, starting the parent if none runs.

    Raises WarmUnavailable if no warm parent answers in time or it refuses the step; nothing has run then.
    """
    preload = preload_modules()
    folder = runtime_dir()
    key = parent_key(env, preload)
    path = folder / f"warm-{key}.sock"
    if len(os.fsencode(path)) >= 100:
        raise WarmUnavailable(f"the socket path {path} is too long for a Unix socket; set {DIR_ENV}")
    limit = float(os.environ.get(START_ENV, "120")) if timeout is None else timeout
    conn = _connect(path)
    if conn is None:
        _launch(folder, key, env, preload, bin_dir=str(Path(argv[0]).parent))
        started = time.monotonic()
        while conn is None and time.monotonic() < started + limit:
            time.sleep(0.2)
            conn = _connect(path)
            if conn is None and time.monotonic() > started + 10 and not _locked(folder / f"warm-{key}.lock"):
                raise WarmUnavailable(f"the warm parent exited while starting; see {folder / f'warm-{key}.log'}")
        if conn is None:
            raise WarmUnavailable(f"no warm parent answered on {path} within {limit:.0f}s")
    return _request(conn, argv, env, cwd)


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


def prestart(env: dict[str, str], entrypoint: str) -> bool:
    """Start the warm parent that steps run with ``env`` would use, without waiting for it (e.g. while
    Airflow migrates its database); False if the warm executor is off or a parent already answers."""
    if not enabled():
        return False
    preload = preload_modules()
    folder = runtime_dir()
    key = parent_key(env, preload)
    conn = _connect(folder / f"warm-{key}.sock")
    if conn is not None:
        conn.close()
        return False
    _launch(folder, key, env, preload, bin_dir=str(Path(entrypoint).parent))
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


def _request(conn: socket.socket, argv: list[str], env: dict[str, str], cwd: str) -> WarmProcess:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        request = {"protocol": _PROTOCOL, "argv": argv, "env": env, "cwd": cwd, "umask": _umask()}
        payload = json.dumps(request).encode()
        conn.settimeout(30)
        socket.send_fds(conn, [_HEADER.pack(len(payload))], [out_w, err_w])
        conn.sendall(payload)
        reply = _read_line(conn, b"", timeout=30)
    except OSError as exc:
        reply = None
        reason = str(exc)
    else:
        reason = "it closed the connection"
    finally:
        os.close(out_w)
        os.close(err_w)
    if reply is None or "pid" not in reply:
        conn.close()
        os.close(out_r)
        os.close(err_r)
        refused = (reply or {}).get("error")
        raise WarmUnavailable(f"the warm parent did not start the step: {refused or reason}")
    return WarmProcess(
        pid=int(reply["pid"]),
        parent_pid=int(reply["parent"]),
        stdout=open(out_r, encoding="utf-8", errors="replace"),
        stderr=open(err_r, encoding="utf-8", errors="replace"),
        _conn=conn,
        _reply=reply["_rest"],
    )


def _launch(folder: Path, key: str, env: dict[str, str], preload: tuple[str, ...], *, bin_dir: str) -> None:
    """Start a warm parent in its own session; it detaches at once (a second one exits on the lock)."""
    keep = {k: v for k, v in env.items() if k in {"PATH", "HOME", "TMPDIR", "USER", "LOGNAME"}}
    parent_env = keep | import_time_env(env)
    argv = [sys.executable, "-m", "mlops_ops.runners.warm", "--dir", str(folder), "--key", key, "--bin", bin_dir]
    argv += ["--idle", os.environ.get(IDLE_ENV, "600"), "--preload", ",".join(preload)]
    with open(os.open(folder / f"warm-{key}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as err:
        subprocess.run(
            argv, env=parent_env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True, check=False, timeout=60,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------- parent


@dataclass
class Request:
    """What the child runs: the command line, environment and folder of the task, and its two pipes."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    fds: list[int]
    umask: int | None = None


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

    def loop(self) -> Request | None:
        """Serve until idle; in a forked child, return its request instead."""
        last = time.monotonic()
        while True:
            events = self.selector.select(timeout=5)
            for key, _ in events:
                kind, job = key.data
                request = self._dispatch(kind, job)
                if request is not None:
                    return request
            if self.jobs or events:
                last = time.monotonic()
            elif time.monotonic() - last > self.idle_seconds:
                self.close()
                return None

    def _dispatch(self, kind: str, job: _Job | None) -> Request | None:
        if kind == "accept":
            return self._accept()
        assert job is not None
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
            request = _receive(conn)
        except (OSError, ValueError) as exc:
            _send(conn, {"error": f"bad request: {exc}"})
            conn.close()
            return None
        if threading.active_count() != 1:  # never fork with a second Python thread alive
            _send(conn, {"error": "the warm parent has a thread; refusing to fork"})
            conn.close()
            return None
        return self._fork(conn, request)

    def _fork(self, conn: socket.socket, request: Request) -> Request | None:
        pid = os.fork()
        if pid == 0:
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
        _send(conn, {"pid": pid, "parent": os.getpid()})
        return None

    def _forget(self, conn: socket.socket) -> None:
        """In the child: close the parent's sockets and process handles (their objects, so no finaliser
        later closes a reused descriptor)."""
        conn.close()
        self.listener.close()
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
        _send(job.conn, {"exit": os.waitstatus_to_exitcode(status)})
        job.conn.close()
        del self.jobs[job.pid]

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.socket_path).st_ino == self.inode:  # not a newer parent's socket
                self.socket_path.unlink()
        self.listener.close()
        self.selector.close()


def _receive(conn: socket.socket) -> Request:
    conn.settimeout(30)
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 2)
    if len(header) != _HEADER.size or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        raise ValueError("expected a length and two pipes")
    (size,) = _HEADER.unpack(header)
    chunks, got = [], 0
    while got < size:
        chunk = conn.recv(min(size - got, 1 << 20))
        if not chunk:
            raise ValueError("truncated request")
        chunks.append(chunk)
        got += len(chunk)
    data = json.loads(b"".join(chunks))
    if data.get("protocol") != _PROTOCOL:
        raise ValueError(f"protocol {data.get('protocol')!r}, expected {_PROTOCOL}")
    conn.settimeout(None)
    umask = data.get("umask")
    return Request(
        argv=list(data["argv"]),
        env=dict(data["env"]),
        cwd=str(data["cwd"]),
        fds=fds,
        umask=None if umask is None else int(umask),
    )


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


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
    sys.stdout = sys.__stdout__ = _stream(1, "strict")  # type: ignore[misc]
    sys.stderr = sys.__stderr__ = _stream(2, "backslashreplace")  # type: ignore[misc]
    os.environ.clear()
    os.environ.update(request.env)
    os.chdir(request.cwd)
    if request.umask is not None:  # files the step creates get the task's permissions
        os.umask(request.umask)
    tempfile.tempdir = None  # computed again from this step's TMPDIR
    sys.argv = list(request.argv)
    for name in [m for m in sys.modules if m == "mlops_ops" or m.startswith("mlops_ops.")]:
        del sys.modules[name]  # the step imports mlops_ops from disk, as a fresh interpreter does
    if "numpy" in sys.modules:  # a fresh interpreter seeds numpy's global generator from the OS
        sys.modules["numpy"].random.seed()
    for handler in log.handlers[:]:  # the parent's own log is not the step's
        log.removeHandler(handler)
    log.setLevel(logging.NOTSET)
    log.propagate = True


def _stream(fd: int, errors: str) -> io.TextIOWrapper:
    """A text stream on ``fd`` as ``PYTHONUNBUFFERED=1`` gives a fresh interpreter."""
    raw = open(fd, "wb", buffering=0, closefd=False)  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors=errors, line_buffering=False, write_through=True)


def _preload(modules: list[str]) -> None:
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library leaves that import to the step
            log.warning("warm parent: could not import %s: %s", name, exc)
            continue
        log.info("warm parent: imported %s in %.2fs", name, time.perf_counter() - started)


def _detach() -> None:
    """Leave the launching task: the launcher's ``run`` returns and the parent lives on by itself."""
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """``python -m mlops_ops.runners.warm --dir D --key K --bin B``: the warm parent (started by :func:`spawn`)."""
    import argparse
    import fcntl

    parser = argparse.ArgumentParser(prog="mlops_ops.runners.warm")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--bin", required=True, help="Folder of the mlops-ops script (sys.path[0] of a step).")
    parser.add_argument("--idle", type=float, default=600.0)
    parser.add_argument("--preload", default=",".join(PRELOAD))
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
    _preload([m for m in args.preload.split(",") if m and m.split(".")[0] != "mlops_ops"])
    gc.freeze()  # keep the imported objects' pages shared with the children
    parent = Parent(folder / f"warm-{args.key}.sock", args.idle)
    parent.bind()
    log.info("warm parent %d ready in %.1fs on %s", os.getpid(), time.perf_counter() - started, parent.socket_path)
    request = parent.loop()
    if request is None:
        log.info("warm parent %d idle for %.0fs: exiting", os.getpid(), args.idle)
        return
    os.close(lock)
    become_step(request)
    from mlops_ops.cli import main as cli_main

    cli_main(args=request.argv[1:], prog_name=Path(request.argv[0]).name)


if __name__ == "__main__":
    main()
