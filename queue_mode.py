"""Queue mode (EXECUTION_MODE=queue): the daemon enqueues an occurrence's jobs; job workers run them.

    python schedule_daemon.py --worker                 a standalone worker
    EMBEDDED_JOB_WORKER=true python admin_server.py    a worker inside the web process

The daemon's claim of a due occurrence inserts one QUEUED JobRun per job, each blocked until its
dependencies in the same occurrence completed, and one JobBatch row counting what is left.

A worker's main loop does all of its database work, a few runs at a time:
- claim: several ready runs in one short transaction (MySQL: SELECT ... FOR UPDATE SKIP LOCKED LIMIT n,
  then one UPDATE ... WHERE id IN (...); SQLite: one BEGIN IMMEDIATE write). It claims no more than its
  JOB_WORKER_CONCURRENCY slots can start within SOON_S at the pace runs have been going, and gives back
  any claimed run still not started after GIVE_BACK_S (a long job ahead of it), so no worker sits on
  runs another could start;
- record: the runs that ended since, in one transaction: a failure with retries left is queued again as
  the next attempt after a backoff; a final failure skips the dependents; a completion unblocks them.
  The transaction that brings JobBatch.remaining to zero records the occurrence's outcome on the schedule.
Its JOB_WORKER_CONCURRENCY executor threads run the claimed runs in supervised children (and store
the lines they print); what the runs' rows say is the main loop's to write. Runs of a worker that stopped heartbeating are recorded the same way, as failures, by
whoever notices first.
"""

from __future__ import annotations

import collections
import functools
import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import alerts
import pings
from db import Database, utc_ms
from errors import ConfigError, Conflict, DatabaseUnavailable, ValueRejected
from records import JobCall, JobPool, JobResult, RunStatus
from runner import RETRYABLE, Presence, log_result, recover, retry_until_stored, run_loop, utcnow
from scheduling import App
from settings import Settings
from supervisor import ChildPool

log = logging.getLogger("worker")

SOON_S = 0.1  # a worker claims what its slots can start within this long, at the pace runs have been going
MAX_CLAIM = 100  # runs claimed in one transaction at most
GIVE_BACK_S = 1.0  # a claimed run not started within this long goes back to the queue
RECORD_CHUNK = 100  # runs recorded in one transaction at most (each error may be 64 KB: a bounded packet)


@dataclass(frozen=True)
class QueuedRun:
    """A JobRun row of queue mode, as a worker or recovery holds it."""

    id: int
    job_name: str
    schedule_id: str | None
    scheduled_for: datetime
    trigger: str
    batch_id: str
    attempt: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> QueuedRun:
        return cls(
            row["id"],
            row["jobName"],
            row["scheduleId"],
            row["scheduledFor"],
            row["trigger"],
            row["batchId"],
            row["attempt"],
        )


@dataclass(frozen=True)
class Finished:
    """How a queued run ended, waiting to be recorded."""

    run: QueuedRun
    status: RunStatus
    error: str | None
    started_at: datetime | None  # None: it never started (a dead worker's run, one lost track of)
    completed_at: datetime
    duration_ms: int | None


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
    if db.dialect.needs_skip_locked and (problem := skip_locked_problem(db.fetch_value("server_version", "version"))):
        raise ConfigError(problem)


# -- recording what ended -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """What one recording transaction stored and what follows it once committed."""

    finished: list[Finished]  # recorded now (runs recovery had already failed are left out)
    final_failures: list[Finished]  # failed with no retry left: they alert
    completed_batches: list[dict[str, Any]]  # occurrences this transaction brought to zero


def record_finished(
    db: Database, app: App, finished: list[Finished], now: datetime, stopping: threading.Event | None = None
) -> list[Finished]:
    """Store how runs ended, and what follows (retries, dependents, occurrences' outcomes), in one transaction.

    `now` dates the occurrences it completes: a retry after a lost COMMIT passes the same one, to tell
    what the landed attempt completed. Returns the runs recorded: a run someone else already finished
    (recovery failed it) is not. With `stopping`, the counts on the schedules are retried until stored.
    """
    if not finished:
        return []
    with db.transaction():
        recorded = record_in_transaction(db, app, finished, now)
    for failure in recorded.final_failures:
        run = failure.run
        alerts.run_failed(db, run.schedule_id, run.job_name, run.id, failure.error, run.trigger)
    count_occurrences(db, recorded.completed_batches, now, stopping)
    for batch in recorded.completed_batches:
        alerts.occurrence_finished(db, batch["scheduleId"], batch["trigger"], not batch["failed"])
        schedule = app.schedules.get(batch["scheduleId"])
        pings.finished(getattr(schedule, "ping_url", None), batch["trigger"], not batch["failed"])
    return recorded.finished


