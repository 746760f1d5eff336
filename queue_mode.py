"""Queue mode (EXECUTION_MODE=queue): the daemon enqueues an occurrence's jobs; job workers run them.

    python schedule_daemon.py --worker                 a standalone worker
    EMBEDDED_JOB_WORKER=true python admin_server.py    a worker inside the web process

The daemon's claim of a due occurrence inserts one QUEUED JobRun per job, each blocked until its
dependencies in the same occurrence completed, and one JobBatch row counting what is left. A worker
claims a ready run in one short transaction (MySQL: SELECT ... FOR UPDATE SKIP LOCKED, then an UPDATE
by primary key; SQLite: one BEGIN IMMEDIATE write), runs it outside any transaction, and finishes it:
a failure with retries left is queued again as the next attempt after a backoff; a final failure
skips the dependents; a completion unblocks them. The finisher that brings JobBatch.remaining to zero
records the occurrence's outcome on the schedule. Runs of a worker that stopped heartbeating are
finished the same way, as failures, by whoever notices first.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timedelta
from typing import Any

import alerts
import pings
from db import Database, utc_ms
from errors import ConfigError, Conflict, DatabaseUnavailable
from records import JobCall, JobPool, RunStatus
from runner import RETRYABLE, Presence, log_result, recover, retry_until_stored, run_loop, utcnow
from scheduling import App
from settings import Settings
from supervisor import ChildPool

log = logging.getLogger("worker")


def skip_locked_problem(version: str) -> str | None:
    """None if a server reporting VERSION() = `version` has SKIP LOCKED (MySQL 8.0.1+, MariaDB 10.6+)."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    needed, name = ((10, 6, 0), "MariaDB 10.6") if "mariadb" in version.lower() else ((8, 0, 1), "MySQL 8.0.1")
    if numbers >= needed:
        return None
    return (
        f"EXECUTION_MODE=queue needs SELECT ... SKIP LOCKED, which server {version} lacks: "
        f"use {name} or later, or EXECUTION_MODE=inline"
    )


def require_skip_locked(db: Database) -> None:
    """Refuse queue mode on a MySQL server without SKIP LOCKED. SQLite serialises writers instead."""
    if db.kind == "mysql" and (problem := skip_locked_problem(db.fetch_value("server_version", "version"))):
        raise ConfigError(problem)


def finish_run(
    db: Database,
    app: App,
    run: dict[str, Any],
    status: str,
    error: str | None,
    completed: datetime,
    duration_ms: int | None,
    stopping: threading.Event | None = None,
) -> bool:
    """Record a queued run's end and what follows from it; False if someone else already finished it.

    With `stopping`, the occurrence's count on its schedule is retried until stored (or shutdown).
    """
    job = app.registry.jobs.get(run["jobName"])
    retried = status == "FAILED" and job is not None and run["attempt"] <= job.retries
    retry_after = timedelta(seconds=job.retry_backoff_s * 2 ** (run["attempt"] - 1)) if retried and job else None
    with db.transaction():
        if (
            db.execute(
                "finish_run", id=run["id"], status=status, completed_at=completed, duration_ms=duration_ms, error=error
            )
            != 1
        ):
            if not landed_before(db, run, status, completed):
                return False
            # An earlier attempt's COMMIT landed though its answer was lost: what it wrote in the transaction
            # is stored; what follows the transaction is not done yet. The batch was closed by that attempt
            # if its completedAt is our time (another finisher's would be its own).
            log.warning(
                "[worker] the connection dropped at COMMIT but run %s's result %s landed: completing what follows it",
                run["id"],
                status,
            )
            if retried:
                return True
            batch = db.fetch_one("get_batch", id=run["batchId"])
            if batch is not None and batch["completedAt"] != utc_ms(completed):
                batch = None
        else:
            batch = record_consequences(db, app, run, status, completed, retry_after)
    if retried:
        return True
    if status == "FAILED":  # for good: a retry returned above
        alerts.run_failed(db, run["scheduleId"], run["jobName"], run["id"], error, run["trigger"])
    # `batch` is set only for the finisher that completed it. The schedule's counters are updated outside
    # that transaction so that finishers of one schedule's many occurrences do not queue behind its row.
    if batch is not None and batch["scheduleId"] is not None:

        def count() -> None:
            db.execute(
                "count_occurrence",
                id=batch["scheduleId"],
                succeeded=0 if batch["failed"] else 1,
                failed=1 if batch["failed"] else 0,
                now=completed,
            )

        try:
            retry_until_stored("counting an occurrence", count, stopping) if stopping else count()
        except RETRYABLE as exc:  # the run is recorded; only the schedule's counter misses one
            log.error(
                "[worker] could not count occurrence %s on schedule %s: %s", batch["id"], batch["scheduleId"], exc
            )
        alerts.occurrence_finished(db, batch["scheduleId"], batch["trigger"], not batch["failed"])
        pings.finished(
            getattr(app.schedules.get(batch["scheduleId"]), "ping_url", None), batch["trigger"], not batch["failed"]
        )
    return True


