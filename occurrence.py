"""The home of an occurrence: claiming it, running or queueing its jobs, recording each run, releasing it.

The daemon, "Run now" (admin_server.py, `schedule_daemon.py --run`) and the job workers call it.

- Executor (InlineExecutor or QueueExecutor), chosen once where a daemon starts, from EXECUTION_MODE:
  how an occurrence is claimed and what follows. Inline: the claim locks the schedule and the
  occurrence runs here, up to SCHEDULE_CONCURRENCY at once, each on a thread of its own whose jobs run
  in this process's supervised children. Queue: the claim moves nextRunAt and enqueues the jobs.
- run_occurrence(): a schedule's jobs in dependency order, each in a supervised child, one JobRun row each.
- run_claimed(): run_occurrence() under a claim already taken, then release it whatever happens.
- run_now(): "Run now": claim without moving nextRunAt, then run_claimed().
- enqueue_occurrence(): queue mode's QUEUED runs of an occurrence, inside the claim's transaction.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import alerts
import pings
from db import Database, utc_ms
from errors import Conflict, DatabaseBusy, ValueRejected
from queue_mode import require_skip_locked
from records import JobCall, JobPool, RunRecord, RunStatus
from runner import Presence, log_result, retry_until_stored, utcnow
from scheduling import App, ScheduleDefinition
from settings import Settings
from supervisor import ChildPool

log = logging.getLogger("occurrence")

WHOLE_OCCURRENCE = "*"  # JobRun.jobName of a record about a whole occurrence (e.g. skipped)


class InlineExecutor:
    """EXECUTION_MODE=inline: a claimed occurrence runs in this process, its jobs in supervised children."""

    description = "inline (each job runs in a supervised child process of this daemon)"

    def __init__(
        self,
        db: Database,
        app: App,
        settings: Settings,
        presence: Presence,
        stopping: threading.Event,
        wake: threading.Event,
        pool: JobPool | None = None,
    ):
        self.db = db
        self.app = app
        self.presence = presence
        self.stopping = stopping
        self.wake = wake  # set when an occurrence ends: its schedule is free again
        self.pool = pool or ChildPool(db, settings, settings.schedules_module, "daemon")
        self.slots = threading.BoundedSemaphore(settings.schedule_concurrency)  # occurrences running at once
        self.wait_s = settings.heartbeat_interval_ms / 1000
        self.runs: set[threading.Thread] = set()

    def prepare(self) -> None:
        pass

    def expect(self, due_in: float) -> None:
        """The next occurrence is due in `due_in` seconds: a child is started shortly before, so it pays no
        cold start, while the daemon holds no child in between (supervisor.PREWARM_LEAD_S)."""
        self.pool.expect(due_in)

    def reserve(self) -> bool:
        """Wait for one of SCHEDULE_CONCURRENCY slots before claiming; False at shutdown."""
        while not self.slots.acquire(timeout=self.wait_s):
            if self.stopping.is_set():
                return False
        if self.stopping.is_set():
            self.slots.release()
            return False
        return True

    def unreserve(self) -> None:
        self.slots.release()

    def claim(self, schedule: ScheduleDefinition, due: datetime, next_run_at: datetime, now: datetime) -> bool:
        """Inside the caller's transaction: lock the schedule and move nextRunAt past the occurrence read as due."""
        return (
            self.db.execute(
                "claim_occurrence", id=schedule.id, due=due, next_run_at=next_run_at, owner=self.presence.id, now=now
            )
            == 1
        )

    def within_claim(self, schedule: ScheduleDefinition, occurrence: datetime, now: datetime) -> str | None:
        return None

    def claim_landed(self, schedule: ScheduleDefinition, batch_id: str | None) -> bool:
        row = self.db.fetch_one("get_schedule", id=schedule.id)
        return row is not None and row["lockedBy"] == self.presence.id

    def start(self, schedule: ScheduleDefinition, occurrence: datetime, claimed_at: datetime) -> None:
        """Run the claimed occurrence on a thread of its own, which takes over the reserved slot."""
        self.presence.hold(schedule.id)  # renewed from now on, before the thread starts
        thread = threading.Thread(target=self._run, args=(schedule, occurrence, claimed_at), name=f"run-{schedule.id}")
        self.runs.add(thread)
        thread.start()

    def _run(self, schedule: ScheduleDefinition, occurrence: datetime, claimed_at: datetime) -> None:
        try:
            run_claimed(
                self.db,
                self.app,
                self.pool,
                self.presence,
                schedule,
                occurrence,
                "CRON",
                claimed_at,
                self.stopping,
                "daemon",
            )
        except Exception:  # run_claimed records and releases whatever happens; this is for a bug in it
            log.exception("[daemon] the run of %s ended with an unexpected error", schedule.id)
        finally:
            self.db.close()  # this thread's connection
            self.runs.discard(threading.current_thread())
            self.slots.release()
            self.wake.set()

    def wait(self) -> None:
        """Until every occurrence started here has ended (and released its schedule)."""
        for thread in list(self.runs):
            thread.join()

    def end_runs_after_grace(self) -> None:
        self.pool.end_runs_after_grace()

    def close(self) -> None:
        self.wait()
        self.pool.close()


