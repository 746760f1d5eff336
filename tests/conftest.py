"""Fixtures: a real MariaDB server started for the session, and one `db` fixture over both backends.

The MariaDB server is Debian's mariadb-server, initialised in a temporary directory and listening on
a free loopback port; it is stopped at the end. Set TEST_MYSQL_URL=mysql://user:pw@host:port/ to use
a server of your own instead (each test creates a database of its own on it). Without MariaDB
the MySQL half of the suite is skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db import Database  # noqa: E402
from tests.mariadb_server import MariaDBServer, mariadb_available  # noqa: E402


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def mariadb_server():
    """The session's MariaDBServer (None when TEST_MYSQL_URL names a server of your own)."""
    if os.environ.get("TEST_MYSQL_URL"):
        yield None
        return
    if not mariadb_available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but mariadb-server is not installed: apt-get install -y mariadb-server")
        pytest.skip("mariadb-server is not installed (apt-get install -y mariadb-server)")
    server = MariaDBServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def mysql_server_url(mariadb_server):
    """Base URL (no database name) of the MySQL-compatible server the tests use."""
    if mariadb_server is None:
        return os.environ["TEST_MYSQL_URL"].rstrip("/") + "/"
    return mariadb_server.url


def _new_mysql_database(base_url: str) -> str:
    import pymysql

    parts = urllib.parse.urlsplit(base_url)
    name = "t_" + uuid.uuid4().hex[:12]
    conn = pymysql.connect(host=parts.hostname, port=parts.port, user=parts.username, password=parts.password or "")
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return base_url + name


@pytest.fixture(params=["sqlite", "mysql"])
def database_url(request, tmp_path):
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'schedules.db'}"
    return _new_mysql_database(request.getfixturevalue("mysql_server_url"))


@pytest.fixture
def db(database_url):
    """A migrated Database on each backend."""
    database = Database.from_url(database_url)
    database.migrate()
    yield database
    database.close()


def operator_connection(db: Database):
    """A plain driver connection to the test database, as an operator's SQL client would have."""
    if db.kind == "sqlite":
        import sqlite3

        return sqlite3.connect(db.params["path"], isolation_level=None, timeout=30)
    import pymysql

    p = db.params
    return pymysql.connect(
        host=p["host"], port=p["port"], user=p["user"], password=p["password"], database=p["database"], autocommit=True
    )


def operator_sql(db: Database, sql: str) -> list:
    """Run SQL exactly as written, outside the application's query file."""
    conn = operator_connection(db)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return list(cur.fetchall())
    finally:
        conn.close()