def record_in_transaction(db: Database, app: App, finished: list[Finished], now: datetime) -> Recorded:
    """record_finished's transaction; it reads back what an earlier attempt stored if that one's COMMIT landed."""
    changed = db.execute(
        "finish_queued_runs",
        ids=tuple(f.run.id for f in finished),
        statuses=tuple(f.status.value for f in finished),
        completed_at=tuple(f.completed_at for f in finished),
        duration_ms=tuple(f.duration_ms for f in finished),
        error=tuple(f.error for f in finished),
        started_at=tuple(f.started_at for f in finished),
    )
    stored = finished
    if changed != len(finished):  # some were failed by recovery, or an earlier attempt stored them all
        rows = {row["id"]: row for row in db.fetch_all("runs_by_id", ids=tuple(f.run.id for f in finished))}
        stored = [f for f in finished if holds(rows.get(f.run.id), f)]
        if changed == 0 and stored:
            # An earlier attempt's COMMIT landed though its answer was lost: everything it wrote is stored;
            # what follows the transaction is not done yet.
            log.warning(
                "[worker] the connection dropped at COMMIT but the results of runs %s landed: completing what follows",
                ", ".join(str(f.run.id) for f in stored),
            )
            return landed_earlier(db, app, stored, now)
    retries = [f for f in stored if retry_backoff(app, f) is not None]
    for item in retries:
        queue_retry(db, item, retry_backoff(app, item) or timedelta(0))
    ended = [f for f in stored if f not in retries]
    counts: dict[str, tuple[int, int]] = {}  # batch id: (jobs finished, of which failed)
    for item in sorted(ended, key=lambda f: (f.run.batch_id, f.run.id)):  # dependents in one order: no deadlock
        finished_n, failed_n = settle_dependents(db, app, item, now)
        before = counts.get(item.run.batch_id, (0, 0))
        counts[item.run.batch_id] = (before[0] + finished_n, before[1] + failed_n)
    if counts:  # one statement: the rows are locked in key order, the same in every worker
        batch_ids = tuple(sorted(counts))
        db.execute(
            "finish_batch_jobs",
            ids=batch_ids,
            finished=tuple(counts[b][0] for b in batch_ids),
            failed=tuple(counts[b][1] for b in batch_ids),
            now=now,
        )
    # Only the transaction that brought `remaining` to zero (the rows stay locked until commit) sees it so.
    batches = db.fetch_all("get_batches", ids=tuple(counts)) if counts else []
    return Recorded(
        stored,
        [f for f in ended if f.status == RunStatus.FAILED],
        [b for b in batches if b["remaining"] <= 0],
    )


def holds(row: dict[str, Any] | None, item: Finished) -> bool:
    """Whether a stored run holds this very outcome (rather than recovery's)."""
    return row is not None and row["status"] == item.status.value and row["completedAt"] == utc_ms(item.completed_at)


def landed_earlier(db: Database, app: App, stored: list[Finished], now: datetime) -> Recorded:
    """What a landed attempt recorded: its runs, its final failures, the occurrences it completed (at `now`)."""
    ended = [f for f in stored if retry_backoff(app, f) is None]
    batch_ids = tuple(sorted({f.run.batch_id for f in ended}))
    batches = db.fetch_all("get_batches", ids=batch_ids) if batch_ids else []
    return Recorded(
        stored,
        [f for f in ended if f.status == RunStatus.FAILED],
        [b for b in batches if b["completedAt"] == utc_ms(now)],
    )


