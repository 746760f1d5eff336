"""What every process shares: sync, presence, surviving database faults, recovery. (An occurrence: occurrence.py.)

- sync_definitions(): copy code definitions into JobSchedule (new ones disabled).
- Presence: a WorkerInstance row kept alive by a heartbeat thread, which also renews the leases of
  the schedules this process holds, so a long job keeps its lock and a dead process loses it.
- retry_until_stored(), run_loop(), until_database_answers(): how the loops survive database faults.
- recovery_needed(), recover(): is anything left behind by dead processes; free it (their RUNNING runs,
  their expired locks).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import alerts
from db import CLOCK_TOLERANCE, Database
from errors import Conflict, DatabaseBusy, DatabaseCannotWrite, DatabaseUnavailable, ScheduleJobsError, ValueRejected
from scheduling import App

log = logging.getLogger("runner")


RETRYABLE = (DatabaseUnavailable, DatabaseBusy, DatabaseCannotWrite)  # a later attempt of the same write can succeed


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
        rows = {row["id"]: row for row in db.fetch_all("list_schedule_definitions")}
        created = [s for s in app.schedules.values() if s.id not in rows]
        db.execute_many(
            "insert_schedule",
            [{"id": s.id, "name": s.name, "cron": s.cron, "timezone": s.timezone, "now": now} for s in created],
        )
        changed = []
        for s in app.schedules.values():
            row = rows.get(s.id)
            if row is not None and (row["cron"], row["timezone"], row["name"]) != (s.cron, s.timezone, s.name):
                changed.append(s.id)
                db.execute(
                    "update_schedule_definition",
                    id=s.id,
                    name=s.name,
                    cron=s.cron,
                    timezone=s.timezone,
                    next_run_at=s.next_after(now),
                    now=now,
                )
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
        self.db.insert(
            "register_worker",
            id=self.id,
            worker_type=self.worker_type,
            hostname=socket.gethostname()[:255],
            pid=os.getpid(),
            now=now or self.db.now(),
        )
        self.registered = True
        self._thread.start()

    def hold(self, schedule_id: str) -> None:
        with self._lock:
            self.held.add(schedule_id)

    def let_go(self, schedule_id: str) -> None:
        with self._lock:
            self.held.discard(schedule_id)

    def beat(self, now: datetime) -> None:
        """Heartbeat and renew every lease held, in one short transaction (a heartbeat alone needs none)."""
        with self._lock:
            held = sorted(self.held)
        if not held:  # idle: one statement a beat
            self.db.execute("heartbeat", id=self.id, now=now)
            return
        with self.db.transaction():
            self.db.execute("heartbeat", id=self.id, now=now)
            for schedule_id in held:
                self.db.execute("renew_lock", id=schedule_id, owner=self.id, now=now)

    def check_clock(self) -> None:
        """Measure the database's clock; warn when ours starts (or stops) differing from it by over a second."""
        offset = self.db.measure_clock()
        skewed = abs(offset) > CLOCK_TOLERANCE
        if skewed and not self.clock_skewed:
            log.warning(
                "[%s] this host's clock is %+.3fs off the database server's: from now on leases, heartbeats "
                "and run times follow the database's clock; keep every host in sync with NTP",
                self.worker_type,
                -offset.total_seconds(),
            )
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


