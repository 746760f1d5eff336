"""The run path's remaining "stuck forever" holes (issue 8, review findings 1, 2 and 3), with real processes.

A queue worker's claim or finish whose COMMIT answer is lost (tests/fault_proxy.py cuts the worker's
connection at that COMMIT), and a database that refuses writes for a while (a full SQLite file, stood in
for by PRAGMA max_page_count; a read-only MariaDB): each run still ends with a recorded outcome, and the
occurrence is counted.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from datetime import timedelta

import pytest

from errors import DatabaseCannotWrite
from runner import RETRYABLE
from tests.conftest import operator_sql, wait_for
from tests.fault_proxy import FaultProxy
from tests.test_faults import (
    Processes,
    assert_each_occurrence_ran_once,
    enable,
    insert_running_run,
    now,
    problems,
    runs,
    wait_for_a_later_completed_run,
    wait_for_or_show,
)

QUEUE = {"EXECUTION_MODE": "queue", "LOCK_TIMEOUT_MS": "8000"}


@pytest.fixture
def processes(database_url, tmp_path):
    group = Processes(database_url, tmp_path)
    yield group
    group.stop_all()


@contextlib.contextmanager
def worker_behind_a_proxy(db, processes, database_url):
    """A queue-mode daemon on the database directly, and a job worker whose connections pass a FaultProxy."""
    if db.kind != "mysql":
        pytest.skip("SQLite has no connection to lose")
    parts = urllib.parse.urlsplit(database_url)
    proxy = FaultProxy(parts.hostname, parts.port)
    try:
        processes.start(**QUEUE)
        processes.database_url = proxy.url(parts.path.strip("/"))
        worker = processes.start("--worker", **QUEUE)
        enable(db)
        wait_for(lambda: any(r["status"] == "COMPLETED" for r in runs(db, "fault.after")), 30, "a first occurrence")
        yield proxy, worker
    finally:
        processes.stop_all()
        proxy.close()


def run_cut_at_commit(db, proxy, marker: bytes, down_for: float) -> dict:
    """Cut the worker's connection at the COMMIT of its next statement containing `marker`; the fault.work run cut."""
    cue = now()
    proxy.cut_at_commit(marker, down_for=down_for)
    wait_for(lambda: proxy.cuts == 1, 30, "the proxy to cut a COMMIT")
    return min(
        (
            r
            for r in runs(db)
            if r["queuedAt"] >= cue - timedelta(seconds=2) and r["startedAt"] is not None and r["startedAt"] >= cue
        ),
        key=lambda r: r["startedAt"],
    )


def settled(db, run: dict) -> dict:
    """Wait for the run's occurrence to complete; its batch row."""
    return wait_for(
        lambda: (b := db.fetch_one("get_batch", id=run["batchId"]))["completedAt"] and b,
        30,
        f"the occurrence of run {run['id']} to complete",
    )


def test_a_queued_claim_whose_commit_answer_is_lost_is_read_back_and_run(db, processes, database_url):
    with worker_behind_a_proxy(db, processes, database_url) as (proxy, worker):
        cut = run_cut_at_commit(db, proxy, b"SET status = 'RUNNING', workerId", down_for=0)
        wait_for_or_show(
            processes,
            worker,
            lambda: f"the claim of run {cut['id']} " in processes.log_of(worker),
            30,
            "the worker to read its claim back",
        )
        batch = settled(db, cut)
        assert db.fetch_one("get_run", id=cut["id"])["status"] == "COMPLETED"
        assert (batch["remaining"], batch["failed"]) == (0, 0)
        [after] = [r for r in runs(db, "fault.after") if r["batchId"] == cut["batchId"]]
        assert after["status"] == "COMPLETED"
        wait_for_a_later_completed_run(db, cut["scheduledFor"])
    assert_each_occurrence_ran_once(processes)


def test_a_queued_claim_the_worker_lost_track_of_is_failed_by_its_own_housekeeping(db, processes, database_url):
    with worker_behind_a_proxy(db, processes, database_url) as (proxy, worker):
        # Down for 2 s: the read-back fails too, so only the housekeeping safety net can settle the run.
        cut = run_cut_at_commit(db, proxy, b"SET status = 'RUNNING', workerId", down_for=2)
        batch = settled(db, cut)
        run = db.fetch_one("get_run", id=cut["id"])
        assert run["status"] == "FAILED" and "lost track of the claim" in run["error"], run
        assert run["workerId"] == cut["workerId"]
        assert batch["failed"] >= 1
        [after] = [r for r in runs(db, "fault.after") if r["batchId"] == cut["batchId"]]
        assert after["status"] == "SKIPPED"
        wait_for_a_later_completed_run(db, cut["scheduledFor"])
        assert worker.poll() is None
    assert_each_occurrence_ran_once(processes)


