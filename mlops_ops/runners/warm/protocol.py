"""What travels over a warm parent's socket: one request with two pipes, then JSON lines back.

A task process sends a length, the write ends of its stdout and stderr pipes (SCM_RIGHTS) and the request
as JSON; the parent answers ``{"pid": ..., "parent": ...}`` once it forked (or ``{"error": ...}``) and
``{"exit": code}`` once it reaped the child.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

_HEADER = struct.Struct("!Q")
_PROTOCOL = 1
#: Seconds either side waits on the other while a request is sent and answered.
TIMEOUT = 30


@dataclass
class Request:
    """What the child runs: the command line, environment and folder of the task, and its two pipes."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    fds: list[int]
    umask: int | None = None


def send_request(conn: socket.socket, request: Request) -> None:
    """Send ``request`` with its two pipes (the caller still owns and closes its copies of them)."""
    data = {"protocol": _PROTOCOL, "argv": request.argv, "env": request.env, "cwd": request.cwd, "umask": request.umask}
    payload = json.dumps(data).encode()
    conn.settimeout(TIMEOUT)
    socket.send_fds(conn, [_HEADER.pack(len(payload))], request.fds)
    conn.sendall(payload)


def receive_request(conn: socket.socket) -> Request:
    """The request a task process sent; ValueError (its pipes closed) if it is not one."""
    conn.settimeout(TIMEOUT)
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


def send_message(conn: socket.socket, message: dict[str, Any]) -> None:
    """Send one JSON line; a task process that has gone away is not an error."""
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


def read_message(conn: socket.socket, buffered: bytes, timeout: float | None) -> dict[str, Any] | None:
    """The next JSON line (bytes read past it under ``"_rest"``), or None if the connection ended or timed out."""
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
