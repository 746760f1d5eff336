"""Alerts: a JSON POST to ALERT_WEBHOOK_URL when a run failed, an occurrence was missed, a schedule is
overdue or no daemon is alive, and `recovered` when it is fine again.

    alerts.start(db, settings, "daemon")        # once per process: the watchdog and sender thread
    alerts.run_failed(db, schedule_id, job_name, run_id, error, trigger)      # hooks in the run path
    alerts.occurrence_finished(db, schedule_id, trigger, ok)
    alerts.occurrences_missed(db, skip_records)                               # inside the skip's transaction
    alerts.runs_failed_by_recovery(db, orphaned_runs, error)                  # inside recovery's transaction

Exactly one alert per event, whatever the number of processes: each decision is taken in one
transaction holding the AlertState row of its subject (a schedule failing or overdue, no live daemon
or worker), and the alert is inserted in the same transaction under a unique (event key, webhook)
pair. No floods: a subject alerts when it goes wrong, then at most once per ALERT_REPEAT_S (with the
count of failures since), and `recovered` when it is fine again. Manual runs never alert.

The hooks only write rows; a background thread per process sends them (POST, 5 s timeout), retrying
with backoff for up to 10 minutes, so a slow or dead webhook never delays scheduling. Any process
that knows a webhook URL may send its alerts: a claim moves the alert's next attempt forward, a
lease that outlives a crashed sender. The same thread is the watchdog: once a heartbeat interval it
checks for overdue schedules and for the absence of live daemons (and, in queue mode, workers).
Logged URLs keep only their scheme and host: paths and queries of webhooks hold secrets.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from db import Database
from errors import DatabaseBusy, DatabaseCannotWrite, DatabaseUnavailable
from settings import Settings

log = logging.getLogger("alerts")

SEND_TIMEOUT_S = 5.0
GIVE_UP_AFTER = timedelta(minutes=10)
SEND_LEASE = timedelta(seconds=60)  # longer than one POST: a sender that dies mid-send is replaced after it
MAX_BACKOFF_S = 120.0
TRANSIENT = (DatabaseUnavailable, DatabaseBusy, DatabaseCannotWrite)  # = runner.RETRYABLE (runner imports this module)
HOOK_ATTEMPTS = 4  # 0.5 + 1 + 2 s of waits: a run path is not held up for long by a database outage
BUSY_ATTEMPTS = 5  # a decision that loses a deadlock is taken again; the victim's transaction wrote nothing


class Event(str, Enum):
    RUN_FAILED = "run_failed"
    OCCURRENCE_MISSED = "occurrence_missed"
    SCHEDULE_OVERDUE = "schedule_overdue"
    DAEMON_DOWN = "daemon_down"
    RECOVERED = "recovered"


class Delivery(str, Enum):
    """AlertOutbox.status."""

    PENDING = "PENDING"
    SENT = "SENT"
    GAVE_UP = "GAVE_UP"


@dataclass(frozen=True)
class Alert:
    """One event, as POSTed: `text` (Slack, Mattermost, Google Chat) and `content` (Discord) carry one human line."""

    event: Event
    key: str  # unique per event: the same key queued twice is sent once
    text: str
    at: datetime
    schedule_id: str | None = None
    job_name: str | None = None
    run_id: int | None = None
    error: str | None = None

    def body(self) -> str:
        return json.dumps(
            {
                "event": self.event.value,
                "scheduleId": self.schedule_id,
                "jobName": self.job_name,
                "runId": self.run_id,
                "error": self.error,
                "at": self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "text": self.text,
                "content": self.text,
            }
        )


@dataclass(frozen=True)
class AlertState:
    """A row of AlertState: what is known about one subject."""

    subject: str
    active: bool
    episode: int
    pending: int
    since: datetime | None
    last_alert_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AlertState:
        return cls(
            row["subject"], bool(row["active"]), row["episode"], row["pending"], row["since"], row["lastAlertAt"]
        )


def url_origin(url: str) -> str:
    """scheme://host[:port] of a URL: what a log line may show of it."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def target_of(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def last_line(error: str | None) -> str | None:
    """The exception line of a traceback, which is what a chat message has room for."""
    lines = (error or "").strip().splitlines()
    return lines[-1][:500] if lines else None


