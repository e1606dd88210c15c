"""Pytest plugin: the PostgreSQL server the machine runs (``mlops_ops.devstack.postgres``) for the session."""

from __future__ import annotations

import os

import pytest

from mlops_ops.devstack.postgres import DEFAULT_URL, LEGACY_URL_ENV, URL_ENV, Postgres, admin_url
from mlops_ops.devstack.process import ServerNotReady
from tests.servers._proc import unavailable

__all__ = ["DEFAULT_URL", "LEGACY_URL_ENV", "URL_ENV", "Postgres", "postgres"]


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    """The PostgreSQL server at ``$MLOPS_POSTGRES_URL`` (default: trust auth as postgres on 127.0.0.1:5432).

    Skips the tests that use it when the server cannot be reached; fails them instead when ``CI=true``.
    """
    server = Postgres(admin_url(os.environ))
    try:
        server.check()
    except ServerNotReady as exc:  # MissingTool (no psycopg2) included
        unavailable(str(exc))
    return server