def test_a_queued_finish_whose_commit_answer_is_lost_still_does_what_follows_it(db, processes, database_url):
    with worker_behind_a_proxy(db, processes, database_url) as (proxy, worker):
        # Two cuts in a row: the first finish of an occurrence (fault.work's, which unblocks fault.after) and
        # the next one (usually fault.after's, which completes the batch and must count the occurrence).
        for cuts in (1, 2):
            proxy.cut_at_commit(b"SET status = CASE id", down_for=0)
            wait_for(lambda cuts=cuts: proxy.cuts == cuts, 30, f"the proxy to cut finish number {cuts} at COMMIT")
        wait_for_or_show(
            processes,
            worker,
            lambda: processes.log_of(worker).count("landed: completing what follows") >= 2,
            30,
            "the worker to read both finishes back",
        )
        wait_for_a_later_completed_run(db, now() + timedelta(seconds=1), "fault.after")
    log = processes.log_of(worker)
    assert "had already been failed by recovery" not in log
    # Every occurrence that completed was counted on the schedule once, the cut ones too.
    [(completed_batches,)] = operator_sql(
        db, "SELECT COUNT(*) FROM JobBatch WHERE scheduleId = 'fault' AND completedAt IS NOT NULL"
    )
    schedule = db.fetch_one("get_schedule", id="fault")
    assert (schedule["runCount"], schedule["failureCount"]) == (completed_batches, 0)
    assert {r["status"] for r in runs(db)} <= {"COMPLETED", "QUEUED"}
    assert_each_occurrence_ran_once(processes)


# -- a database that takes no writes for a while ---------------------------------------------------------


def test_a_full_or_read_only_database_is_classified_as_transient(db):
    """SQLite's real "database or disk is full" (a page limit on this connection) and MariaDB's read-only
    transaction (1792) become DatabaseCannotWrite, which the outcome writes retry."""
    conn = db._connection()  # the Database's own connection: the limit holds for it alone
    if db.kind == "sqlite":
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        lift = f"PRAGMA max_page_count = {2**30}"
    else:
        conn.cursor().execute("SET SESSION TRANSACTION READ ONLY")
        lift = "SET SESSION TRANSACTION READ WRITE"
    at = now()
    rows = [{"id": f"s{n}", "name": "x" * 190, "cron": "* * * * * *", "timezone": "UTC", "now": at} for n in range(200)]
    with pytest.raises(DatabaseCannotWrite), db.transaction():
        db.execute_many("insert_schedule", rows)
    assert DatabaseCannotWrite in RETRYABLE
    conn.cursor().execute(lift)
    with db.transaction():
        db.execute_many("insert_schedule", rows)
    assert len(db.fetch_all("list_schedules")) == 200


@pytest.fixture
def root_sql(mariadb_server):
    """Run SQL as the test server's root (over its socket): what only an administrator may do."""
    if mariadb_server is None:
        pytest.skip("needs the suite's own MariaDB server (TEST_MYSQL_URL names another)")
    import pymysql

    def run(sql: str) -> None:
        conn = pymysql.connect(unix_socket=str(mariadb_server.dir / "sock"), user="root", autocommit=True)
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    return run


def test_an_inline_outcome_refused_by_a_read_only_server_is_stored_once_it_takes_writes(
    db, processes, database_url, tmp_path, request
):
    if db.kind != "mysql":
        pytest.skip("SQLite's full disk is shown in-process above: a page limit holds for one connection only")
    root_sql = request.getfixturevalue("root_sql")
    parts = urllib.parse.urlsplit(database_url)
    database, user = parts.path.strip("/"), "w_" + parts.path.strip("/")[2:]
    # A user without SUPER, so that read_only applies to it (the suite's `test` user has every privilege).
    root_sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'w'")
    root_sql(f"GRANT ALL ON {database}.* TO '{user}'@'%'")
    hold = tmp_path / "hold"
    hold.touch()
    processes.database_url = f"mysql://{user}:w@{parts.hostname}:{parts.port}/{database}"
    daemon = processes.start(TEST_HOLD_FILE=str(hold), LOCK_TIMEOUT_MS="3000")
    try:
        enable(db)
        held = wait_for(lambda: next((r for r in runs(db) if r["status"] == "RUNNING"), None), 30, "the job to start")
        root_sql("SET GLOBAL read_only = 1")
        hold.unlink()
        wait_for_or_show(
            processes,
            daemon,
            lambda: "DatabaseCannotWrite" in processes.log_of(daemon),
            30,
            "the daemon to retry the refused outcome",
        )
        wait_for(
            lambda: any(f"run {held['id']} " in p for p in problems(db)), 20, "the health check to name the stuck run"
        )
        refused = processes.log_of(daemon).count("DatabaseCannotWrite")
        wait_for(lambda: processes.log_of(daemon).count("DatabaseCannotWrite") > refused, 30, "another refused attempt")
        assert db.fetch_one("get_run", id=held["id"])["status"] == "RUNNING"
    finally:
        root_sql("SET GLOBAL read_only = 0")
    run = wait_for_or_show(
        processes,
        daemon,
        lambda: (r := db.fetch_one("get_run", id=held["id"]))["status"] != "RUNNING" and r,
        60,
        "the outcome to be stored once the server takes writes",
    )
    assert run["status"] == "COMPLETED", run
    wait_for_a_later_completed_run(db, held["scheduledFor"])
    processes.stop_all()
    assert db.fetch_one("get_schedule", id="fault")["runCount"] >= 2
    assert not any(f"run {held['id']} " in p for p in problems(db))
    assert_each_occurrence_ran_once(processes)


def test_health_names_an_inline_run_whose_live_holder_no_longer_holds_its_schedule(db):
    at = now()
    db.insert("register_worker", id="alive", worker_type="schedule_daemon", hostname="h", pid=1, now=at)
    db.execute("insert_schedule", id="fault", name="Fault", cron="* * * * * *", timezone="UTC", now=at)
    run_id = insert_running_run(db, "alive", at)
    [problem] = [p for p in problems(db) if f"run {run_id} " in p]
    assert "no longer holds the schedule" in problem
    operator_sql(db, "UPDATE JobSchedule SET lockedBy = 'alive' WHERE id = 'fault'")  # a long run, still held
    assert not any(f"run {run_id} " in p for p in problems(db))