class AlertService:
    """This process's alert decisions, watchdog and sender; see the module docstring."""

    def __init__(self, db: Database, settings: Settings, label: str):
        self.db = db
        self.settings = settings
        self.label = label
        self.urls = {target_of(url): url for url in settings.alert_webhook_urls}
        self.repeat = timedelta(seconds=settings.alert_repeat_s)
        self.interval_s = settings.heartbeat_interval_ms / 1000
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{label}-alerts", daemon=True)

    # -- decisions -----------------------------------------------------------------------------------

    def went_wrong(self, subject: str, alert: Alert, counts: bool) -> bool:
        """Record that `subject` is wrong; alert if it was fine, or ALERT_REPEAT_S after its last alert.

        `counts`: a failure (counted into the next repeat's text) rather than a condition seen again.
        """
        return busy_retried(lambda: self._went_wrong(subject, alert, counts))

    def _went_wrong(self, subject: str, alert: Alert, counts: bool) -> bool:
        with self.db.transaction():
            alerted = self.decide_went_wrong(self.db, subject, alert, counts)
        if alerted:
            self._wake.set()
        return alerted

    def decide_went_wrong(self, db: Database, subject: str, alert: Alert, counts: bool) -> bool:
        """went_wrong inside the caller's open transaction on `db`: the decision commits with the caller's change."""
        state = self._locked_state(db, subject, alert.at)
        if state.active and state.last_alert_at is not None and alert.at - state.last_alert_at < self.repeat:
            if counts:
                self._store(db, state, alert.at, pending=state.pending + 1)
            return False
        episode = state.episode if state.active else state.episode + 1
        text = alert.text
        if state.active and counts and state.pending:
            text += f" ({state.pending + 1} failures since the last alert)"
        # A run's alert is keyed by the run; a condition's by its episode and the moment of this alert.
        key = alert.key if alert.run_id is not None else f"{alert.key}:{episode}:{alert.at.isoformat()}"
        self._store(
            db,
            state,
            alert.at,
            active=True,
            episode=episode,
            pending=0,
            last_alert_at=alert.at,
            since=state.since if state.active else alert.at,
        )
        self.queue(
            db, Alert(alert.event, key, text, alert.at, alert.schedule_id, alert.job_name, alert.run_id, alert.error)
        )
        return True

    def is_fine(self, subject: str, text: str, at: datetime, schedule_id: str | None = None) -> bool:
        """Record that `subject` is fine; alert `recovered` if it had been alerted on."""
        row = self.db.fetch_one("get_alert_state", subject=subject)
        if row is None or not row["active"]:
            return False  # the common case costs one read and no write
        return busy_retried(lambda: self._is_fine(subject, text, at, schedule_id))

    def _is_fine(self, subject: str, text: str, at: datetime, schedule_id: str | None) -> bool:
        with self.db.transaction():
            state = self._locked_state(self.db, subject, at)
            if not state.active:
                return False
            self._store(self.db, state, at, active=False, pending=0)
            since = f" (wrong since {state.since.isoformat(timespec='seconds')})" if state.since else ""
            self.queue(
                self.db, Alert(Event.RECOVERED, f"recovered:{subject}:{state.episode}", text + since, at, schedule_id)
            )
        self._wake.set()
        return True

    def _locked_state(self, db: Database, subject: str, now: datetime) -> AlertState:
        # Lock first, insert only if missing: on MySQL an INSERT IGNORE of an existing row takes a shared
        # lock that the UPDATE after it must upgrade, and two deciders doing that deadlock.
        row = db.fetch_one("lock_alert_state", subject=subject)
        if row is None:
            db.execute("insert_alert_state", subject=subject, now=now)
            row = db.fetch_one("lock_alert_state", subject=subject)
            if row is None:
                raise LookupError(f"AlertState {subject!r} is missing right after its insert")
        return AlertState.from_row(row)

    def _store(self, db: Database, state: AlertState, now: datetime, **changes: Any) -> None:
        new = {
            "active": state.active,
            "episode": state.episode,
            "pending": state.pending,
            "since": state.since,
            "last_alert_at": state.last_alert_at,
            **changes,
        }
        db.execute("update_alert_state", subject=state.subject, now=now, **new)

    def queue(self, db: Database, alert: Alert) -> None:
        body = alert.body()
        for target in self.urls:
            db.execute(
                "insert_alert",
                dedup_key=alert.key,
                target=target,
                event=alert.event.value,
                schedule_id=alert.schedule_id,
                run_id=alert.run_id,
                body=body,
                now=alert.at,
            )
        log.warning(
            "[alerts] %s: %s",
            alert.event.value,
            alert.text,
            extra={
                "event": alert.event.value,
                "scheduleId": alert.schedule_id,
                "jobName": alert.job_name,
                "runId": alert.run_id,
            },
        )

    # -- the watchdog --------------------------------------------------------------------------------

    def watch(self, now: datetime) -> None:
        """Overdue schedules and missing daemons/workers: alert, repeat or recover."""
        heartbeat_after = now - timedelta(seconds=self.settings.health_max_heartbeat_age_s)
        live = {
            row["workerType"]: row["live"]
            for row in self.db.fetch_all("live_instances", heartbeat_after=heartbeat_after)
        }
        age = f"younger than HEALTH_MAX_HEARTBEAT_AGE_S ({self.settings.health_max_heartbeat_age_s}s)"
        kinds = [("daemon_down", "schedule_daemon", "schedule daemon")]
        if self.settings.execution_mode == "queue":
            kinds.append(("worker_down", "job_worker", "job worker"))
        for subject, worker_type, name in kinds:
            if live.get(worker_type):
                self.is_fine(subject, f"a {name} is alive again", now)
            else:
                self.went_wrong(
                    subject,
                    Alert(Event.DAEMON_DOWN, subject, f"no live {name}: none has a heartbeat {age}", now),
                    counts=False,
                )
        if not live.get("schedule_daemon"):
            return  # every schedule is overdue then: daemon_down says it once instead of once per schedule
        tolerance = timedelta(seconds=self.settings.health_overdue_tolerance_s)
        overdue = {
            row["id"]: row["nextRunAt"] for row in self.db.fetch_all("overdue_schedules", due_before=now - tolerance)
        }
        for schedule_id, due in overdue.items():
            self.went_wrong(
                f"overdue:{schedule_id}",
                Alert(
                    Event.SCHEDULE_OVERDUE,
                    f"schedule_overdue:{schedule_id}",
                    f"schedule {schedule_id} is overdue: due {due.isoformat(timespec='seconds')}, not claimed within "
                    f"{tolerance.total_seconds():.0f}s",
                    now,
                    schedule_id,
                ),
                counts=False,
            )
        for row in self.db.fetch_all("active_alert_states"):
            subject = row["subject"]
            if subject.startswith("overdue:") and subject[len("overdue:") :] not in overdue:
                schedule_id = subject[len("overdue:") :]
                self.is_fine(subject, f"schedule {schedule_id} runs again", now, schedule_id)

    # -- delivery ------------------------------------------------------------------------------------

    def deliver_due(self, now: datetime) -> None:
        """Send every alert due now whose webhook this process knows, for up to one watchdog interval."""
        round_ends = time.monotonic() + self.interval_s  # the watchdog (daemon_down) must not wait on slow webhooks
        # Only this process's webhooks: rows of other URLs are their own senders' (or housekeeping's) to end.
        due = [row for target in self.urls for row in self.db.fetch_all("due_alerts", target=target, now=now, limit=50)]
        for row in sorted(due, key=lambda r: r["id"])[:50]:
            if time.monotonic() >= round_ends:
                return
            url = self.urls[row["target"]]
            # The lease counts from this claim, not from the round's start: 50 slow POSTs outlast any lease.
            claimed = self.db.now()
            if self.db.execute("claim_alert", id=row["id"], now=claimed, lease_until=claimed + SEND_LEASE) != 1:
                continue
            error = post(url, row["body"].encode())
            done = self.db.now()
            if error is None:
                self._until_stored(functools.partial(self.db.execute, "alert_sent", id=row["id"], now=done))
                log.info("[alerts] %s sent to %s", row["event"], url_origin(url), extra={"event": row["event"]})
                continue
            attempts = row["attempts"] + 1
            retry_at = done + timedelta(seconds=min(2.0**attempts, MAX_BACKOFF_S))
            gave_up = retry_at - row["createdAt"] > GIVE_UP_AFTER
            self.db.execute(
                "alert_failed",
                id=row["id"],
                status=(Delivery.GAVE_UP if gave_up else Delivery.PENDING).value,
                next_attempt_at=retry_at,
                error=error[:500],
            )
            log.error(
                "[alerts] %s to %s failed (attempt %d): %s; %s",
                row["event"],
                url_origin(url),
                attempts,
                error,
                "giving up after 10 minutes" if gave_up else f"retrying at {retry_at.isoformat(timespec='seconds')}",
                extra={"event": row["event"]},
            )

    def _until_stored(self, write: Callable[[], Any]) -> None:
        """A webhook took the alert: store that, or its lease would expire and it would be sent again."""
        delay = 0.5
        while True:
            try:
                write()
                return
            except TRANSIENT as exc:
                if self._stop.is_set():
                    raise
                log.error("[alerts] could not record a sent alert, retrying in %.1fs: %s", delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def seconds_until_next_delivery(self, now: datetime) -> float | None:
        due = [
            row["nextAttemptAt"] for target in self.urls if (row := self.db.fetch_one("next_alert_due", target=target))
        ]
        return None if not due else max(0.0, (min(due) - now).total_seconds())

    def housekeep(self, now: datetime) -> None:
        """Give up alerts unsent after the retry window, whatever their webhook: no process is left to send them."""
        given_up = self.db.execute(
            "give_up_stale_alerts",
            before=now - GIVE_UP_AFTER - SEND_LEASE,
            error="no process that knows this webhook sent it within 10 minutes",
        )
        if given_up:
            log.error("[alerts] gave up %d alert(s) no process could send within 10 minutes", given_up)

    # -- the thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        log.info(
            "[alerts] Alerts on: %d webhook(s) (%s), repeat every %ss, watchdog every %gs",
            len(self.urls),
            ", ".join(url_origin(u) for u in self.urls.values()),
            self.settings.alert_repeat_s,
            self.interval_s,
        )

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=SEND_TIMEOUT_S + 5)

    def _run(self) -> None:
        next_watch = 0.0
        while not self._stop.is_set():
            wait = self.interval_s
            try:
                if time.monotonic() >= next_watch:
                    next_watch = time.monotonic() + self.interval_s
                    self.db.measure_clock()  # ages are judged by the database's clock, as the health check does
                    self.watch(self.db.now())
                    self.housekeep(self.db.now())
                self.deliver_due(self.db.now())
                until = self.seconds_until_next_delivery(self.db.now())
                wait = min(max(0.0, next_watch - time.monotonic()), until if until is not None else wait)
            except Exception as exc:  # the database may be away: the next round tries again
                log.error("[alerts] watchdog or sender failed, retrying in %gs: %s", self.interval_s, exc)
            self._wake.wait(max(wait, 0.05))
            self._wake.clear()
        self.db.close()


