"""The engine the daemon and the admin server share: sync, presence, running an occurrence, recovery.

- sync_definitions(): copy code definitions into JobSchedule (new ones disabled).
- Presence: a WorkerInstance row kept alive by a heartbeat thread, which also renews the leases of
  the schedules this process holds, so a long job keeps its lock and a dead process loses it.
- run_occurrence(): run a schedule's jobs inline, in dependency order, one JobRun row each.
- run_claimed(): run_occurrence() under a claim already taken, then release it whatever happens.
- recover(): free what dead processes left behind (their RUNNING runs, their expired locks).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import alerts
import pings
from db import CLOCK_TOLERANCE, Database, utc_ms
from errors import Conflict, DatabaseBusy, DatabaseUnavailable, ValueRejected
from jobs import Job, JobContext
from scheduling import App, ScheduleDefinition

log = logging.getLogger("runner")

WHOLE_OCCURRENCE = "*"  # JobRun.jobName of a record about a whole occurrence (e.g. skipped)
RETRYABLE = (DatabaseUnavailable, DatabaseBusy)  # a later attempt of the same write can succeed


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class SyncReport:
    created: list[str]
    changed: list[str]
    orphaned: list[str]


def sync_definitions(db: Database, app: App, now: datetime) -> SyncReport:
    """Create missing schedules disabled, copy changed cron/time zone/name, unschedule rows not in code."""
    with db.transaction():
        rows = {row["id"]: row for row in db.fetch_all("list_schedules")}
        created = [s for s in app.schedules.values() if s.id not in rows]
        db.execute_many("insert_schedule", [
            {"id": s.id, "name": s.name, "cron": s.cron, "timezone": s.timezone, "now": now} for s in created
        ])
        changed = []
        for s in app.schedules.values():
            row = rows.get(s.id)
            if row is not None and (row["cron"], row["timezone"], row["name"]) != (s.cron, s.timezone, s.name):
                changed.append(s.id)
                db.execute("update_schedule_definition", id=s.id, name=s.name, cron=s.cron, timezone=s.timezone,
                           next_run_at=s.next_after(now), now=now)
        orphaned = sorted(set(rows) - set(app.schedules))
        for schedule_id in orphaned:
            db.execute("unschedule", id=schedule_id, now=now)
    for schedule_id in orphaned:
        log.warning("[sync] schedule %r is in the database but not in code: kept, never run", schedule_id)
    return SyncReport([s.id for s in created], changed, orphaned)


class Presence:
    """This process's WorkerInstance row, its heartbeat thread, and the schedule leases it holds."""

    def __init__(self, db: Database, worker_type: str, heartbeat_interval_s: float):
        self.db = db
        self.worker_type = worker_type
        self.id = str(uuid.uuid4())
        self.heartbeat_interval_s = heartbeat_interval_s
        self.held: set[str] = set()
        self.registered = False
        self.clock_skewed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_forever, name=f"{worker_type}-heartbeat", daemon=True)

    def register(self, now: datetime | None = None) -> None:
        """Insert the WorkerInstance row (at the database's time unless `now` is given) and start beating."""
        self.check_clock()
        self.db.insert("register_worker", id=self.id, worker_type=self.worker_type,
                       hostname=socket.gethostname()[:255], pid=os.getpid(), now=now or self.db.now())
        self.registered = True
        self._thread.start()

    def hold(self, schedule_id: str) -> None:
        with self._lock:
            self.held.add(schedule_id)

    def let_go(self, schedule_id: str) -> None:
        with self._lock:
            self.held.discard(schedule_id)

    def beat(self, now: datetime) -> None:
        """Heartbeat and renew every lease held, in one short transaction."""
        with self._lock:
            held = sorted(self.held)
        with self.db.transaction():
            self.db.execute("heartbeat", id=self.id, now=now)
            for schedule_id in held:
                self.db.execute("renew_lock", id=schedule_id, owner=self.id, now=now)

    def check_clock(self) -> None:
        """Measure the database's clock; warn when ours starts (or stops) differing from it by over a second."""
        offset = self.db.measure_clock()
        skewed = abs(offset) > CLOCK_TOLERANCE
        if skewed and not self.clock_skewed:
            log.warning("[%s] this host's clock is %+.3fs off the database server's: from now on leases, heartbeats "
                        "and run times follow the database's clock; keep every host in sync with NTP", self.worker_type,
                        -offset.total_seconds())
        elif self.clock_skewed and not skewed:
            log.info("[%s] this host's clock agrees with the database server's again", self.worker_type)
        self.clock_skewed = skewed

    def stop(self, now: datetime) -> None:
        """Stop heartbeating and mark the row STOPPED (best effort: recovery handles a failure here)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        try:
            self.db.execute("stop_worker", id=self.id, now=now)
        except RETRYABLE as exc:
            log.error("[%s] could not mark %s STOPPED: %s", self.worker_type, self.id, exc)

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s):
            try:
                self.check_clock()
                self.beat(self.db.now())
            except Exception as exc:  # the database may be down; the next beat tries again
                log.error("[%s] heartbeat failed: %s", self.worker_type, exc)
        self.db.close()


def retry_until_stored(what: str, fn: Callable[[], Any], stopping: threading.Event,
                       on_rejected: Callable[[ValueRejected], Any] | None = None) -> Any:
    """Call fn until the database takes it, backing off up to 30 s; give up only at shutdown.

    Used for writes that must not be lost (a run's outcome, a lock's release): without them a run
    would stay RUNNING, or a schedule locked, while this process is still alive. Lost connections and
    busy databases (lock waits, deadlocks) are retried; a value refused for good is answered by
    on_rejected, a plainer write of the same outcome, instead of leaving the run as it was.
    """
    delay = 0.5
    while True:
        try:
            return fn()
        except ValueRejected as exc:
            if on_rejected is None:
                raise
            log.error("[runner] %s: the database refused a value, storing a plainer outcome: %s", what, exc)
            fn, on_rejected = functools.partial(on_rejected, exc), None
        except RETRYABLE as exc:
            if stopping.is_set():
                log.error("[runner] gave up %s at shutdown: %s (recovery will clean up)", what, exc)
                raise
            log.error("[runner] %s failed, retrying in %.1fs: %s", what, delay, exc)
            stopping.wait(delay)  # a stop signal ends the wait at once, for one last attempt
            delay = min(delay * 2, 30.0)


def run_loop(step: Callable[[datetime], bool], pause: Callable[[], float], stopping: threading.Event, label: str,
             clock: Callable[[], datetime] = utcnow) -> None:
    """Until `stopping`: call step(clock()) while it did work, then sleep pause() seconds.

    A database outage or a bug in a step is logged and retried with backoff (up to 60 s): the
    process keeps going rather than dying with work half done.
    """
    backoff = 1.0
    while not stopping.is_set():
        try:
            while step(clock()) and not stopping.is_set():
                pass
            backoff = 1.0
            stopping.wait(pause())
        except (DatabaseUnavailable, Conflict) as exc:
            log.error("[%s] database error, retrying in %.0fs: %s", label, backoff, exc)
            stopping.wait(backoff)
            backoff = min(backoff * 2, 60.0)
        except Exception:
            log.exception("[%s] unexpected error, retrying in %.0fs", label, backoff)
            stopping.wait(backoff)
            backoff = min(backoff * 2, 60.0)


def until_database_answers(what: str, fn: Callable[[], Any], stopping: threading.Event, label: str) -> None:
    """Call fn until it gets through to the database (start-up steps), backing off up to 60 s."""
    backoff = 1.0
    while not stopping.is_set():
        try:
            fn()
            return
        except (DatabaseUnavailable, Conflict) as exc:
            log.error("[%s] %s: database unavailable, retrying in %.0fs: %s", label, what, backoff, exc)
            stopping.wait(backoff)
            backoff = min(backoff * 2, 60.0)


@dataclass
class Outcome:
    """What one occurrence did: one entry per job in `runs`."""

    runs: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.runs if r["status"] == status)

    @property
    def ok(self) -> bool:
        """An occurrence fails when any of its jobs failed or was skipped (including at shutdown)."""
        return all(r["status"] == "COMPLETED" for r in self.runs)


def run_occurrence(db: Database, app: App, schedule: ScheduleDefinition, scheduled_for: datetime, trigger: str,
                   worker_id: str, stopping: threading.Event, label: str = "daemon") -> Outcome:
    """Run the schedule's jobs now, inline and in order. Never holds a transaction while a job runs."""
    jobs = app.jobs_for(schedule)
    batch_id = str(uuid.uuid4())
    outcome = Outcome()
    not_completed: dict[str, str] = {}  # job name -> status, for the dependents' skip reason
    log.info('[%s] Executing %d jobs inline for "%s" (%s, %s, occurrence %s)', label, len(jobs), schedule.name,
             schedule.id, trigger, scheduled_for.isoformat())
    pings.started(schedule.ping_url, trigger)

    def record(**fields: Any) -> int:
        row = {"job_name": None, "trigger": trigger, "schedule_id": schedule.id, "scheduled_for": scheduled_for,
               "batch_id": batch_id, "attempt": 1, "worker_id": worker_id, "queued_at": None, "started_at": None,
               "completed_at": None, "duration_ms": None, "error": None, "now": db.now(), **fields}
        return retry_until_stored("recording a run", lambda: insert_run_once(db, row), stopping)

    for job in jobs:
        blocked = [dep for dep in job.depends_on if dep in not_completed]
        if blocked or stopping.is_set():
            reason = ("not started: the daemon is shutting down" if not blocked else
                      "not started: dependency " + ", ".join(f"{d} {not_completed[d]}" for d in blocked))
            run_id = record(job_name=job.name, status="SKIPPED", error=reason)
            not_completed[job.name] = "SKIPPED"
            outcome.runs.append({"id": run_id, "jobName": job.name, "status": "SKIPPED", "error": reason})
            log.warning("[%s] - %s skipped: %s", label, job.name, reason)
            continue
        run_id = record(job_name=job.name, status="RUNNING", started_at=db.now())
        fields = {"scheduleId": schedule.id, "jobName": job.name, "runId": run_id}  # JSON logs' filterable fields
        log.info("[%s] -> Executing: %s (run %s)", label, job.name, run_id, extra=fields)
        ctx = JobContext(run_id, job.name, schedule.id, scheduled_for, trigger, 1, db)
        status, error, completed, duration_ms = execute_job(job, ctx)
        stored = retry_until_stored("recording a job's result", lambda: db.execute(
            "finish_run", id=run_id, status=status, completed_at=completed, duration_ms=duration_ms, error=error,
        ), stopping, on_rejected=lambda exc: db.execute(
            "finish_run", id=run_id, status=status, completed_at=completed, duration_ms=duration_ms,
            error=f"the job's error text was refused by the database ({exc}); see this process's log"))
        if not stored:
            log.error("[%s] run %s was no longer RUNNING: recovery failed it (this process lost the database for "
                      "longer than LOCK_TIMEOUT_MS), or an attempt whose answer was lost stored %s", label, run_id, status)
        log_result(label, job.name, status, duration_ms, error, fields)
        if status != "COMPLETED":
            not_completed[job.name] = "FAILED"
            alerts.run_failed(db, schedule.id, job.name, run_id, error, trigger)
        outcome.runs.append({"id": run_id, "jobName": job.name, "status": status, "error": error})
    log.info("[%s] Schedule complete: %s: %d succeeded, %d failed, %d skipped", label, schedule.id,
             outcome.count("COMPLETED"), outcome.count("FAILED"), outcome.count("SKIPPED"))
    alerts.occurrence_finished(db, schedule.id, trigger, outcome.ok)
    pings.finished(schedule.ping_url, trigger, outcome.ok)
    return outcome


