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

from tests.conftest import operator_sql, wait_for
from tests.fault_proxy import FaultProxy
from tests.test_faults import (Processes, assert_each_occurrence_ran_once, enable, now, runs,
                               wait_for_a_later_completed_run, wait_for_or_show)

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
    return min((r for r in runs(db) if r["queuedAt"] >= cue - timedelta(seconds=2) and r["startedAt"] is not None
                and r["startedAt"] >= cue), key=lambda r: r["startedAt"])


def settled(db, run: dict) -> dict:
    """Wait for the run's occurrence to complete; its batch row."""
    return wait_for(lambda: (b := db.fetch_one("get_batch", id=run["batchId"]))["completedAt"] and b, 30,
                    f"the occurrence of run {run['id']} to complete")


def test_a_queued_claim_whose_commit_answer_is_lost_is_read_back_and_run(db, processes, database_url):
    with worker_behind_a_proxy(db, processes, database_url) as (proxy, worker):
        cut = run_cut_at_commit(db, proxy, b"SET status = 'RUNNING', workerId", down_for=0)
        wait_for_or_show(processes, worker, lambda: f"the claim of run {cut['id']} " in processes.log_of(worker), 30,
                         "the worker to read its claim back")
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
            proxy.cut_at_commit(b"SET status = 'COMPLETED', completedAt", down_for=0)
            wait_for(lambda: proxy.cuts == cuts, 30, f"the proxy to cut finish number {cuts} at COMMIT")
        wait_for_or_show(processes, worker, lambda: processes.log_of(worker).count("result COMPLETED landed") >= 2, 30,
                         "the worker to read both finishes back")
        wait_for_a_later_completed_run(db, now() + timedelta(seconds=1), "fault.after")
    log = processes.log_of(worker)
    assert "had already been failed by recovery" not in log
    # Every occurrence that completed was counted on the schedule once, the cut ones too.
    [(completed_batches,)] = operator_sql(db, "SELECT COUNT(*) FROM JobBatch WHERE scheduleId = 'fault' "
                                              "AND completedAt IS NOT NULL")
    schedule = db.fetch_one("get_schedule", id="fault")
    assert (schedule["runCount"], schedule["failureCount"]) == (completed_batches, 0)
    assert {r["status"] for r in runs(db)} <= {"COMPLETED", "QUEUED"}
    assert_each_occurrence_ran_once(processes)