def retry_backoff(app: App, item: Finished) -> timedelta | None:
    """How long until the next attempt of a failed run whose job has retries left; None for no retry."""
    job = app.registry.jobs.get(item.run.job_name)
    if item.status != RunStatus.FAILED or job is None or item.run.attempt > job.retries:
        return None
    return timedelta(seconds=job.retry_backoff_s * 2 ** (item.run.attempt - 1))


def queue_retry(db: Database, item: Finished, backoff: timedelta) -> None:
    run = item.run
    db.execute(
        "insert_queued_run",
        job_name=run.job_name,
        trigger=run.trigger,
        schedule_id=run.schedule_id,
        scheduled_for=run.scheduled_for,
        batch_id=run.batch_id,
        attempt=run.attempt + 1,
        now=item.completed_at,
        available_at=item.completed_at + backoff,
        blocked_by=0,
    )
    log.warning(
        "[worker] %s attempt %d failed; attempt %d queued in %gs",
        run.job_name,
        run.attempt,
        run.attempt + 1,
        backoff.total_seconds(),
    )


def settle_dependents(db: Database, app: App, item: Finished, now: datetime) -> tuple[int, int]:
    """Unblock the dependents of a completed run, or skip those of a failed one; the (finished, failed) jobs."""
    run = item.run
    if item.status == RunStatus.COMPLETED:
        for dependent in dependents_of(app, run.job_name, transitive=False):
            db.execute("unblock_dependent", batch_id=run.batch_id, job_name=dependent)
        return 1, 0
    finished, failed = 1, 1
    reason = f"not started: dependency {run.job_name} FAILED"
    if run.job_name not in app.registry.jobs:  # a job this worker's code lacks: which jobs depend on it is unknown too
        skipped = db.execute(
            "skip_blocked_in_batch",
            batch_id=run.batch_id,
            now=now,
            error=f"{reason} (unknown to the worker that took it, so every job of the "
            "occurrence still waiting on a dependency is skipped)",
        )
        finished, failed = finished + skipped, failed + skipped
    for dependent in dependents_of(app, run.job_name, transitive=True):
        skipped = db.execute("skip_dependent", batch_id=run.batch_id, job_name=dependent, error=reason, now=now)
        finished, failed = finished + skipped, failed + skipped
    return finished, failed


def count_occurrences(
    db: Database, batches: list[dict[str, Any]], now: datetime, stopping: threading.Event | None
) -> None:
    """Count completed occurrences on their schedules, one statement per schedule.

    Outside the recording transaction, so that workers finishing one schedule's many occurrences do not
    queue behind its row.
    """
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for batch in batches:
        if batch["scheduleId"] is not None:
            counts[batch["scheduleId"]][1 if batch["failed"] else 0] += 1
    for schedule_id, (succeeded, failed) in sorted(counts.items()):

        def count(schedule_id: str = schedule_id, succeeded: int = succeeded, failed: int = failed) -> None:
            db.execute("count_occurrence", id=schedule_id, succeeded=succeeded, failed=failed, now=now)

        try:
            retry_until_stored("counting occurrences", count, stopping) if stopping else count()
        except RETRYABLE as exc:  # the runs are recorded; only the schedule's counters miss these
            log.error(
                "[worker] could not count %d occurrences on schedule %s: %s", succeeded + failed, schedule_id, exc
            )


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


def recover_queued_runs(
    db: Database, app: App, now: datetime, own_id: str, stopping: threading.Event | None = None
) -> int:
    """Record, as failures (retried if the job allows), the runs of workers no longer alive (not `own_id`'s)."""
    failures = [
        Finished(
            QueuedRun.from_row(row),
            RunStatus.FAILED,
            f"FAILED: the job worker {row['workerId']} running this job died (no heartbeat): killed, crashed or cut off",
            None,
            now,
            None,
        )
        for row in db.fetch_all("queued_runs_of_dead_workers", own_id=own_id)
    ]
    recovered = len(record_finished(db, app, failures, now, stopping))
    if recovered:
        log.warning("[recovery] finished %d queued runs of dead workers as failures", recovered)
    return recovered


# -- the worker -----------------------------------------------------------------------------------------