def busy_retried(decide: Callable[[], bool]) -> bool:
    """Run one decision's transaction, again after a lock wait timeout or deadlock (nothing was written)."""
    for attempt in range(BUSY_ATTEMPTS - 1):
        try:
            return decide()
        except DatabaseBusy:
            time.sleep(0.05 * 2**attempt)
    return decide()


def post(url: str, body: bytes) -> str | None:
    """POST JSON; None when the webhook answered 2xx, else why not (without the URL)."""
    # Imported here: urllib.request brings http.client, email and ssl (6 MiB), which a daemon without
    # webhooks would hold all its life for nothing.
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "schedule-jobs-alerts"},
    )
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_S) as response:
            response.read(1024)
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError as exc:  # refused, timed out, DNS, TLS: all mean "try again later"
        reason = getattr(exc, "reason", exc)
        return f"{type(reason).__name__}: {reason}".replace(url, url_origin(url))
    except Exception as exc:  # e.g. http.client.InvalidURL, whose text quotes the URL's path and query
        return type(exc).__name__


# -- the hooks: one line each in the run path; no-ops until start() ---------------------------------------

_service: AlertService | None = None


def start(db: Database, settings: Settings, label: str) -> AlertService | None:
    """Start this process's alert thread when ALERT_WEBHOOK_URL is set; returns it (None when off)."""
    global _service
    if not settings.alert_webhook_urls:
        return None
    _service = AlertService(db, settings, label)
    _service.start()
    return _service


