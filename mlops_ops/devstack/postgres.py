"""A PostgreSQL server the dev stack uses (it does not run one), and throwaway databases on it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from mlops_ops.devstack.process import ServerNotReady, require

#: The setting that names the admin database; trust auth as ``postgres`` on loopback when it is unset.
URL_ENV = "MLOPS_POSTGRES_URL"
#: Its former name, still read so an existing set-up keeps working.
LEGACY_URL_ENV = "MLOPS_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT_SECONDS = 5
PSYCOPG2_INSTALL = "psycopg2 (`pip install psycopg2-binary`, or `pip install 'mlops-ops[airflow]'`)"


def admin_url(environ: Mapping[str, str]) -> str:
    """The admin database URL that ``environ`` names (``MLOPS_POSTGRES_URL``), or the loopback default."""
    return environ.get(URL_ENV) or environ.get(LEGACY_URL_ENV) or DEFAULT_URL


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL server and the admin URL used to create and drop databases on it."""

    admin_url: str

    def url(self, database: str, driver: str = "postgresql") -> str:
        """The URL of ``database`` on this server, with a SQLAlchemy ``driver`` such as ``postgresql+psycopg2``."""
        parts = urlsplit(self.admin_url)
        return urlunsplit((driver, parts.netloc, f"/{database}", parts.query, ""))

    def execute(self, statement: str) -> None:
        """Run one statement on the admin database, outside a transaction (as CREATE/DROP DATABASE need)."""
        psycopg2 = require("psycopg2", PSYCOPG2_INSTALL)
        connection = psycopg2.connect(self.admin_url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def check(self) -> None:
        """Raise ServerNotReady (MissingTool without psycopg2) unless the server answers a query."""
        try:
            self.execute("SELECT 1")
        except ServerNotReady:
            raise
        except Exception as exc:  # psycopg2.OperationalError: refused, auth, timeout
            raise ServerNotReady(f"PostgreSQL at {self.admin_url} is not reachable: {str(exc).strip()}") from exc

    @contextmanager
    def database(self, purpose: str) -> Iterator[str]:
        """A fresh, uniquely named database for ``purpose``; dropped (with its sessions) on exit."""
        name = f"mlops_{purpose}_{secrets.token_hex(4)}"
        self.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
