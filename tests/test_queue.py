"""Queue mode in-process on both backends: enqueue, claim order, retries, skips, recovery, health."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

from health import check_health
from jobs import JobRegistry
from occurrence import enqueue_occurrence
from queue_mode import JobWorker, recover_queued_runs
from runner import sync_definitions
from scheduling import App, ScheduleDefinition
from settings import Settings
from tests.admin_client import AdminServer
from tests.conftest import ROOT, wait_for
from tests.inprocess import InProcessPool

T0 = datetime(2026, 1, 10, 2, 0, tzinfo=timezone.utc)
SETTINGS = Settings.from_env({"EXECUTION_MODE": "queue", "HEARTBEAT_INTERVAL_MS": "1000", "LOCK_TIMEOUT_MS": "5000"})


def make_app(fail_times: dict[str, int] | None = None, retries: int = 0):
    """extract -> transform, and report on its own; a job fails its first fail_times[name] attempts."""
    registry = JobRegistry()
    calls: list[tuple[str, int]] = []
    failures = dict(fail_times or {})

    def body(name):
        def run(ctx):
            calls.append((name, ctx.attempt))
            if failures.get(name, 0) >= ctx.attempt:
                raise RuntimeError(f"{name} attempt {ctx.attempt} broke")

        return run

    registry.job(group="etl", name="extract", retries=retries, retry_backoff_s=10)(body("extract"))
    registry.job(group="etl", name="transform", depends_on=["extract"])(body("transform"))
    registry.job(group="etl", name="report")(body("report"))
    schedule = ScheduleDefinition("etl", "ETL", "", "* * * * *")
    return App({"etl": schedule}, registry, "test"), calls


def runs_of(db):
    rows = db.fetch_all("list_runs", status=None, schedule_id="etl", job_name=None, before=None, limit=100)
    return sorted((r["jobName"], r["attempt"], r["status"]) for r in rows)


def drain(worker, now):
    """What the worker's main loop and executor do, in this thread: claim, run, record, until nothing is ready."""
    while runs := worker.claim(now, 10):
        worker.record([worker.execute(run) for run in runs])


def claim_one(worker, now):
    runs = worker.claim(now, 1)
    return runs[0] if runs else None


def setup(db, **app_kwargs):
    app, calls = make_app(**app_kwargs)
    sync_definitions(db, app, T0)
    worker = JobWorker(db, app, SETTINGS, pool=InProcessPool(db))
    db.insert("register_worker", id=worker.presence.id, worker_type="job_worker", hostname="h", pid=1, now=T0)
    worker.next_recovery = T0 + timedelta(days=1)  # recovery is tested on its own below
    with db.transaction():
        batch = enqueue_occurrence(db, app, app.schedules["etl"], T0, "CRON", T0)
    return app, calls, worker, batch


def test_enqueued_runs_wait_for_their_dependencies(db):
    app, calls, worker, batch = setup(db)
    assert runs_of(db) == [("extract", 1, "QUEUED"), ("report", 1, "QUEUED"), ("transform", 1, "QUEUED")]
    first = claim_one(worker, T0)
    second = claim_one(worker, T0)
    assert {first.job_name, second.job_name} == {"extract", "report"}
    assert claim_one(worker, T0) is None, "transform is blocked until extract completed"
    worker.record([worker.execute(first if first.job_name == "extract" else second)])
    assert claim_one(worker, T0).job_name == "transform"


def test_an_occurrence_counts_once_when_its_last_run_finishes(db):
    app, calls, worker, batch = setup(db)
    drain(worker, T0)
    assert [name for name, _ in calls].index("extract") < [name for name, _ in calls].index("transform")
    assert runs_of(db) == [("extract", 1, "COMPLETED"), ("report", 1, "COMPLETED"), ("transform", 1, "COMPLETED")]
    row = db.fetch_one("get_schedule", id="etl")
    assert (row["runCount"], row["failureCount"]) == (1, 0)
    assert db.fetch_one("get_batch", id=batch)["remaining"] == 0


