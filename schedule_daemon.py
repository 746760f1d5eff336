"""The schedule daemon: finds due schedules, claims each occurrence, runs its jobs in supervised children, records it.

    python schedule_daemon.py            run until SIGTERM/SIGINT
    python schedule_daemon.py --once     sync, run what is due now, exit
    python schedule_daemon.py --run ID   run schedule ID once now (as "Run now"), print its runs, exit 0 if all completed
    python schedule_daemon.py --check    validate definitions and jobs, print the next runs, exit 0 or 1

Any number of daemons may share one database: the claim (queries.sql: claim_occurrence) is a
conditional UPDATE on the nextRunAt value that was read, so each occurrence runs exactly once. The
loop sleeps until the earliest enabled nextRunAt or SCHEDULE_POLL_INTERVAL_MS, whichever is sooner;
a heartbeat thread keeps the WorkerInstance row and the leases on the running schedules fresh.
Up to SCHEDULE_CONCURRENCY occurrences run at once, each on a thread of its own that supervises
its jobs' child processes (supervisor.py); the loop wakes when one of them ends.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import alerts
import cron
import pings
from db import Database
from errors import DatabaseUnavailable, ScheduleJobsError, quoted
from health import check_health
from occurrence import InlineExecutor, QueueExecutor, run_now, skipped_record
from queue_mode import JobWorker, recover_queued_runs
from records import JobPool
from runner import (
    Presence,
    recover,
    recovery_needed,
    retry_until_stored,
    run_loop,
    sync_definitions,
    until_database_answers,
    utcnow,
)
from scheduling import App, ScheduleDefinition, load_app, schedule_warnings
from settings import Settings, configure_logging
from supervisor import ChildPool

log = logging.getLogger("daemon")

LIVENESS_HEARTBEATS = 3  # a daemon counts as alive this many heartbeats past its last one (contention delays beats)
STALLED_PAUSE_S = 1.0  # least sleep after a pass that found due schedules but could claim none of them


class Overtaken(Exception):
    """Another daemon moved some rows of a batch first: the batch is rolled back and taken row by row."""


def alive_at(lifetimes: list[dict[str, Any]], at: datetime, grace: timedelta) -> bool:
    """Was some schedule daemon alive at instant `at`, judging by WorkerInstance start and heartbeat times?"""
    return any(row["startedAt"] - grace <= at <= row["lastHeartbeatAt"] + grace for row in lifetimes)


class ScheduleDaemon:
    def __init__(self, db: Database, app: App, settings: Settings, pool: JobPool | None = None):
        self.db = db
        self.app = app
        self.settings = settings
        self.wake = threading.Event()  # an occurrence ended (its lock is free) or a stop was asked for
        self.poll_interval = timedelta(milliseconds=settings.poll_interval_ms)
        self.heartbeat_interval = timedelta(milliseconds=settings.heartbeat_interval_ms)
        self.lock_timeout = timedelta(milliseconds=settings.lock_timeout_ms)
        # Bounded by LOCK_TIMEOUT_MS: past that a silent daemon is dead, whatever the margin says.
        self.liveness_margin = min(LIVENESS_HEARTBEATS * self.heartbeat_interval, self.lock_timeout)
        self.stopping = threading.Event()
        self.presence = Presence(db, "schedule_daemon", self.heartbeat_interval.total_seconds())
        self.next_recovery = datetime.min.replace(tzinfo=utcnow().tzinfo)
        self.stalled = False  # the last pass saw due schedules and moved none of them
        # Inline or queue is decided here, once; the loop only talks to the executor.
        self.executor: InlineExecutor | QueueExecutor = (
            QueueExecutor(db, app)
            if settings.execution_mode == "queue"
            else InlineExecutor(db, app, settings, self.presence, self.stopping, self.wake, pool)
        )

    # -- start and stop ------------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate the schema, register, sync definitions: retried until the database answers."""
        log.info("[daemon] Starting schedule daemon (%s mode) on %s", self.app.environment, self.db.url)
        until_database_answers("start-up", self._start_once, self.stopping, "daemon")
        alerts.start(self.db, self.settings, "daemon")
        policies = {s.missed_run_policy for s in self.app.schedules.values()} or {"SKIP"}
        log.info("[daemon] Schedule daemon started (%d database statements so far)", self.db.statements_issued)
        log.info(
            "[daemon] Missed Run Policy: %s (SKIP: if no daemon was running when a run fell due, "
            "it is skipped and recorded; the next run waits for the next interval)",
            "/".join(sorted(policies)),
        )
        log.info("[daemon] Loaded %d schedule definitions from code", len(self.app.schedules))
        for warning in schedule_warnings(list(self.app.schedules.values())):
            log.warning("[daemon] %s", warning)
        log.info("[daemon] Execution mode: %s", self.executor.description)
        log.info(
            "[daemon] Polling every %gs (heartbeat every %gs, lock timeout %gs)",
            self.poll_interval.total_seconds(),
            self.heartbeat_interval.total_seconds(),
            self.lock_timeout.total_seconds(),
        )

    def _start_once(self) -> None:
        self.db.migrate()
        self.executor.prepare()
        # After downtime, occurrences are due at once: their child starts while the definitions sync.
        self.expect_next_occurrence(self.db.now())
        if not self.presence.registered:
            self.presence.register()
            log.info("[daemon] Schedule daemon registered: %s", self.presence.id)
        report = sync_definitions(self.db, self.app, self.db.now())
        log.info(
            "[daemon] Synced %d schedule definitions from code (%d new, %d changed, %d not in code)",
            len(self.app.schedules),
            len(report.created),
            len(report.changed),
            len(report.orphaned),
        )

    def stop(self) -> None:
        self.executor.close()
        alerts.stop()
        pings.flush()
        self.presence.stop(self.db.now())
        log.info(
            "[daemon] Schedule daemon %s stopped (%d database statements issued)",
            self.presence.id,
            self.db.statements_issued,
        )

    def request_stop(self, signum: int, _frame: Any) -> None:
        """Signal handler: finish the job in hand, release, mark STOPPED, exit."""
        log.info(
            "[daemon] %s received: no new occurrences; running jobs get SHUTDOWN_GRACE_S (%ds) to finish",
            signal.Signals(signum).name,
            self.settings.shutdown_grace_s,
        )
        self.stopping.set()
        self.wake.set()
        self.executor.end_runs_after_grace()

    # -- the loop ------------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        run_loop(self.run_pass, self.pause, self.stopping, "daemon", self.db.now, self.wake)

    def pause(self) -> float:
        sleep = self.seconds_until_next_pass(self.db.now())
        if self.stalled:  # whatever keeps them from being claimed, do not spin on them
            sleep = max(sleep, min(STALLED_PAUSE_S, self.poll_interval.total_seconds()))
        log.debug(
            "[daemon] pass done; sleeping %.3fs (%d database statements so far)", sleep, self.db.statements_issued
        )
        return sleep

    def run_once(self) -> None:
        """--once: run what is due now, then return."""
        while self.run_pass(self.db.now()) and not self.stopping.is_set():
            pass
        self.executor.wait()

    def run_pass(self, now: datetime) -> bool:
        """Housekeeping, then every due schedule of one batch. True if any moved on (claimed, skipped, unscheduled)."""
        housekeeping = now >= self.next_recovery
        if housekeeping:
            if recovery_needed(self.db, now, self.lock_timeout, self.presence.id):  # one query while all is well
                recover(self.db, now, self.lock_timeout, self.presence.id)
                recover_queued_runs(self.db, self.app, now, self.presence.id, self.stopping)
            self.next_recovery = now + self.heartbeat_interval
        # Not every pass: the rewrite scans the table and takes SQLite's write lock. A due row that no
        # claim matched (the last pass stalled) is what a time typed by hand looks like.
        if (housekeeping or self.stalled) and self.db.normalise_typed_times():
            log.info("[daemon] rewrote times typed by SQL in the stored form (UTC, to the millisecond)")
        self.follow_enablement(now)
        self.skip_overlaps(now)
        due = self.db.fetch_all("due_schedules", now=now, limit=self.db.dialect.due_batch)  # then batch after batch
        self.stalled = False
        if not due:
            return False
        lifetimes = self.db.fetch_all("daemon_lifetimes", since=min(r["nextRunAt"] for r in due) - self.liveness_margin)
        # Whole seconds for the skip decision: after downtime thousands of schedules share a few crons,
        # and one `now` per second lets them share cached cron results. An occurrence in the fraction
        # of a second left out simply becomes the next run, due at once.
        tick = now.replace(microsecond=0)
        to_run, to_skip = [], []
        moved = 0
        for row in due:
            schedule = self.app.schedules.get(row["id"])
            if schedule is None:  # a row from a newer release's code; that release's daemons run it
                moved += self.db.execute("unschedule", id=row["id"], now=now)
            elif (
                schedule.missed_run_policy == "SKIP"
                and row["nextRunAt"] <= tick
                and self.missed(latest := latest_due(schedule, row["nextRunAt"], tick), lifetimes)
            ):
                to_skip.append((schedule, row["nextRunAt"], latest))
            else:
                to_run.append((schedule, row["nextRunAt"]))
        if to_skip:
            moved += self.skip_missed(to_skip, tick)
        started = time.monotonic()
        for schedule, due_at in to_run:
            if self.stopping.is_set():
                break
            elapsed = timedelta(seconds=time.monotonic() - started)  # waiting for a slot took time
            moved += self.process_due(schedule, due_at, now + elapsed, lifetimes)
        # A pass that moved nothing (others claimed it all, or a row no claim matches) is not work:
        # counting it would run the next pass at once, and the next, at 100% CPU.
        self.stalled = not moved
        return bool(moved)

    def missed(self, latest: datetime, lifetimes: list[dict[str, Any]]) -> bool:
        """Did the latest occurrence due (see latest_due) fall due while no daemon was alive?"""
        return not alive_at(lifetimes, latest, self.liveness_margin)

    def skip_missed(self, schedules: list[tuple[ScheduleDefinition, datetime, datetime]], now: datetime) -> int:
        """Missed-run policy SKIP, for a whole batch in one transaction: record the skip, move to the next occurrence.

        `schedules` holds each schedule with its due nextRunAt and latest occurrence due. Returns how many
        schedules moved on."""
        moves = [
            {"id": schedule.id, "due": due, "next_run_at": schedule.next_after(now), "now": now}
            for schedule, due, _ in schedules
        ]
        records = [
            skipped_record(
                schedule.id,
                due,
                latest,
                "no schedule daemon was running (missed-run policy SKIP)",
                self.presence.id,
                now,
            )
            for schedule, due, latest in schedules
        ]
        try:
            # One statement sent for the batch: each row's guard (nextRunAt = :due) still makes it ours
            # alone, and a sum short of the batch means another daemon moved some of them first.
            with self.db.transaction():
                if self.db.execute_many("skip_occurrences", moves) != len(moves):
                    raise Overtaken
                self.db.execute_many("insert_skip_record", records)
                alerts.occurrences_missed(self.db, records)
            skipped = records
        except Overtaken:  # rolled back: row by row, each skip recorded only where its own move matched
            with self.db.transaction():
                skipped = [r for m, r in zip(moves, records) if self.db.execute("skip_occurrences", **m) == 1]
                self.db.execute_many("insert_skip_record", skipped)
                alerts.occurrences_missed(self.db, skipped)
        if skipped:  # one line per batch: after a long outage there may be thousands
            names = ", ".join(r["schedule_id"] for r in skipped[:5]) + (
                f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            )
            log.warning(
                "[daemon] Skipped the occurrences of %d schedules that fell due while no daemon was running "
                "(missed-run policy SKIP; recorded in their history): %s",
                len(skipped),
                names,
            )
        return len(skipped)

    def skip_overlaps(self, now: datetime) -> None:
        """Overlap policy SKIP: an occurrence due while its schedule still runs is recorded SKIPPED, not run.

        Under BUFFER_ONE it waits: the first pass after the release runs it once (coalesced if several).
        """
        for row in self.db.fetch_all("due_while_locked", now=now):
            schedule = self.app.schedules.get(row["id"])
            if schedule is None or schedule.overlap_policy != "SKIP":
                continue
            latest = latest_due(schedule, row["nextRunAt"], now)
            with self.db.transaction():
                if (
                    self.db.execute(
                        "skip_while_locked",
                        id=schedule.id,
                        due=row["nextRunAt"],
                        next_run_at=schedule.next_after(now),
                        now=now,
                    )
                    == 1
                ):
                    skip = skipped_record(
                        schedule.id,
                        row["nextRunAt"],
                        latest,
                        "previous run still running (overlap policy SKIP)",
                        self.presence.id,
                        now,
                    )
                    self.db.execute("insert_skip_record", **skip)
                    alerts.occurrences_missed(self.db, [skip])
                    log.warning(
                        "[daemon] %s: occurrence %s skipped: previous run still running (overlap policy SKIP)",
                        schedule.id,
                        latest.isoformat(),
                    )

    def follow_enablement(self, now: datetime) -> None:
        """Follow enabling and disabling done by SQL: give newly enabled rows a next run, clear disabled ones."""
        for row in self.db.fetch_all("enablement_to_follow"):
            if not row["enabled"]:
                self.db.execute("unschedule", id=row["id"], now=now)
            elif (schedule := self.app.schedules.get(row["id"])) is not None:
                self.db.execute("schedule_first_run", id=schedule.id, next_run_at=schedule.next_after(now), now=now)

    def process_due(
        self, schedule: ScheduleDefinition, due: datetime, now: datetime, lifetimes: list[dict[str, Any]]
    ) -> bool:
        """Claim the latest due occurrence and hand it to the executor (run here, or queued); False if not ours.

        Earlier occurrences still pending (the daemon was down, or busy past the next one) are not
        replayed: they are recorded as one SKIPPED line, and nextRunAt moves to the first future one.
        """
        if not self.executor.reserve():
            return False
        started = False  # start() takes the reservation over; anything else gives it back
        try:
            latest = latest_due(schedule, due, now)
            missed = self.missed(latest, lifetimes)
            batch_id = None
            coalesced = None
            try:
                with self.db.transaction():
                    if not self.executor.claim(schedule, due, schedule.next_after(now), now):
                        return False  # claimed, skipped or disabled by someone else since we read it
                    if latest > due:
                        reason = (
                            "coalesced into the catch-up run of "
                            if missed
                            else "the daemon was late; coalesced into the run of "
                        )
                        coalesced = skipped_record(
                            schedule.id,
                            due,
                            schedule_previous(schedule, latest),
                            reason + latest.isoformat(),
                            self.presence.id,
                            now,
                        )
                        self.db.execute("insert_skip_record", **coalesced)
                        alerts.occurrences_missed(self.db, [coalesced])
                    batch_id = self.executor.within_claim(schedule, latest, now)
            except DatabaseUnavailable as exc:
                if not retry_until_stored(
                    "reading back a claim", lambda: self.executor.claim_landed(schedule, batch_id), self.stopping
                ):
                    raise
                log.warning(
                    "[daemon] the connection dropped at COMMIT but the claim of %s landed (read back): going on; %s",
                    schedule.id,
                    exc,
                )
            self.executor.start(schedule, latest, now)
            started = True
            return True
        finally:
            if not started:
                self.executor.unreserve()

    def expect_next_occurrence(self, now: datetime) -> datetime | None:
        """The earliest enabled nextRunAt, for which a job child is started shortly before (at once if due)."""
        row = self.db.fetch_one("next_wakeup")
        if row is None:
            return None
        next_run: datetime = row["nextRunAt"]
        self.executor.expect((next_run - now).total_seconds())
        return next_run

    def seconds_until_next_pass(self, now: datetime) -> float:
        """Until the earliest enabled nextRunAt or the poll interval, whichever comes first."""
        wake = now + self.poll_interval
        if (next_run := self.expect_next_occurrence(now)) is not None:
            wake = min(wake, next_run)
        # A schedule held by another process (a "Run now", a long run elsewhere) may be due when it is
        # released: look again every heartbeat from its due time. This daemon's own runs wake it at once.
        held = self.db.fetch_one("next_due_while_locked")
        if held is not None:
            wake = min(wake, max(held["nextRunAt"], now + self.heartbeat_interval))
        return max(0.0, (wake - now).total_seconds())