class QueueExecutor:
    """EXECUTION_MODE=queue: claiming an occurrence enqueues its jobs; job workers run them."""

    description = "queue (jobs are queued for job workers)"

    def __init__(self, db: Database, app: App):
        self.db = db
        self.app = app

    def prepare(self) -> None:
        require_skip_locked(self.db)

    def expect(self, due_in: float) -> None:
        pass

    def reserve(self) -> bool:
        return True  # enqueueing takes no slot: workers bound the work

    def unreserve(self) -> None:
        pass

    def claim(self, schedule: ScheduleDefinition, due: datetime, next_run_at: datetime, now: datetime) -> bool:
        return self.db.execute("advance_occurrence", id=schedule.id, due=due, next_run_at=next_run_at, now=now) == 1

    def within_claim(self, schedule: ScheduleDefinition, occurrence: datetime, now: datetime) -> str | None:
        return enqueue_occurrence(self.db, self.app, schedule, occurrence, "CRON", now)

    def claim_landed(self, schedule: ScheduleDefinition, batch_id: str | None) -> bool:
        return batch_id is not None and self.db.fetch_one("get_batch", id=batch_id) is not None

    def start(self, schedule: ScheduleDefinition, occurrence: datetime, claimed_at: datetime) -> None:
        pings.started(schedule.ping_url, "CRON")
        log.info(
            '[daemon] Queued %d jobs for "%s" (%s, occurrence %s)',
            len(self.app.jobs_for(schedule)),
            schedule.name,
            schedule.id,
            occurrence.isoformat(),
        )

    def wait(self) -> None:
        pass

    def end_runs_after_grace(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Outcome:
    """What one occurrence did: one entry per job in `runs`."""

    runs: list[RunRecord] = field(default_factory=list)

    def count(self, status: RunStatus) -> int:
        return sum(1 for r in self.runs if r.status is status)

    @property
    def ok(self) -> bool:
        """An occurrence fails when any of its jobs failed or was skipped (including at shutdown)."""
        return all(r.status is RunStatus.COMPLETED for r in self.runs)


def store_plain_error(finish: Callable[..., int], refused: ValueRejected) -> int:
    """Write a job's outcome again with a plain error when the database refused the job's own error text."""
    return finish(error=f"the job's error text was refused by the database ({refused}); see this process's log")


def run_occurrence(
    db: Database,
    app: App,
    pool: JobPool,
    schedule: ScheduleDefinition,
    scheduled_for: datetime,
    trigger: str,
    worker_id: str,
    stopping: threading.Event,
    label: str = "daemon",
) -> Outcome:
    """Run the schedule's jobs now, in order, each in a supervised child. Never holds a transaction while a job runs."""
    jobs = app.jobs_for(schedule)
    batch_id = str(uuid.uuid4())
    outcome = Outcome()
    not_completed: dict[str, str] = {}  # job name -> status, for the dependents' skip reason
    log.info(
        '[%s] Executing %d jobs inline for "%s" (%s, %s, occurrence %s)',
        label,
        len(jobs),
        schedule.name,
        schedule.id,
        trigger,
        scheduled_for.isoformat(),
    )
    pings.started(schedule.ping_url, trigger)

    def record(**fields: Any) -> int:
        row = {
            "job_name": None,
            "trigger": trigger,
            "schedule_id": schedule.id,
            "scheduled_for": scheduled_for,
            "batch_id": batch_id,
            "attempt": 1,
            "worker_id": worker_id,
            "queued_at": None,
            "started_at": None,
            "completed_at": None,
            "duration_ms": None,
            "error": None,
            "now": db.now(),
            **fields,
        }
        run_id: int = retry_until_stored("recording a run", lambda: insert_run_once(db, row), stopping)
        return run_id

    for job in jobs:
        blocked = [dep for dep in job.depends_on if dep in not_completed]
        if blocked or stopping.is_set():
            reason = (
                "not started: the daemon is shutting down"
                if not blocked
                else "not started: dependency " + ", ".join(f"{d} {not_completed[d]}" for d in blocked)
            )
            run_id = record(job_name=job.name, status=RunStatus.SKIPPED.value, error=reason)
            not_completed[job.name] = RunStatus.SKIPPED.value
            outcome.runs.append(RunRecord(run_id, job.name, RunStatus.SKIPPED, reason))
            log.warning("[%s] - %s skipped: %s", label, job.name, reason)
            continue
        run_id = record(job_name=job.name, status=RunStatus.RUNNING.value, started_at=db.now())
        fields = {"scheduleId": schedule.id, "jobName": job.name, "runId": run_id}  # JSON logs' filterable fields
        log.info("[%s] -> Executing: %s (run %s)", label, job.name, run_id, extra=fields)
        result = pool.run(job, JobCall(run_id, job.name, schedule.id, scheduled_for, trigger, 1))
        status, error, completed, duration_ms = result.status, result.error, db.now(), result.duration_ms
        finish = functools.partial(
            db.execute, "finish_run", id=run_id, status=status.value, completed_at=completed, duration_ms=duration_ms
        )  # bound now: the retries must write this job's result
        stored = retry_until_stored(
            "recording a job's result",
            functools.partial(finish, error=error),
            stopping,
            on_rejected=functools.partial(store_plain_error, finish),
        )
        if not stored:
            log.error(
                "[%s] run %s was no longer RUNNING: recovery failed it (this process lost the database for "
                "longer than LOCK_TIMEOUT_MS), or an attempt whose answer was lost stored %s",
                label,
                run_id,
                status.value,
            )
        log_result(label, job.name, status.value, duration_ms, error, fields)
        if status is not RunStatus.COMPLETED:
            not_completed[job.name] = RunStatus.FAILED.value
            alerts.run_failed(db, schedule.id, job.name, run_id, error, trigger)
        outcome.runs.append(RunRecord(run_id, job.name, status, error))
    log.info(
        "[%s] Schedule complete: %s: %d succeeded, %d failed, %d skipped",
        label,
        schedule.id,
        outcome.count(RunStatus.COMPLETED),
        outcome.count(RunStatus.FAILED),
        outcome.count(RunStatus.SKIPPED),
    )
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
        found = db.fetch_one(
            "find_run",
            schedule_id=row["schedule_id"],
            scheduled_for=row["scheduled_for"],
            job_name=row["job_name"],
            trigger=row["trigger"],
            attempt=row["attempt"],
        )
        if found is None or (found["workerId"], found["createdAt"]) != (row["worker_id"], utc_ms(row["now"])):
            raise  # not this attempt's row: the unique key refused a second run of the occurrence
        return int(found["id"])


def run_claimed(
    db: Database,
    app: App,
    pool: JobPool,
    presence: Presence,
    schedule: ScheduleDefinition,
    scheduled_for: datetime,
    trigger: str,
    started: datetime,
    stopping: threading.Event,
    label: str,
) -> Outcome:
    """Run an occurrence whose claim this process holds, then release the claim with its result."""
    presence.hold(schedule.id)
    outcome = Outcome()
    try:
        outcome = run_occurrence(db, app, pool, schedule, scheduled_for, trigger, presence.id, stopping, label)
    finally:
        presence.let_go(schedule.id)  # the lease is renewed only while the run is in progress
        released = retry_until_stored(
            "releasing the schedule",
            lambda: db.execute(
                "release_schedule",
                id=schedule.id,
                owner=presence.id,
                last_run_at=started,
                now=db.now(),
                # An empty outcome is an occurrence that broke off (run_occurrence raised): a failure, not a success.
                succeeded=1 if outcome.ok and outcome.runs else 0,
                failed=0 if outcome.ok and outcome.runs else 1,
            ),
            stopping,
        )
        if not released:
            log.error("[%s] lock on %s had expired and was taken back before release", label, schedule.id)
    return outcome


def run_now(
    db: Database,
    app: App,
    pool: JobPool,
    schedule: ScheduleDefinition,
    worker_type: str,
    heartbeat_interval_s: float,
    stopping: threading.Event,
    label: str,
    in_claim: Callable[[datetime], None] = lambda now: None,
) -> Outcome | None:
    """ "Run now": claim the schedule without moving nextRunAt, run its jobs supervised (trigger MANUAL), release.

    `in_claim(now)` runs inside the claim's transaction (the admin's audit entry). None, and nothing
    run, when someone holds the schedule. Disabled schedules run too.
    """
    presence = Presence(db, worker_type, heartbeat_interval_s)
    now = utc_ms(utcnow())  # the occurrence of a manual run is the moment it was asked for
    with db.transaction():
        if db.execute("claim_schedule_now", id=schedule.id, owner=presence.id, now=now) != 1:
            return None
        in_claim(now)
    # Registered after the claim commits: a failed claim leaves no heartbeat thread behind. Until
    # then the lock names an instance with no row; if this process dies there, the lease expires.
    presence.register(now)
    try:
        return run_claimed(db, app, pool, presence, schedule, now, "MANUAL", now, stopping, label)
    finally:
        presence.stop(utcnow())


def skipped_record(
    schedule_id: str, first: datetime, last: datetime, reason: str, worker_id: str, now: datetime
) -> dict[str, Any]:
    """The JobRun row that tells the history an occurrence (or a range of them) did not run."""
    span = first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
    return {
        "job_name": WHOLE_OCCURRENCE,
        "trigger": "CRON",
        "schedule_id": schedule_id,
        "scheduled_for": first,
        "batch_id": None,
        "attempt": 1,
        "status": RunStatus.SKIPPED.value,
        "worker_id": worker_id,
        "queued_at": None,
        "started_at": None,
        "completed_at": now,
        "duration_ms": None,
        "error": f"skipped {span}: {reason}",
        "now": now,
    }


def enqueue_occurrence(
    db: Database, app: App, schedule: ScheduleDefinition, scheduled_for: datetime, trigger: str, now: datetime
) -> str:
    """Insert the occurrence's jobs as QUEUED runs (inside the caller's transaction); returns the batch id."""
    jobs = app.jobs_for(schedule)
    batch_id = str(uuid.uuid4())
    db.execute(
        "insert_batch",
        id=batch_id,
        schedule_id=schedule.id,
        scheduled_for=scheduled_for,
        trigger=trigger,
        jobs=len(jobs),
        now=now,
    )
    db.execute_many(
        "insert_queued_run",
        [
            {
                "job_name": job.name,
                "trigger": trigger,
                "schedule_id": schedule.id,
                "scheduled_for": scheduled_for,
                "batch_id": batch_id,
                "attempt": 1,
                "now": now,
                "available_at": now,
                "blocked_by": len(job.depends_on),
            }
            for job in jobs
        ],
    )
    return batch_id