def insert_run_once(db: Database, row: dict[str, Any]) -> int:
    """insert_run, safe to retry: after a connection lost at COMMIT the row may be there already."""
    try:
        return db.insert("insert_run", **row)
    except DatabaseBusy:
        raise
    except Conflict:
        found = db.fetch_one("find_run", schedule_id=row["schedule_id"], scheduled_for=row["scheduled_for"],
                             job_name=row["job_name"], trigger=row["trigger"], attempt=row["attempt"])
        if found is None or (found["workerId"], found["createdAt"]) != (row["worker_id"], utc_ms(row["now"])):
            raise  # not this attempt's row: the unique key refused a second run of the occurrence
        return found["id"]


def execute_job(job: Job, ctx: JobContext) -> tuple[str, str | None, datetime, int]:
    """Call the job: (status, error with traceback, completed at, duration in ms). Never raises."""
    started = time.monotonic()
    error = None
    try:
        job.fn(ctx)
        status = "COMPLETED"
    except Exception:
        status, error = "FAILED", traceback.format_exc()
    return status, error, ctx.db.now(), int((time.monotonic() - started) * 1000)


def log_result(label: str, job_name: str, status: str, duration_ms: int, error: str | None,
               fields: dict[str, Any] | None = None) -> None:
    if status == "COMPLETED":
        log.info("[%s] OK %s completed in %d ms", label, job_name, duration_ms, extra=fields)
    else:
        log.error("[%s] FAILED %s after %d ms: %s", label, job_name, duration_ms, (error or "").strip().splitlines()[-1],
                  extra=fields)