def latest_due(schedule: ScheduleDefinition, due: datetime, now: datetime) -> datetime:
    """The latest occurrence due by `now` of a schedule whose nextRunAt `due` has come (the one a catch-up runs)."""
    return max(due, schedule.latest_at_or_before(now))


def schedule_previous(schedule: ScheduleDefinition, occurrence: datetime) -> datetime:
    """The occurrence just before `occurrence`."""
    return schedule.latest_at_or_before(occurrence - timedelta(milliseconds=1))


def check(app: App, now: datetime) -> None:
    """--check: print every schedule of this environment with its next three runs, and warnings on stderr."""
    for warning in schedule_warnings(list(app.schedules.values())):
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{len(app.schedules)} schedules valid for APP_ENV={app.environment}, "
        f"{len(app.registry.jobs)} jobs in {len(app.registry.groups)} groups"
    )
    for s in app.schedules.values():
        jobs = ", ".join(j.name for j in app.jobs_for(s))
        runs = ", ".join(t.isoformat() for t in cron.upcoming(s.cron, s.timezone, now, 3))
        print(
            f"- {s.id}: {s.cron!r} in {s.timezone}, {s.execution_mode}"
            f"{' ' + s.job_group if s.job_group else ''}, missed runs {s.missed_run_policy}\n"
            f"    jobs: {jobs}\n    next: {runs}"
        )


