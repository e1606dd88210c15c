"""Pytest plugin: the PostgreSQL server the machine runs, and throwaway databases on it for one session."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.servers._proc import unavailable

#: Where the admin database is; trust auth as ``postgres`` on loopback unless the environment says otherwise.
URL_ENV = "MLOPS_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Postgres:
    """A reachable PostgreSQL server and the admin URL used to create and drop databases on it."""

    admin_url: str

    def url(self, database: str, driver: str = "postgresql") -> str:
        """The URL of ``database`` on this server, with a SQLAlchemy ``driver`` such as ``postgresql+psycopg2``."""
        parts = urlsplit(self.admin_url)
        return urlunsplit((driver, parts.netloc, f"/{database}", parts.query, ""))

    def _execute(self, statement: str) -> None:
        import psycopg2

        connection = psycopg2.connect(self.admin_url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            connection.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    @contextmanager
    def database(self, purpose: str) -> Iterator[str]:
        """A fresh, uniquely named database for ``purpose``; dropped (with its sessions) on exit."""
        name = f"mlops_{purpose}_{secrets.token_hex(4)}"
        self._execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    """The PostgreSQL server at ``$MLOPS_TEST_POSTGRES_URL`` (default: trust auth as postgres on 127.0.0.1:5432).

    Skips the tests that use it when the server cannot be reached; fails them instead when ``CI=true``.
    """
    server = Postgres(os.environ.get(URL_ENV) or DEFAULT_URL)
    try:
        server._execute("SELECT 1")
    except ImportError:
        unavailable("psycopg2 is not installed: install the dev dependency group (psycopg2-binary)")
    except Exception as exc:  # psycopg2.OperationalError: refused, auth, timeout
        unavailable(f"PostgreSQL at {server.admin_url} is not reachable: {str(exc).strip()}")
    return server