def retry_until_stored(
    what: str,
    fn: Callable[[], Any],
    stopping: threading.Event,
    on_rejected: Callable[[ValueRejected], Any] | None = None,
) -> Any:
    """Call fn until the database takes it, backing off up to 30 s; give up only at shutdown.

    Used for writes that must not be lost (a run's outcome, a lock's release): without them a run
    would stay RUNNING, or a schedule locked, while this process is still alive. Every database error
    is retried (lost connection, busy, full or read-only, and any error db.py does not classify), except
    two definite answers: a duplicate (Conflict) is raised, and a value refused for good is answered by
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
        except Exception as exc:
            if isinstance(exc, Conflict) and not isinstance(exc, DatabaseBusy):
                raise
            if stopping.is_set():
                log.error("[runner] gave up %s at shutdown: %s (recovery will clean up)", what, exc)
                raise
            log.error("[runner] %s failed, retrying in %.1fs: %s: %s", what, delay, type(exc).__name__, exc)
            stopping.wait(delay)  # a stop signal ends the wait at once, for one last attempt
            delay = min(delay * 2, 30.0)


def run_loop(
    step: Callable[[datetime], bool],
    pause: Callable[[], float],
    stopping: threading.Event,
    label: str,
    clock: Callable[[], datetime] = utcnow,
    wake: threading.Event | None = None,
) -> None:
    """Until `stopping`: call step(clock()) while it did work, then sleep pause() seconds or until `wake` is set.

    A database outage or a bug in a step is logged and retried with backoff (up to 60 s): the
    process keeps going rather than dying with work half done. Whoever sets `wake` sets it at stop too.
    """
    backoff = 1.0
    while not stopping.is_set():
        try:
            if wake is not None:
                wake.clear()  # before the pass: a wake-up during it ends the sleep that follows at once
            while step(clock()) and not stopping.is_set():
                pass
            backoff = 1.0
            (wake or stopping).wait(pause())
        except (DatabaseUnavailable, Conflict) as exc:
            log.error("[%s] database error, retrying in %.0fs: %s", label, backoff, exc)
            stopping.wait(backoff)
            backoff = min(backoff * 2, 60.0)
        except Exception:
            log.exception("[%s] unexpected error, retrying in %.0fs", label, backoff)
            stopping.wait(backoff)
            backoff = min(backoff * 2, 60.0)


def until_database_answers(what: str, fn: Callable[[], Any], stopping: threading.Event, label: str) -> None:
    """Call fn until it gets through to the database (start-up steps), backing off up to 60 s.

    Any other error of ours (a value the database refuses, a bad configuration) would fail the same way
    on every retry: it ends the process with one line instead.
    """
    backoff = 1.0
    while not stopping.is_set():
        try:
            fn()
            return
        except (DatabaseUnavailable, Conflict) as exc:
            log.error("[%s] %s: database unavailable, retrying in %.0fs: %s", label, what, backoff, exc)
            stopping.wait(backoff)
            backoff = min(backoff * 2, 60.0)
        except ScheduleJobsError as exc:
            raise SystemExit(f"error: [{label}] {what} failed and retrying cannot fix it: {exc}") from exc


def log_result(
    label: str, job_name: str, status: str, duration_ms: int, error: str | None, fields: dict[str, Any] | None = None
) -> None:
    if status == "COMPLETED":
        log.info("[%s] OK %s completed in %d ms", label, job_name, duration_ms, extra=fields)
    else:
        log.error(
            "[%s] FAILED %s after %d ms: %s",
            label,
            job_name,
            duration_ms,
            (error or "").strip().splitlines()[-1],
            extra=fields,
        )


def recovery_needed(db: Database, now: datetime, lock_timeout: timedelta, own_id: str) -> bool:
    """Would recover() (or queue recovery) find anything: a silent instance, an orphaned run, an expired lease?"""
    return bool(db.fetch_value("recovery_needed", "needed", dead_before=now - lock_timeout, own_id=own_id))


def recover(db: Database, now: datetime, lock_timeout: timedelta, own_id: str) -> None:
    """Clean up after processes that died: mark them DEAD, fail their RUNNING runs, free expired locks.

    `own_id` is the instance asking: never itself dead, whatever its heartbeat says after an outage
    (it would fail its own runs while they go on)."""
    dead_before = now - lock_timeout
    error = (
        "FAILED: the daemon or worker running this job died (no heartbeat for "
        f"{lock_timeout.total_seconds():.0f}s: killed, crashed or cut off)"
    )
    with db.transaction():
        if db.execute("mark_dead_workers", dead_before=dead_before, own_id=own_id):
            log.warning("[recovery] marked instances silent since before %s as DEAD", dead_before.isoformat())
        orphans = db.fetch_all("inline_runs_of_dead_workers", own_id=own_id)
        failed = db.execute("fail_runs_of_dead_workers", now=now, error=error, own_id=own_id)
        alerts.runs_failed_by_recovery(db, orphans, error)  # in this transaction: a lost COMMIT loses neither
    if failed:
        log.warning("[recovery] marked %d orphaned RUNNING runs FAILED", failed)
    for row in db.fetch_all("expired_locks", expired_before=dead_before, own_id=own_id):
        if db.execute("free_expired_lock", id=row["id"], owner=row["lockedBy"], locked_at=row["lockedAt"], now=now):
            log.warning(
                "[recovery] freed the lock on %s held by %s since %s (lease expired)",
                row["id"],
                row["lockedBy"],
                row["lockedAt"].isoformat(),
            )