def report_health(db: Database, settings: Settings) -> int:
    """--health: one line per problem, exit 1 if any (the design documents' checkScheduleDaemonHealth)."""
    try:
        problems = check_health(db, settings)["problems"]
    except DatabaseUnavailable as exc:
        problems = [f"the database does not answer: {exc}"]
    except Exception as exc:  # an un-migrated database, a mistyped SQLite path: a finding, not a traceback
        problems = [schema_problem(db) or f"the health check failed: {type(exc).__name__}: {quoted(exc, 200)}"]
    for problem in problems:
        print(f"UNHEALTHY: {problem}")
    if not problems:
        print("healthy")
    return 1 if problems else 0


def schema_problem(db: Database) -> str | None:
    """Why the health check cannot read this database, if it is that its tables were never created."""
    try:
        version = (db.fetch_one("get_schema_version") or {}).get("version")
    except Exception:  # the version table itself is missing
        version = None
    if version:
        return None
    return f"the database has no schedule tables: has a daemon ever started on it? DATABASE_URL={db.url}"


def run_worker(db: Database, app: App, settings: Settings) -> int:
    """--worker: a standalone job worker until SIGTERM/SIGINT (it finishes the job in hand)."""
    worker = JobWorker(db, app, settings)
    if settings.execution_mode != "queue":
        log.warning(
            "[worker] EXECUTION_MODE is %s: daemons run jobs themselves and queue nothing; "
            "set EXECUTION_MODE=queue on the daemons for this worker to have work",
            settings.execution_mode,
        )

    def request_stop(signum: int, _frame: Any) -> None:
        log.info(
            "[worker] %s received: the job in hand gets SHUTDOWN_GRACE_S (%ds), then stopping",
            signal.Signals(signum).name,
            settings.shutdown_grace_s,
        )
        worker.stop()
        worker.pool.end_runs_after_grace()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    def start() -> None:
        db.migrate()
        worker.start()

    until_database_answers("start-up", start, worker.stopping, "worker")
    alerts.start(db, settings, "worker")
    worker.run_forever()
    alerts.stop()
    pings.flush()
    return 0