def test_a_failed_run_is_retried_after_its_backoff_and_history_keeps_every_attempt(db):
    app, calls, worker, batch = setup(db, fail_times={"extract": 1}, retries=2)
    drain(worker, T0)
    assert ("extract", 1, "FAILED") in runs_of(db) and ("extract", 2, "QUEUED") in runs_of(db)
    # The backoff runs from the failure, which happened in real time.
    failed_at = db.fetch_all("list_runs", status="FAILED", schedule_id="etl", job_name=None, before=None, limit=1)[0][
        "completedAt"
    ]
    drain(worker, failed_at + timedelta(seconds=9))
    assert ("extract", 2, "QUEUED") in runs_of(db), "not before the 10 s backoff"
    drain(worker, failed_at + timedelta(seconds=11))
    assert runs_of(db) == [
        ("extract", 1, "FAILED"),
        ("extract", 2, "COMPLETED"),
        ("report", 1, "COMPLETED"),
        ("transform", 1, "COMPLETED"),
    ]
    assert db.fetch_one("get_schedule", id="etl")["runCount"] == 1


def test_a_final_failure_skips_the_dependents_and_fails_the_occurrence(db):
    app, calls, worker, batch = setup(db, fail_times={"extract": 9})
    drain(worker, T0)
    assert runs_of(db) == [("extract", 1, "FAILED"), ("report", 1, "COMPLETED"), ("transform", 1, "SKIPPED")]
    transform = db.fetch_all("list_runs", status="SKIPPED", schedule_id="etl", job_name=None, before=None, limit=1)[0]
    assert "dependency extract FAILED" in transform["error"] and "transform" not in [n for n, _ in calls]
    row = db.fetch_one("get_schedule", id="etl")
    assert (row["runCount"], row["failureCount"]) == (0, 1)


def test_runs_of_a_dead_worker_are_retried_or_failed(db):
    app, calls, worker, batch = setup(db, retries=1)
    extract, report = sorted(worker.claim(T0, 2), key=lambda run: run.job_name)
    db.execute(
        "mark_dead_workers", dead_before=T0 + timedelta(seconds=1), own_id="the-test"
    )  # the worker stopped heartbeating
    assert recover_queued_runs(db, app, T0 + timedelta(seconds=6), "the-test") == 2
    statuses = runs_of(db)
    assert ("extract", 1, "FAILED") in statuses and ("extract", 2, "QUEUED") in statuses  # retries=1
    assert ("report", 1, "FAILED") in statuses and ("report", 2, "QUEUED") not in statuses  # no retries
    died = db.fetch_one("get_run", id=report.id)
    assert "died" in died["error"]
    assert recover_queued_runs(db, app, T0 + timedelta(seconds=7), "the-test") == 0, "recovered once only"
    assert extract.id != report.id


class PoolThatCannotStartReport(InProcessPool):
    """The supervisor's own side fails for one job (no child can be started for it, say)."""

    def run(self, job, call):
        if call.job_name == "report":
            raise OSError("cannot fork: resource temporarily unavailable")
        return super().run(job, call)


def test_a_run_the_worker_itself_fails_to_start_ends_failed_and_the_worker_goes_on(db):
    app, calls = make_app()
    sync_definitions(db, app, T0)
    settings = Settings.from_env({"EXECUTION_MODE": "queue", "JOB_WORKER_POLL_INTERVAL_MS": "50"})
    worker = JobWorker(db, app, settings, pool=PoolThatCannotStartReport(db))
    worker.start()
    now = datetime.now(timezone.utc)
    with db.transaction():
        batch = enqueue_occurrence(db, app, app.schedules["etl"], now, "CRON", now)
    loop = threading.Thread(target=worker.run_forever)
    loop.start()
    try:
        done = wait_for(lambda: (b := db.fetch_one("get_batch", id=batch))["completedAt"] and b, 20, "the occurrence")
    finally:
        worker.stop()
        loop.join(30)
    runs = {r["jobName"]: r for r in db.fetch_all("batch_runs", batch_id=batch)}
    assert runs["report"]["status"] == "FAILED" and "could not run it" in runs["report"]["error"]
    assert runs["extract"]["status"] == runs["transform"]["status"] == "COMPLETED"
    assert done["failed"] == 1 and not loop.is_alive() and worker.stopped.is_set()


