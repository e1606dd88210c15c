"""Skip-or-fail for the real-server tests; the process helpers themselves live in ``mlops_ops.devstack``."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from mlops_ops.devstack.process import (
    LOOPBACK,
    STOP_GRACE_SECONDS,
    MissingTool,
    ServerNotReady,
    find_executable,
    free_ports,
    log_tail,
    running,
    stop_process,
    wait_until,
)

__all__ = [
    "LOOPBACK",
    "STOP_GRACE_SECONDS",
    "MissingTool",
    "ServerNotReady",
    "find_executable",
    "free_ports",
    "in_ci",
    "log_tail",
    "running",
    "stop_process",
    "unavailable",
    "wait_until",
]


def in_ci() -> bool:
    """Whether we run under CI (``CI=true``), where a missing server must fail the build, not skip."""
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the requesting test because a server is unavailable, or fail it when running under CI."""
    if in_ci():
        pytest.fail(f"{reason}\n(CI=true: a real-server test must not be skipped)", pytrace=False)
    pytest.skip(reason)