def run_schedule_now(db: Database, app: App, settings: Settings, schedule_id: str) -> int:
    """--run ID: "Run now" without a server (the same claim, supervised, trigger MANUAL); exit 0 if all completed."""
    schedule = app.schedules.get(schedule_id)
    if schedule is None:
        print(
            f"error: no schedule {schedule_id!r} in {settings.schedules_module} for APP_ENV={app.environment} "
            f"(schedules: {', '.join(app.schedules) or 'none'})",
            file=sys.stderr,
        )
        return 1
    stopping = threading.Event()
    pool = ChildPool(db, settings, settings.schedules_module, "run")

    def request_stop(signum: int, _frame: Any) -> None:
        log.info(
            "[run] %s received: the rest of the run is skipped; its job gets SHUTDOWN_GRACE_S (%ds)",
            signal.Signals(signum).name,
            settings.shutdown_grace_s,
        )
        stopping.set()
        pool.end_runs_after_grace()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        db.migrate()
        sync_definitions(db, app, db.now())
        outcome = run_now(db, app, pool, schedule, "manual_run", settings.heartbeat_interval_ms / 1000, stopping, "run")
    finally:
        pool.close()
    if outcome is None:
        holder = db.fetch_one("get_schedule", id=schedule_id) or {}
        print(
            f"error: schedule {schedule_id!r} is running now (held by {holder.get('lockedBy')}); try again when it ends",
            file=sys.stderr,
        )
        return 1
    for run in outcome.runs:
        row = db.fetch_one("get_run", id=run.id) or {}
        print(
            f"run {run.id} {run.job_name}: {run.status.value} in {row.get('durationMs') or 0} ms"
            + (f": {run.error.strip().splitlines()[-1]}" if run.error else "")
        )
        for line in db.fetch_all("list_logs", run_id=run.id):
            print(f"    {line['createdAt'].isoformat()} {line['level']} {line['message']}")
    return 0 if outcome.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="sync, run what is due now, exit")
    mode.add_argument("--check", action="store_true", help="validate definitions, print next runs, exit")
    mode.add_argument("--worker", action="store_true", help="run a job worker (EXECUTION_MODE=queue) instead")
    mode.add_argument("--health", action="store_true", help="check the system's health: exit 0 healthy, 1 not")
    mode.add_argument(
        "--run",
        metavar="SCHEDULE_ID",
        help='run one schedule now (as "Run now"), print its runs, exit 0 if all completed, 1 otherwise',
    )
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = Settings.from_env()
        app = load_app(settings.schedules_module, settings.environment)
        if args.check:
            check(app, utcnow())
            return 0
        if args.health:
            return report_health(settings.database(), settings)
        if args.worker:
            return run_worker(settings.database(), app, settings)
        if args.run is not None:
            return run_schedule_now(settings.database(), app, settings, args.run)
        if not settings.daemon_enabled:
            log.info("[daemon] SCHEDULE_DAEMON_ENABLED=false: this process runs no schedules; exiting")
            return 0
        db = settings.database()
    except ScheduleJobsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    daemon = ScheduleDaemon(db, app, settings)
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    daemon.start()
    gc.freeze()  # start-up's objects (modules, thousands of definitions) live as long as the process: never collected
    try:
        if not daemon.stopping.is_set():
            daemon.run_once() if args.once else daemon.serve_forever()
    except ScheduleJobsError as exc:  # only --once lets database errors through
        log.error("[daemon] %s", exc)
        return 1
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