def stop() -> None:
    global _service
    if _service is not None:
        _service.stop()
        _service = None


def _guarded(what: str, fn: Any) -> None:
    """Alerting must never break a run: a database error here is retried a few times, then logged, not raised.

    The hooks called after their run's own write has committed (a finished run) would otherwise lose
    the alert to one dropped connection or lock wait; retrying is safe, as a decision is one transaction.
    """
    for attempt in range(HOOK_ATTEMPTS):
        try:
            fn()
            return
        except TRANSIENT as exc:
            if attempt == HOOK_ATTEMPTS - 1:
                log.error("[alerts] could not record %s after %d attempts: %s", what, HOOK_ATTEMPTS, exc)
            else:
                time.sleep(0.5 * 2**attempt)
        except Exception as exc:
            log.error("[alerts] could not record %s: %s", what, exc)
            return


def run_failed(
    db: Database, schedule_id: str | None, job_name: str, run_id: int, error: str | None, trigger: str
) -> None:
    """A cron run failed for good (after its last retry in queue mode)."""
    service = _service
    alert = None if service is None else run_failed_alert(db, schedule_id, job_name, run_id, error, trigger)
    if service is None or alert is None:
        return
    _guarded("a failed run", lambda: service.went_wrong(f"failing:{schedule_id}", alert, counts=True))