class InHand:
    """The runs a worker claimed and has not recorded yet: waiting to start, running, or ended."""

    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping  # once set, no run starts: what waits goes back to the queue
        self.cond = threading.Condition()
        self.waiting: collections.deque[tuple[QueuedRun, float]] = collections.deque()  # (run, claimed at)
        self.running: dict[int, float] = {}  # run id: when it started
        self.ended: list[Finished] = []
        self.closed = False

    def ids(self) -> set[int]:
        with self.cond:
            return {r.id for r, _ in self.waiting} | self.running.keys() | {f.run.id for f in self.ended}

    def add(self, runs: list[QueuedRun]) -> None:
        with self.cond:
            claimed_at = time.monotonic()
            self.waiting.extend((run, claimed_at) for run in runs)
            self.cond.notify(len(runs))

    def next_to_start(self) -> QueuedRun | None:
        """For an executor: the oldest waiting run, once there is one; None once stopping or closed."""
        with self.cond:
            while not self.waiting and not self.closed:
                self.cond.wait()
            if not self.waiting or self.stopping.is_set():
                return None
            run, _ = self.waiting.popleft()
            self.running[run.id] = time.monotonic()
            return run

    def end(self, item: Finished) -> None:
        with self.cond:
            self.running.pop(item.run.id, None)
            self.ended.append(item)

    def take_ended(self) -> list[Finished]:
        with self.cond:
            ended, self.ended = self.ended, []
            return ended

    def put_back_ended(self, ended: list[Finished]) -> None:
        """Ended runs whose recording failed stay in hand, for the next attempt."""
        with self.cond:
            self.ended[:0] = ended

    def take_waiting(self, claimed_before: float | None = None) -> list[QueuedRun]:
        """Remove and return the waiting runs (those claimed before `claimed_before`, if given)."""
        with self.cond:
            kept = [(r, t) for r, t in self.waiting if claimed_before is not None and t >= claimed_before]
            taken = [r for r, t in self.waiting if claimed_before is None or t < claimed_before]
            self.waiting = collections.deque(kept)
            return taken

    def counts(self) -> tuple[int, int, int, int]:
        """(waiting, running, of those running for over GIVE_BACK_S, ended)."""
        with self.cond:
            long_ago = time.monotonic() - GIVE_BACK_S
            stuck = sum(1 for started in self.running.values() if started < long_ago)
            return len(self.waiting), len(self.running), stuck, len(self.ended)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class JobWorker:
    """Claims ready runs a few at a time, runs them on JOB_WORKER_CONCURRENCY executor threads (each in a
    supervised child), and records them a few at a time; polls every JOB_WORKER_POLL_INTERVAL_MS when idle."""

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
        self.hand = InHand(self.stopping)
        self.wake = threading.Event()  # an executor needs the main loop: runs ended, or few left to start
        self.pace_s = SOON_S  # recent mean time of a run; unknown at first, so one run per slot is claimed

    def start(self) -> None:
        require_skip_locked(self.db)
        self.presence.register()
        log.info(
            "[worker] Job worker registered: %s (polling every %gs when idle)", self.presence.id, self.poll_interval
        )

    def stop(self) -> None:
        """Stop claiming: the main loop wakes at once; the runs going finish (see run_forever)."""
        self.stopping.set()
        self.wake.set()

    def run_forever(self) -> None:
        """The main loop here and JOB_WORKER_CONCURRENCY executor threads, until stop()."""
        # A worker exists to run jobs: its first one should not wait for a child to start.
        threading.Thread(target=self.pool.warm, name="warm-job-children", daemon=True).start()
        executors = [
            threading.Thread(target=self.execute_loop, name=f"job-worker-{n}", daemon=True)
            for n in range(1, self.concurrency + 1)
        ]
        for executor in executors:
            executor.start()
        run_loop(self.work_once, self.pause, self.stopping, "worker", self.db.now, wake=self.wake)
        # Stopping: runs not started go back to the queue (executors start none after stop()); the runs
        # going end (within the pool's grace) and are recorded. Whatever fails here, the worker stops.
        try:
            self.give_back(self.hand.take_waiting())
        finally:
            self.hand.close()
            for executor in executors:
                executor.join()
            try:
                self.record(self.hand.take_ended())
            except Exception as exc:  # one attempt at shutdown; recovery fails what is left RUNNING
                log.error("[worker] could not record the last results at shutdown: %s", exc)
            finally:
                self.pool.close()
                try:
                    self.presence.stop(self.db.now())
                finally:
                    log.info("[worker] Job worker %s stopped", self.presence.id)
                    self.stopped.set()

    def work_once(self, now: datetime) -> bool:
        """One pass of the main loop: housekeeping when due, record what ended, give back what waited too long,
        claim what the slots can start soon. True if it claimed any."""
        if now >= self.next_recovery:
            self.next_recovery = now + self.heartbeat_interval
            try:
                recover(self.db, now, self.lock_timeout, self.presence.id)
                recover_queued_runs(self.db, self.app, now, self.presence.id, self.stopping)
                self.finish_runs_lost_track_of(now)
            except Exception:  # recording and claiming go on; housekeeping tries again next heartbeat
                log.exception("[worker] housekeeping failed; retrying in one heartbeat")
        self.record(self.hand.take_ended())
        self.give_back(self.hand.take_waiting(claimed_before=time.monotonic() - GIVE_BACK_S))
        claimed = self.claim(now, self.room())
        self.hand.add(claimed)
        return bool(claimed)

    def pause(self) -> float:
        """How long the main loop sleeps when it found nothing to claim, unless an executor wakes it."""
        waiting, _, _, ended = self.hand.counts()
        return min(self.poll_interval, GIVE_BACK_S) if waiting or ended else self.poll_interval

    def per_slot(self) -> int:
        """Runs a slot can start within SOON_S at the recent pace (counting the one it is running)."""
        return max(1, min(MAX_CLAIM, int(SOON_S / max(self.pace_s, 1e-4))))

    def room(self) -> int:
        """How many runs to claim: what the slots can start soon, less what is in hand. A slot running one
        run for over GIVE_BACK_S will not start anything soon: it counts for nothing."""
        waiting, running, stuck, _ = self.hand.counts()
        return max(0, min(MAX_CLAIM, (self.concurrency - stuck) * self.per_slot() - waiting - (running - stuck)))

    def execute_loop(self) -> None:
        """An executor: run claimed runs one after another; wake the main loop when few are left to start."""
        while (run := self.hand.next_to_start()) is not None:
            try:
                item = self.execute(run)
            except Exception as exc:  # the supervisor's own failure (no child could start...): the run ends
                log.exception("[worker] could not run %s (run %s)", run.job_name, run.id)
                now = self.db.now()
                item = Finished(run, RunStatus.FAILED, f"the job worker could not run it: {exc!r}", now, now, 0)
            self.hand.end(item)
            self.pace_s = (
                0.8 * self.pace_s + 0.2 * (item.completed_at - (item.started_at or item.completed_at)).total_seconds()
            )
            waiting, _, _, _ = self.hand.counts()
            if waiting <= self.concurrency * self.per_slot() // 2:
                self.wake.set()

    def claim(self, now: datetime, limit: int) -> list[QueuedRun]:
        """Take up to `limit` ready runs in one transaction; they are this worker's to run from here."""
        while limit > 0:
            ids: tuple[int, ...] = ()
            try:
                with self.db.transaction():
                    rows = self.db.fetch_all("next_queued_runs", now=now, limit=limit)
                    if not rows:
                        return []
                    ids = tuple(row["id"] for row in rows)
                    # Not `now`: a run may have become ready (and been selected) after it.
                    started = self.db.now()
                    self.db.execute("claim_queued_runs", ids=ids, worker_id=self.presence.id, now=started)
                return [QueuedRun.from_row(row) for row in rows]  # locked since the SELECT: the UPDATE took each
            except Conflict:  # MySQL deadlock or lock wait timeout: nothing was taken; look again
                if self.stopping.is_set():
                    return []
            except DatabaseUnavailable:
                if not ids:
                    raise
                return self.read_back_claim(ids)
        return []

    def read_back_claim(self, ids: tuple[int, ...]) -> list[QueuedRun]:
        """After the connection dropped mid-claim (the COMMIT may have landed): the runs that are ours.

        If this read fails too, housekeeping (finish_runs_lost_track_of) settles the runs, if they were taken.
        """
        rows = self.db.fetch_all("claimed_runs", ids=ids, worker_id=self.presence.id)
        for row in rows:
            log.warning(
                "[worker] the connection dropped at COMMIT but the claim of run %s (%s) landed: running it",
                row["id"],
                row["jobName"],
            )
        return [QueuedRun.from_row(row) for row in rows]

    def give_back(self, runs: list[QueuedRun]) -> None:
        """Return claimed runs that no executor started to the queue, for another worker (or us, later)."""
        if not runs:
            return
        try:
            self.db.execute("give_back_runs", ids=tuple(r.id for r in runs), worker_id=self.presence.id)
        except RETRYABLE as exc:  # still ours: they stay in hand, to start or give back later
            log.error("[worker] could not give back %d claimed runs: %s", len(runs), exc)
            self.hand.add(runs)
            return
        log.info("[worker] gave back %d claimed runs it could not start within %gs", len(runs), GIVE_BACK_S)

    def execute(self, run: QueuedRun) -> Finished:
        """Run one claimed run in a supervised child; how it ended (not recorded yet)."""
        job = self.app.registry.jobs.get(run.job_name)
        started = self.db.now()
        if job is None:
            result = JobResult(RunStatus.FAILED, f"no job {run.job_name!r} in this worker's code", 0)
        else:
            call = JobCall(run.id, job.name, run.schedule_id, run.scheduled_for, run.trigger, run.attempt)
            result = self.pool.run(job, call)
        status, error, duration_ms = result.status, result.error, result.duration_ms
        log_result(
            "worker",
            run.job_name,
            status.value,
            duration_ms,
            error,
            {"scheduleId": run.schedule_id, "jobName": run.job_name, "runId": run.id},
        )
        return Finished(run, status, error, started, self.db.now(), duration_ms)

    def record(self, ended: list[Finished]) -> None:
        """Record runs that ended, retried until stored (or shutdown); a refused error text is stored plainer."""
        if not ended:
            return
        now = self.db.now()

        def store(items: list[Finished]) -> list[Finished]:
            return record_finished(self.db, self.app, items, now, self.stopping)

        def one_by_one(chunk: list[Finished], exc: ValueRejected) -> list[Finished]:
            """A value was refused: each run on its own, and only the refused one with a plainer error."""
            recorded = []
            for item in chunk:
                try:
                    recorded += store([item])
                except ValueRejected as refused:
                    error = f"the job's error text was refused by the database ({refused}); see the worker's log"
                    recorded += store([replace(item, error=error)])
            return recorded

        recorded: list[Finished] = []
        for start in range(0, len(ended), RECORD_CHUNK):
            chunk = ended[start : start + RECORD_CHUNK]
            try:
                recorded += retry_until_stored(
                    "recording job results",
                    functools.partial(store, chunk),
                    self.stopping,
                    on_rejected=functools.partial(one_by_one, chunk),
                )
            except BaseException:
                self.hand.put_back_ended(ended[start:])
                raise
        for item in {f.run.id: f for f in ended}.keys() - {f.run.id for f in recorded}:
            log.error("[worker] run %s had already been failed by recovery; its result is not recorded", item)

    def finish_runs_lost_track_of(self, now: datetime) -> int:
        """Fail (retried if the job allows) this worker's RUNNING runs that it does not have in hand.

        The safety net for every way a claim can land unseen (a COMMIT whose answer was lost and could
        not be read back): without it such a run stays RUNNING under a live worker, which neither
        recovery nor the health check treats as stuck. The main loop claims and records, so nothing
        enters or leaves the hand's database state while this runs.
        """
        rows = self.db.fetch_all("queued_runs_of_worker", worker_id=self.presence.id)
        in_hand = self.hand.ids()
        error = (
            f"FAILED: not run: worker {self.presence.id} claimed this job but lost track of the claim "
            "(the database's answer to it was lost)"
        )
        lost = [
            Finished(QueuedRun.from_row(row), RunStatus.FAILED, error, None, now, None)
            for row in rows
            if row["id"] not in in_hand
        ]
        recorded = len(record_finished(self.db, self.app, lost, now, self.stopping))
        if recorded:
            log.error("[worker] finished %d runs this worker had claimed but lost track of, as failures", recorded)
        return recorded