def record_consequences(
    db: Database, app: App, run: dict[str, Any], status: str, completed: datetime, retry_after: timedelta | None
) -> dict[str, Any] | None:
    """In finish_run's transaction: queue the retry, or unblock or skip the dependents and count the batch.

    Returns the batch if this finish completed it.
    """
    if retry_after is not None:
        backoff = retry_after
        db.execute(
            "insert_queued_run",
            job_name=run["jobName"],
            trigger=run["trigger"],
            schedule_id=run["scheduleId"],
            scheduled_for=run["scheduledFor"],
            batch_id=run["batchId"],
            attempt=run["attempt"] + 1,
            now=completed,
            available_at=completed + backoff,
            blocked_by=0,
        )
        log.warning(
            "[worker] %s attempt %d failed; attempt %d queued in %gs",
            run["jobName"],
            run["attempt"],
            run["attempt"] + 1,
            backoff.total_seconds(),
        )
        return None
    finished, failed = 1, 0 if status == "COMPLETED" else 1
    if status == "COMPLETED":
        for dependent in dependents_of(app, run["jobName"], transitive=False):
            db.execute("unblock_dependent", batch_id=run["batchId"], job_name=dependent)
    else:
        reason = f"not started: dependency {run['jobName']} FAILED"
        if (
            run["jobName"] not in app.registry.jobs
        ):  # a job this worker's code lacks: which jobs depend on it is unknown too
            skipped = db.execute(
                "skip_blocked_in_batch",
                batch_id=run["batchId"],
                now=completed,
                error=f"{reason} (unknown to the worker that took it, so every job of the "
                "occurrence still waiting on a dependency is skipped)",
            )
            finished, failed = finished + skipped, failed + skipped
        for dependent in dependents_of(app, run["jobName"], transitive=True):
            skipped = db.execute(
                "skip_dependent", batch_id=run["batchId"], job_name=dependent, error=reason, now=completed
            )
            finished, failed = finished + skipped, failed + skipped
    db.execute("finish_batch_jobs", id=run["batchId"], finished=finished, failed=failed, now=completed)
    # Only the finisher that brought `remaining` to zero (the row stays locked until commit) sees it so.
    batch = db.fetch_one("get_batch", id=run["batchId"])
    return batch if batch is not None and batch["remaining"] <= 0 else None


def landed_before(db: Database, run: dict[str, Any], status: str, completed: datetime) -> bool:
    """Whether the run already holds this very outcome: a retried finish whose first COMMIT landed unseen."""
    stored = db.fetch_one("get_run", id=run["id"])
    return stored is not None and stored["status"] == status and stored["completedAt"] == utc_ms(completed)