def run_claimed(db: Database, app: App, presence: Presence, schedule: ScheduleDefinition,
                scheduled_for: datetime, trigger: str, started: datetime, stopping: threading.Event,
                label: str) -> Outcome:
    """Run an occurrence whose claim this process holds, then release the claim with its result."""
    presence.hold(schedule.id)
    outcome = Outcome()
    try:
        outcome = run_occurrence(db, app, schedule, scheduled_for, trigger, presence.id, stopping, label)
    finally:
        presence.let_go(schedule.id)  # the lease is renewed only while the run is in progress
        released = retry_until_stored("releasing the schedule", lambda: db.execute(
            "release_schedule", id=schedule.id, owner=presence.id, last_run_at=started, now=db.now(),
            succeeded=1 if outcome.ok and outcome.runs else 0, failed=0 if outcome.ok else 1,
        ), stopping)
        if not released:
            log.error("[%s] lock on %s had expired and was taken back before release", label, schedule.id)
    return outcome


def skipped_record(schedule_id: str, first: datetime, last: datetime, reason: str, worker_id: str,
                   now: datetime) -> dict[str, Any]:
    """The JobRun row that tells the history an occurrence (or a range of them) did not run."""
    span = first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
    return {"job_name": WHOLE_OCCURRENCE, "trigger": "CRON", "schedule_id": schedule_id, "scheduled_for": first,
            "batch_id": None, "attempt": 1, "status": "SKIPPED", "worker_id": worker_id, "queued_at": None,
            "started_at": None, "completed_at": now, "duration_ms": None, "error": f"skipped {span}: {reason}",
            "now": now}