def runs_failed_by_recovery(db: Database, runs: list[dict[str, Any]], error: str) -> None:
    """Runs recovery is failing (JobRun rows), inside recovery's transaction: their alerts commit with it."""
    service = _service
    if service is None:
        return
    for run in runs:
        alert = run_failed_alert(db, run["scheduleId"], run["jobName"], run["id"], error, run["trigger"])
        if alert is not None:
            service.decide_went_wrong(db, f"failing:{run['scheduleId']}", alert, counts=True)
    service._wake.set()


def run_failed_alert(
    db: Database, schedule_id: str | None, job_name: str, run_id: int, error: str | None, trigger: str
) -> Alert | None:
    """The run_failed alert of a run; None for runs that never alert (manual runs, runs of no schedule)."""
    if trigger != "CRON" or schedule_id is None:
        return None
    return Alert(
        Event.RUN_FAILED,
        f"run_failed:{run_id}",
        f"{job_name} failed (schedule {schedule_id}, run {run_id}): {last_line(error) or 'no error text'}",
        db.now(),
        schedule_id,
        job_name,
        run_id,
        last_line(error),
    )


def occurrence_finished(db: Database, schedule_id: str | None, trigger: str, ok: bool) -> None:
    """A cron occurrence ended; if it succeeded, a failing schedule has recovered."""
    service = _service
    if service is None or trigger != "CRON" or schedule_id is None or not ok:
        return
    _guarded(
        "a success",
        lambda: service.is_fine(
            f"failing:{schedule_id}", f"schedule {schedule_id} succeeded again", db.now(), schedule_id
        ),
    )


def occurrences_missed(db: Database, records: list[dict[str, Any]]) -> None:
    """Occurrences just recorded as skipped (occurrence.skipped_record rows), inside the caller's transaction.

    One occurrence_missed per batch, naming at most three schedules: after an outage with thousands of
    schedules, one POST rather than thousands. Queued in the transaction that records the skip, so the
    alert is stored exactly when the skip is (a lost COMMIT or a crash loses neither alone). A database
    error here rolls the skip back with it: the next pass takes it again.
    """
    service = _service
    if service is None or not records:
        return
    if len(records) == 1:
        [record] = records
        row = db.fetch_one("skip_record_id", schedule_id=record["schedule_id"], scheduled_for=record["scheduled_for"])
        service.queue(
            db,
            Alert(
                Event.OCCURRENCE_MISSED,
                f"occurrence_missed:{record['schedule_id']}:{record['scheduled_for'].isoformat()}",
                f"schedule {record['schedule_id']}: {record['error']}",
                record["now"],
                record["schedule_id"],
                None,
                row["id"] if row else None,
                record["error"],
            ),
        )
    else:
        ids = sorted({r["schedule_id"] for r in records})
        batch = hashlib.sha256(
            ",".join(f"{r['schedule_id']}@{r['scheduled_for'].isoformat()}" for r in records).encode()
        )
        names = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        service.queue(
            db,
            Alert(
                Event.OCCURRENCE_MISSED,
                f"occurrence_missed:batch:{batch.hexdigest()[:16]}",
                f"{len(ids)} schedules skipped: {names}",
                records[0]["now"],
                None,
                None,
                None,
                records[0]["error"],
            ),
        )
    service._wake.set()
