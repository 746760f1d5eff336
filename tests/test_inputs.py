"""Bad input and a database that is not what was expected end in one clear line and exit 1, never a traceback."""

import os
import signal
import subprocess
import sys
import urllib.parse
from datetime import datetime

import pytest

from tests.admin_client import AdminServer
from tests.conftest import ROOT, operator_sql, wait_for
from tests.fault_proxy import FaultProxy


def run(script, *args, **env):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def test_health_on_a_database_never_migrated_is_one_unhealthy_line(database_url):
    # SQLite: the fixture's file does not exist yet, as with a mistyped path; MySQL: an empty database.
    result = run("schedule_daemon.py", "--health", DATABASE_URL=database_url)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith(
        "UNHEALTHY: the database has no schedule tables: has a daemon ever started on it? DATABASE_URL="
    ), line
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


@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
def test_the_embedded_worker_waits_for_the_database_at_start_up(db, database_url, tmp_path):
    # The database goes away for 3 s at the worker's first statement (SELECT VERSION()), after the server's
    # own start-up: the worker retries until it answers instead of ending the admin server with a traceback.
    parts = urllib.parse.urlsplit(database_url)
    proxy = FaultProxy(parts.hostname, parts.port)
    proxy.cut_at(b"SELECT VERSION()", down_for=3)
    log_path = tmp_path / "admin.log"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "admin_server.py")],
        cwd=tmp_path,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": proxy.url(parts.path.strip("/")),
            "ADMIN_TOKEN": "t" * 32,
            "HOST": "127.0.0.1",
            "PORT": "0",
            "APP_ENV": "test",
            "SCHEDULES_MODULE": "tests.sample_app",
            "EXECUTION_MODE": "queue",
            "EMBEDDED_JOB_WORKER": "true",
        },
    )
    try:
        wait_for(
            lambda: process.poll() is not None or "listening on http://" in log_path.read_text(),
            60,
            "the admin server to listen or end",
        )
        log = log_path.read_text()
        assert process.poll() is None and "Traceback" not in log, log
        assert proxy.cuts == 1 and "embedded job worker start-up: database unavailable, retrying" in log, log
        assert operator_sql(db, "SELECT status FROM WorkerInstance WHERE workerType = 'job_worker'") == [("RUNNING",)]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        proxy.close()


def test_the_api_describes_a_nickname_and_days_that_must_both_match(tmp_path):
    admin = AdminServer(
        f"sqlite:///{tmp_path / 'schedules.db'}", SCHEDULES_MODULE="tests.apps.cron_words", APP_ENV="test"
    )
    try:
        response = admin.request("GET", "/admin/schedules")
    finally:
        admin.close()
    assert response.status == 200
    schedules = {s["id"]: s for s in response.body["schedules"]}
    assert schedules["nickname"]["cronDescription"] == "At 12:00 AM"
    odd_mondays = schedules["odd-mondays"]
    assert odd_mondays["cronDescription"] == "At 12:00 PM, every 2 days, but only when that day is also on Monday"
    runs = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in odd_mondays["nextRunTimes"]]
    assert runs and all(t.weekday() == 0 and t.day % 2 == 1 for t in runs), runs  # what the words promise
    assert schedules["fifteenth-or-monday"]["cronDescription"] == "At 12:00 PM, on day 15 of the month, or on Monday"