def recover(db: Database, now: datetime, lock_timeout: timedelta) -> None:
    """Clean up after processes that died: mark them DEAD, fail their RUNNING runs, free expired locks."""
    dead_before = now - lock_timeout
    error = ("FAILED: the daemon or worker running this job died (no heartbeat for "
             f"{lock_timeout.total_seconds():.0f}s: killed, crashed or cut off)")
    with db.transaction():
        if db.execute("mark_dead_workers", dead_before=dead_before):
            log.warning("[recovery] marked instances silent since before %s as DEAD", dead_before.isoformat())
        orphans = db.fetch_all("inline_runs_of_dead_workers")
        failed = db.execute("fail_runs_of_dead_workers", now=now, error=error)
    if failed:
        log.warning("[recovery] marked %d orphaned RUNNING runs FAILED", failed)
    for run in orphans:
        alerts.run_failed(db, run["scheduleId"], run["jobName"], run["id"], error, run["trigger"])
    for row in db.fetch_all("expired_locks", expired_before=dead_before):
        if db.execute("free_expired_lock", id=row["id"], owner=row["lockedBy"], locked_at=row["lockedAt"], now=now):
            log.warning("[recovery] freed the lock on %s held by %s since %s (lease expired)",
                        row["id"], row["lockedBy"], row["lockedAt"].isoformat())
