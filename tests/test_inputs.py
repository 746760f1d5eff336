"""Bad input and a database that is not what was expected end in one clear line and exit 1, never a traceback."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, operator_sql


def run(script, *args, **env):
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_health_on_a_database_never_migrated_is_one_unhealthy_line(database_url):
    # SQLite: the fixture's file does not exist yet, as with a mistyped path; MySQL: an empty database.
    result = run("schedule_daemon.py", "--health", DATABASE_URL=database_url)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith("UNHEALTHY: the database has no schedule tables: has a daemon ever started on it? "
                           "DATABASE_URL="), line
    assert "pw@" not in line and ":***@" in line or database_url.startswith("sqlite"), line


@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
def test_a_value_the_database_refuses_at_start_up_ends_the_daemon_with_one_line(db, database_url):
    # An operator narrowed a column. The first start's INSERT IGNORE stores the names cut short; every later
    # start's sync updates them and is refused (1406) on every try, so retrying would be pointless.
    operator_sql(db, "ALTER TABLE JobSchedule MODIFY name VARCHAR(5) NOT NULL")
    first = run("schedule_daemon.py", "--once", DATABASE_URL=database_url, APP_ENV="production")
    assert first.returncode == 0, first.stdout + first.stderr
    result = run("schedule_daemon.py", "--once", DATABASE_URL=database_url, APP_ENV="production")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: [daemon] start-up failed and retrying cannot fix it: MySQL error 1406"), line