def dependents_of(app: App, job_name: str, transitive: bool) -> list[str]:
    """The jobs that depend on `job_name` directly, or through other jobs too."""
    direct = [j.name for j in app.registry.jobs.values() if job_name in j.depends_on]
    if not transitive:
        return direct
    found: list[str] = []
    pending = list(direct)
    while pending:
        name = pending.pop()
        if name not in found:
            found.append(name)
            pending.extend(j.name for j in app.registry.jobs.values() if name in j.depends_on)
    return found


def recover_queued_runs(db: Database, app: App, now: datetime, stopping: threading.Event | None = None) -> int:
    """Finish, as failures (retried if the job allows), the runs of workers no longer alive."""
    recovered = 0
    for run in db.fetch_all("queued_runs_of_dead_workers"):
        error = (
            f"FAILED: the job worker {run['workerId']} running this job died (no heartbeat): killed, crashed or cut off"
        )
        if finish_run(db, app, run, "FAILED", error, now, None, stopping):
            recovered += 1
    if recovered:
        log.warning("[recovery] finished %d queued runs of dead workers as failures", recovered)
    return recovered


class JobWorker:
    """Claims ready runs and executes them, back to back while there is work, else every poll interval."""

    def __init__(
        self,
        db: Database,
        app: App,
        settings: Settings,
        stopping: threading.Event | None = None,
        pool: JobPool | None = None,
    ):
        self.db = db
        self.app = app
        self.pool = pool or ChildPool(db, settings, settings.schedules_module, "worker")
        self.concurrency = settings.job_worker_concurrency
        self.poll_interval = settings.job_worker_poll_interval_ms / 1000
        self.heartbeat_interval = timedelta(milliseconds=settings.heartbeat_interval_ms)
        self.lock_timeout = timedelta(milliseconds=settings.lock_timeout_ms)
        self.stopping = stopping or threading.Event()
        self.presence = Presence(db, "job_worker", self.heartbeat_interval.total_seconds())
        self.next_recovery = datetime.min.replace(tzinfo=utcnow().tzinfo)
        self.stopped = threading.Event()
        # Ids of the runs this worker's loops are claiming or executing; a RUNNING run of ours not in it was lost.
        self.in_hand: set[int] = set()
        self.in_hand_lock = threading.Lock()

    def start(self) -> None:
        require_skip_locked(self.db)
        self.presence.register()
        log.info(
            "[worker] Job worker registered: %s (polling every %gs when idle)", self.presence.id, self.poll_interval
        )

    def run_forever(self) -> None:
        """Run JOB_WORKER_CONCURRENCY loops (each claims one run at a time) until `stopping`."""
        loops = [
            threading.Thread(
                target=run_loop,
                name=f"job-worker-{n}",
                daemon=True,
                args=(self.work_once, lambda: self.poll_interval, self.stopping, "worker", self.db.now),
            )
            for n in range(1, self.concurrency)
        ]
        for loop in loops:
            loop.start()
        run_loop(self.work_once, lambda: self.poll_interval, self.stopping, "worker", self.db.now)
        for loop in loops:
            loop.join()
        self.pool.close()
        self.presence.stop(self.db.now())
        log.info("[worker] Job worker %s stopped", self.presence.id)
        self.stopped.set()

    def work_once(self, now: datetime) -> bool:
        """Claim and run one ready run; False when none is ready."""
        if now >= self.next_recovery:
            recover(self.db, now, self.lock_timeout)
            recover_queued_runs(self.db, self.app, now, self.stopping)
            self.finish_runs_lost_track_of(now)
            self.next_recovery = now + self.heartbeat_interval
        run = self.claim(now)
        if run is None:
            return False
        try:
            self.execute(run)
        finally:
            self.let_go(run["id"])
        return True

    def let_go(self, run_id: int) -> None:
        with self.in_hand_lock:
            self.in_hand.discard(run_id)

    def finish_runs_lost_track_of(self, now: datetime) -> int:
        """Fail (retried if the job allows) this worker's RUNNING runs that no loop has in hand.

        The safety net for every way a claim can land unseen (a COMMIT whose answer was lost and could
        not be read back): without it such a run stays RUNNING under a live worker, which neither
        recovery nor the health check treats as stuck.
        """
        lost = 0
        for run in self.db.fetch_all("queued_runs_of_worker", worker_id=self.presence.id):
            with self.in_hand_lock:  # read after the rows: a claim adds its run before committing
                if run["id"] in self.in_hand:
                    continue
            error = (
                f"FAILED: not run: worker {self.presence.id} claimed this job but lost track of the claim "
                "(the database's answer to it was lost)"
            )
            if finish_run(self.db, self.app, run, RunStatus.FAILED.value, error, now, None, self.stopping):
                lost += 1
        if lost:
            log.error("[worker] finished %d runs this worker had claimed but lost track of, as failures", lost)
        return lost

    def claim(self, now: datetime) -> dict[str, Any] | None:
        """Take one ready run (in hand from here until execute() ends), or None when none is ready."""
        while True:
            row = None
            try:
                with self.db.transaction():
                    row = self.db.fetch_one("next_queued_runs", now=now, limit=1)
                    if row is None:
                        return None
                    with self.in_hand_lock:
                        self.in_hand.add(row["id"])
                    started = self.db.now()  # not `now`: the run may have become ready (and been selected) after it
                    taken = (
                        self.db.execute("start_queued_run", id=row["id"], worker_id=self.presence.id, now=started) == 1
                    )
                if taken:
                    return {**row, "status": "RUNNING", "workerId": self.presence.id, "startedAt": started}
                self.let_go(row["id"])
            except Conflict:  # MySQL deadlock or lock wait timeout: nothing was taken; look again
                if row is not None:
                    self.let_go(row["id"])
                if self.stopping.is_set():
                    return None
            except DatabaseUnavailable:
                if row is None:
                    raise
                return self.read_back_claim(row)

    def read_back_claim(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """After the connection dropped mid-claim (the COMMIT may have landed): the run if it is ours, else None.

        If the read fails too, the run is let go and finish_runs_lost_track_of settles it, if it was taken.
        """
        try:
            run = self.db.fetch_one("get_run", id=row["id"])
        except BaseException:
            self.let_go(row["id"])
            raise
        if run is not None and run["status"] == RunStatus.RUNNING.value and run["workerId"] == self.presence.id:
            log.warning(
                "[worker] the connection dropped at COMMIT but the claim of run %s (%s) landed: running it",
                run["id"],
                run["jobName"],
            )
            return run
        self.let_go(row["id"])
        return None

    def execute(self, run: dict[str, Any]) -> None:
        job = self.app.registry.jobs.get(run["jobName"])
        error: str | None
        if job is None:
            status, error, completed, duration_ms = (
                RunStatus.FAILED.value,
                f"no job {run['jobName']!r} in this worker's code",
                self.db.now(),
                0,
            )
        else:
            result = self.pool.run(
                job,
                JobCall(run["id"], job.name, run["scheduleId"], run["scheduledFor"], run["trigger"], run["attempt"]),
            )
            status, error, completed, duration_ms = result.status.value, result.error, self.db.now(), result.duration_ms
        log_result(
            "worker",
            run["jobName"],
            status,
            duration_ms,
            error,
            {"scheduleId": run["scheduleId"], "jobName": run["jobName"], "runId": run["id"]},
        )
        stored = retry_until_stored(
            "recording a job's result",
            lambda: finish_run(self.db, self.app, run, status, error, completed, duration_ms, self.stopping),
            self.stopping,
            on_rejected=lambda exc: finish_run(
                self.db,
                self.app,
                run,
                status,
                f"the job's error text was refused by the database ({exc}); see the worker's log",
                completed,
                duration_ms,
                self.stopping,
            ),
        )
        if not stored:
            log.error(
                "[worker] run %s had already been failed by recovery; its result %s is not recorded", run["id"], status
            )