def test_run_now_in_queue_mode_answers_202_with_the_queued_run_ids(database_url):
    server = AdminServer(database_url, EXECUTION_MODE="queue")
    try:
        response = server.request("POST", "/admin/schedules/feed-refresh/trigger")
        assert response.status == 202 and response.body["jobsQueued"] == 3
        runs = [server.db.fetch_one("get_run", id=i) for i in response.body["runIds"]]
        assert all(r["status"] == "QUEUED" and r["trigger"] == "MANUAL" for r in runs)
        assert server.db.fetch_one("get_schedule", id="feed-refresh")["nextRunAt"] is None
    finally:
        server.close()


# -- health ----------------------------------------------------------------------------------------------


def problems(db, now, **env):
    return check_health(db, Settings.from_env(env), now)["problems"]


def test_healthy_with_a_live_daemon_and_nothing_overdue(db):
    db.insert("register_worker", id="d1", worker_type="schedule_daemon", hostname="h", pid=1, now=T0)
    assert problems(db, T0 + timedelta(seconds=30)) == []


def test_each_unhealthy_case_is_reported(db):
    assert any("no live schedule daemon" in p for p in problems(db, T0))
    db.insert("register_worker", id="d1", worker_type="schedule_daemon", hostname="h", pid=1, now=T0)
    assert any("last heartbeat 180s ago" in p for p in problems(db, T0 + timedelta(seconds=180)))
    db.execute("heartbeat", id="d1", now=T0 + timedelta(hours=2))
    later = T0 + timedelta(hours=2, seconds=10)
    app, _ = make_app()
    sync_definitions(db, app, T0)
    db.execute("enable_schedule", id="etl", next_run_at=T0 + timedelta(hours=1), now=T0)
    assert any("schedule etl is overdue" in p for p in problems(db, later))
    db.execute(
        "claim_occurrence",
        id="etl",
        due=T0 + timedelta(hours=1),
        next_run_at=T0 + timedelta(hours=3),
        owner="d1",
        now=T0 + timedelta(hours=1),
    )
    assert any("schedule etl is locked by d1" in p for p in problems(db, later))
    with db.transaction():
        for i in range(20):
            enqueue_occurrence(db, app, app.schedules["etl"], T0 + timedelta(seconds=i), "MANUAL", T0)
    found = problems(db, later)
    assert any("60 runs queued, more than 50" in p for p in found)
    assert any("has been queued for 7210s" in p for p in found)
    db.insert("register_worker", id="d2", worker_type="schedule_daemon", hostname="h", pid=2, now=later)
    db.execute("heartbeat", id="d2", now=later)
    assert any("2 live schedule_daemon instances, expected 1" in p for p in problems(db, later, EXPECTED_DAEMONS="1"))
    assert any("no live job worker" in p for p in problems(db, later, EXECUTION_MODE="queue"))


def test_health_command_exits_0_or_1_with_one_reason_a_line(database_url, db):
    def health():
        return subprocess.run(
            [sys.executable, str(ROOT / "schedule_daemon.py"), "--health"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url},
        )

    unhealthy = health()
    assert unhealthy.returncode == 1 and unhealthy.stdout.startswith("UNHEALTHY: no live schedule daemon")
    db.insert(
        "register_worker", id="d1", worker_type="schedule_daemon", hostname="h", pid=1, now=datetime.now(timezone.utc)
    )
    healthy = health()
    assert (healthy.returncode, healthy.stdout.strip()) == (0, "healthy")


def test_queue_mode_is_refused_on_servers_without_skip_locked(db):
    from queue_mode import require_skip_locked, skip_locked_problem

    assert skip_locked_problem("8.0.36") is None and skip_locked_problem("10.11.19-MariaDB-0+deb12u1") is None
    assert "MySQL 8.0.1 or later" in skip_locked_problem("5.7.44-log")
    assert "MariaDB 10.6 or later" in skip_locked_problem("10.5.23-MariaDB")
    require_skip_locked(db)  # both backends of the suite support queue mode
