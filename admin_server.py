"""The admin server: a JSON API and one page to list schedules, enable/disable them, "Run now", read history.

    ADMIN_TOKEN=change-me python admin_server.py        # serves on HOST:PORT (default 127.0.0.1:8080)
    curl -H "Authorization: Bearer change-me" localhost:8080/admin/schedules

Every /admin route needs `Authorization: Bearer <token>`: the ADMIN_TOKEN value, or (with JWT_SECRET
set) an HS256 JWT whose `role` claim is ADMIN. The page at /admin is a static shell that asks for the
token and sends it with each call. /healthz is open, for the platform's health check. The server will
not start on a non-loopback HOST unless ADMIN_TOKEN or JWT_SECRET is set; on loopback without either
it makes a one-off token and writes it to ./.admin-token.

The routes are the ROUTES table below; errors are always `{"error": {"code": ..., "message": ...}}`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import queue
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import alerts
import cron
import metrics
from admin_openapi import OPENAPI
from db import Database, utc_ms
from errors import Conflict, DatabaseUnavailable, ScheduleJobsError
from health import check_health
from occurrence import enqueue_occurrence, run_now
from queue_mode import JobWorker
from records import RunStatus
from runner import sync_definitions, until_database_answers, utcnow
from scheduling import App, ScheduleDefinition, load_app
from settings import Settings, configure_logging
from supervisor import ChildPool

log = logging.getLogger("admin")
T = TypeVar("T")

MAX_BODY_BYTES = 64 * 1024
WORKER_IDLE_S = 30  # a connection's thread waits this long for the next connection before it ends
RUN_STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "SKIPPED")
PAGE = (Path(__file__).resolve().parent / "admin_page.html").read_bytes()


@dataclass(frozen=True)
class RawBody:
    """An answer that is not JSON (e.g. /metrics' text format)."""

    payload: bytes
    content_type: str


@dataclass(frozen=True)
class EncodedJSON:
    """A JSON answer encoded once and sent to many requests; its ETag lets a client poll with a 304."""

    payload: bytes
    etag: str

    @classmethod
    def of(cls, body: Any) -> EncodedJSON:
        payload = json.dumps(body).encode()
        return cls(payload, '"' + hashlib.blake2b(payload, digest_size=12).hexdigest() + '"')


@dataclass(frozen=True)
class CachedList:
    """GET /admin/schedules as last built: the schedule rows it came from and when its run times go stale."""

    key: tuple[Any, ...]
    body: EncodedJSON
    stale_at: datetime


class Round(Generic[T]):
    """One run of a SharedCheck, and its outcome for the callers that joined it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return cast(T, self.value)


class SharedCheck(Generic[T]):
    """Runs `check` for many threads at once: each caller gets the outcome of a run that started after it called.

    Under 50 concurrent clients, reading the 200 schedule rows on every request of the list was the
    cost; now one read answers every request that arrived while the read before it was in flight,
    and no answer is older than its request. The first caller of a run runs the check on its own
    thread (and its own database connection); the others wait for that run alone, so a finished run
    wakes only its own callers.
    """

    def __init__(self, check: Callable[[], T]):
        self._check = check
        self._lock = threading.Lock()
        self._running: Round[T] | None = None
        self._next: Round[T] | None = None  # starts when the running one ends; callers arriving now join it

    def __call__(self) -> T:
        ahead: Round[T] | None = None
        follows = False
        with self._lock:
            if self._running is None:  # nothing in flight: run it now
                self._running = mine = Round[T]()
            elif self._next is None:  # the first to need the next run: run it once the one in flight ends
                self._next = mine = Round[T]()
                ahead = self._running
            else:  # the next run has its runner already
                mine, follows = self._next, True
        if follows:
            mine.done.wait()
            return mine.outcome()
        if ahead is not None:
            ahead.done.wait()  # its end made `mine` the running one
        try:
            mine.value = self._check()
        except BaseException as exc:  # whatever happened, the run's callers hear of it
            mine.error = exc
        with self._lock:
            self._running, self._next = self._next, None
        mine.done.set()
        return mine.outcome()


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class HTTPError(Exception):
    """An error answer: status, machine-readable code, human message, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@lru_cache(maxsize=4096)
def describe_cron(expression: str) -> str:
    """Human text for a cron expression ("At 02:00 AM"), nicknames expanded; cron-descriptor wants seconds first,
    croniter last. cron-descriptor joins two restricted day fields with "or"; under the Vixie rule this
    project follows (cron.py), a day field starting with `*` makes them an AND, and the text says so."""
    from cron_descriptor import get_description

    fields = cron.fields_of(expression)
    if len(fields) == 5:
        fields = fields + ["0"]
    seconds_first = fields[5:] + fields[:5]
    day_of_week = fields[4]
    try:
        if cron._days_either(fields) or "*" in (fields[2], day_of_week) or "?" in (fields[2], day_of_week):
            return str(get_description(" ".join(seconds_first)))  # an OR, or one day field is all days: as written
        seconds_first[5] = "*"
        days_of_month = get_description(" ".join(seconds_first))
        weekdays = get_description(f"0 0 0 * * {day_of_week}").removeprefix(get_description("0 0 0 * * *"))
        return f"{days_of_month}, but only when that day is also {weekdays.removeprefix(', ').removeprefix('only ')}"
    except Exception:  # the description is a nicety; the expression itself was validated at load
        return expression


# -- authentication ------------------------------------------------------------------------------------


class Authenticator:
    """Checks bearer tokens: the shared ADMIN_TOKEN, or an HS256 JWT with role ADMIN when JWT_SECRET is set.

    A JWT with an `aud` claim is accepted only when JWT_AUDIENCE is set and the claim names it; with
    JWT_AUDIENCE set, a JWT without `aud` is refused (a token minted for another service must not pass).
    """

    def __init__(self, admin_token: str | None, jwt_secret: str | None, jwt_audience: str | None = None):
        self.admin_token = admin_token
        self.jwt_secret = jwt_secret
        self.jwt_audience = jwt_audience

    def actor(self, authorization: str | None) -> str:
        """Who is asking, or HTTPError 401/403."""
        challenge = {"WWW-Authenticate": 'Bearer realm="admin"'}
        # RFC 7235: the scheme is case-insensitive and one or more spaces separate it from the token.
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPError(401, "unauthorized", "send Authorization: Bearer <ADMIN_TOKEN or admin JWT>", challenge)
        if self.admin_token and hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return "admin-token"
        if self.jwt_secret:
            import jwt

            required = ["exp", "aud"] if self.jwt_audience else ["exp"]
            try:
                claims = jwt.decode(
                    token,
                    self.jwt_secret,
                    algorithms=["HS256"],
                    audience=self.jwt_audience,
                    options={"require": required},
                )
            except jwt.ExpiredSignatureError:
                raise HTTPError(
                    401,
                    "unauthorized",
                    "the token has expired",
                    {"WWW-Authenticate": 'Bearer realm="admin", error="invalid_token"'},
                ) from None
            except jwt.InvalidTokenError as exc:
                # Audience errors come only after the signature checked out, so saying why is safe and helps.
                if isinstance(exc, jwt.InvalidAudienceError) or getattr(exc, "claim", None) == "aud":
                    hint = (
                        f"this server accepts aud {self.jwt_audience!r}"
                        if self.jwt_audience
                        else "set JWT_AUDIENCE on the server to accept tokens with an 'aud' claim"
                    )
                    raise HTTPError(
                        401,
                        "unauthorized",
                        f"the token's audience is not accepted ({exc}; {hint})",
                        {"WWW-Authenticate": 'Bearer realm="admin", error="invalid_token"'},
                    ) from None
            else:
                if claims.get("role") != "ADMIN":
                    raise HTTPError(403, "forbidden", "this token is valid but its role is not ADMIN")
                return str(claims.get("sub") or "jwt")
        raise HTTPError(
            401,
            "unauthorized",
            "the token is not valid",
            {"WWW-Authenticate": 'Bearer realm="admin", error="invalid_token"'},
        )


# -- request parsing -----------------------------------------------------------------------------------


def query_params(query: str, allowed: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """Parse ?a=1&b=2 with one parser per allowed name; anything else is a 400 naming it."""
    params: dict[str, Any] = {name: None for name in allowed}
    for name, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if name not in allowed:
            raise HTTPError(400, "bad_request", f"unknown query parameter {name!r} (allowed: {', '.join(allowed)})")
        if len(values) > 1:
            raise HTTPError(400, "bad_request", f"query parameter {name!r} given more than once")
        try:
            params[name] = allowed[name](values[0])
        except ValueError as exc:
            raise HTTPError(400, "bad_request", f"query parameter {name!r}: {exc}") from None
    return params


def positive_int(limit: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not raw.isdigit() or not 1 <= int(raw) <= limit:
            raise ValueError(f"must be a whole number from 1 to {limit}, got {raw!r}")
        return int(raw)

    return parse


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return parse


def text(raw: str) -> str:
    if not raw or len(raw) > 100:
        raise ValueError("must be 1 to 100 characters")
    return raw


PAGING = {"limit": positive_int(500), "before": positive_int(2**62)}


def body_fields(body: Any, allowed: dict[str, type], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check a JSON object body field by field: unknown fields, wrong types and missing ones are 400s."""
    if not isinstance(body, dict):
        raise HTTPError(400, "bad_request", "the body must be a JSON object")
    for name, value in body.items():
        if name not in allowed:
            hint = (
                "schedules are defined in code: only 'enabled' (and 'note') can change here; "
                "edit definitions.py and deploy"
                if name in SCHEDULE_CODE_FIELDS
                else f"allowed: {', '.join(allowed)}"
            )
            raise HTTPError(400, "bad_request", f"field {name!r} cannot be set: {hint}")
        kind = allowed[name]
        if not isinstance(value, kind):
            raise HTTPError(
                400, "bad_request", f"field {name!r} must be a JSON {JSON_TYPE_NAMES[kind]}, got {json.dumps(value)}"
            )
    for name in required:
        if name not in body:
            raise HTTPError(400, "bad_request", f"field {name!r} is required")
    if "note" in body and len(body["note"]) > 500:
        raise HTTPError(400, "bad_request", "field 'note' must be at most 500 characters")
    return body


JSON_TYPE_NAMES = {bool: "boolean (true or false)", str: "string"}
SCHEDULE_CODE_FIELDS = {
    "id",
    "name",
    "description",
    "cron",
    "timezone",
    "executionMode",
    "jobGroup",
    "environments",
    "missedRunPolicy",
    "overlapPolicy",
    "nextRunAt",
    "lastRunAt",
    "runCount",
    "failureCount",
    "lockedAt",
    "lockedBy",
}


# -- the API -------------------------------------------------------------------------------------------


class AdminAPI:
    """The handlers behind ROUTES: each takes the request and returns (status, JSON body)."""

    def __init__(self, db: Database, app: App, settings: Settings):
        self.db = db
        self.app = app
        self.settings = settings
        self.lock_timeout = timedelta(milliseconds=settings.lock_timeout_ms)
        self.stopping = threading.Event()  # set at SIGTERM: no new manual runs, the rest of one in hand is skipped
        self.pool = ChildPool(db, settings, settings.schedules_module, "admin")  # manual runs' jobs run in its children
        self._schedule_list: CachedList | None = None  # only SharedCheck's one running check touches it
        self._current_schedule_list = SharedCheck(self._check_schedule_list)

    # schedules

    def schedule_json(self, row: dict[str, Any] | None, schedule_id: str, now: datetime) -> dict[str, Any]:
        definition = self.app.schedules.get(schedule_id)
        if definition is None and row is None:
            raise HTTPError(404, "not_found", f"no schedule {schedule_id!r}")
        row = row or {}
        cron_text = definition.cron if definition else row["cron"]
        running = row.get("lockedAt") is not None
        return {
            "id": schedule_id,
            "name": definition.name if definition else row["name"],
            "description": definition.description if definition else "",
            "cron": cron_text,
            "cronDescription": describe_cron(cron_text),
            "timezone": definition.timezone if definition else row["timezone"],
            "executionMode": definition.execution_mode if definition else None,
            "jobGroup": definition.job_group if definition else None,
            "missedRunPolicy": definition.missed_run_policy if definition else None,
            "overlapPolicy": definition.overlap_policy if definition else None,
            "jobs": [j.name for j in self.app.jobs_for(definition)] if definition else [],
            "orphaned": definition is None,
            "synced": bool(row),
            "enabled": bool(row.get("enabled", False)),
            "lastRunAt": iso(row.get("lastRunAt")),
            "nextRunAt": iso(row.get("nextRunAt")),
            "runCount": row.get("runCount", 0),
            "failureCount": row.get("failureCount", 0),
            "running": running,
            "lockedBy": row.get("lockedBy"),
            "lockedAt": iso(row.get("lockedAt")),
            "nextRunTimes": [iso(t) for t in cron.upcoming(definition.cron, definition.timezone, now, 5)]
            if definition
            else [],
        }

    def list_schedules(self, request: Request) -> tuple[int, Any]:
        """The list is built once per change and served as the same bytes (with an ETag) until then.

        It changes when a schedule row changes or when the first of its upcoming run times passes;
        everything else in it (names, cron text, jobs) comes from code. Reading the rows tells which;
        concurrent requests share one read (see SharedCheck), none older than the request itself.
        """
        query_params(request.query, {})
        return 200, self._current_schedule_list()

    def _check_schedule_list(self) -> EncodedJSON:
        rows = self.db.fetch_all("list_schedules")
        key = tuple(tuple(row.values()) for row in rows)
        now = utcnow()
        cached = self._schedule_list
        if cached is None or cached.key != key or now >= cached.stale_at:
            cached = self._schedule_list = self._build_schedule_list(key, rows, now)
        return cached.body

    def _build_schedule_list(self, key: tuple[Any, ...], rows: list[dict[str, Any]], now: datetime) -> CachedList:
        by_id = {row["id"]: row for row in rows}
        ids = list(self.app.schedules) + sorted(set(by_id) - set(self.app.schedules))
        schedules = [self.schedule_json(by_id.get(i), i, now) for i in ids]
        upcoming = [s["nextRunTimes"][0] for s in schedules if s["nextRunTimes"]]
        stale_at = min((parse_iso(t) for t in upcoming), default=now + timedelta(hours=1))
        return CachedList(key, EncodedJSON.of({"schedules": schedules}), stale_at)

    def get_schedule(self, request: Request) -> tuple[int, Any]:
        query_params(request.query, {})
        schedule_id = request.args["id"]
        return 200, {
            "schedule": self.schedule_json(self.db.fetch_one("get_schedule", id=schedule_id), schedule_id, utcnow())
        }

    def patch_schedule(self, request: Request) -> tuple[int, Any]:
        query_params(request.query, {})
        body = body_fields(request.json(), {"enabled": bool, "note": str}, required=("enabled",))
        schedule_id = request.args["id"]
        definition = self.require_runnable(schedule_id)
        now = utcnow()
        with self.db.transaction():
            if body["enabled"]:
                changed = self.db.execute(
                    "enable_schedule", id=schedule_id, next_run_at=definition.next_after(now), now=now
                )
            else:
                changed = self.db.execute("disable_schedule", id=schedule_id, now=now)
            if changed:
                self.audit(request, "enable" if body["enabled"] else "disable", schedule_id, body.get("note"), now)
        if changed:
            log.info(
                "[admin] %s %s schedule %s", request.actor, "enabled" if body["enabled"] else "disabled", schedule_id
            )
        return 200, {
            "schedule": self.schedule_json(self.db.fetch_one("get_schedule", id=schedule_id), schedule_id, now)
        }

    def trigger(self, request: Request) -> tuple[int, Any]:
        """Run now, inline, under the daemon's claim; without moving nextRunAt; for disabled schedules too."""
        query_params(request.query, {})
        body = body_fields(request.json(allow_empty=True), {"note": str})
        schedule_id = request.args["id"]
        definition = self.require_runnable(schedule_id)
        if self.settings.execution_mode == "queue":
            return self.enqueue_now(request, definition, body.get("note"))
        if self.stopping.is_set():
            raise HTTPError(503, "shutting_down", "the admin server is shutting down: it starts no manual runs")
        log.info("[admin] %s triggered schedule %s", request.actor, schedule_id)
        outcome = run_now(
            self.db,
            self.app,
            self.pool,
            definition,
            "admin_server",
            self.settings.heartbeat_interval_ms / 1000,
            self.stopping,
            "admin",
            lambda now: self.audit(request, "trigger", schedule_id, body.get("note"), now),
        )
        if outcome is None:
            holder = self.db.fetch_one("get_schedule", id=schedule_id)
            raise HTTPError(
                409,
                "conflict",
                f"schedule {schedule_id!r} is running now (held by "
                f"{holder['lockedBy'] if holder else '?'} since {iso(holder['lockedAt']) if holder else '?'})",
            )
        return 200, {
            "message": "Schedule triggered",
            "jobsExecuted": outcome.count(RunStatus.COMPLETED) + outcome.count(RunStatus.FAILED),
            "succeeded": outcome.count(RunStatus.COMPLETED),
            "failed": outcome.count(RunStatus.FAILED),
            "skipped": outcome.count(RunStatus.SKIPPED),
            "runs": [self.run_json(row) for r in outcome.runs if (row := self.db.fetch_one("get_run", id=r.id))],
        }

    def enqueue_now(self, request: Request, definition: ScheduleDefinition, note: str | None) -> tuple[int, Any]:
        """Run now in queue mode: queue the occurrence for the job workers and answer 202 at once."""
        now = utc_ms(utcnow())
        with self.db.transaction():
            batch_id = enqueue_occurrence(self.db, self.app, definition, now, "MANUAL", now)
            self.audit(request, "trigger", definition.id, note, now)
        runs = self.db.fetch_all("batch_runs", batch_id=batch_id)
        log.info("[admin] %s queued schedule %s (%d jobs)", request.actor, definition.id, len(runs))
        return 202, {
            "message": "Schedule queued",
            "jobsQueued": len(runs),
            "runIds": [r["id"] for r in runs],
            "runs": [self.run_json(r) for r in runs],
        }

    def require_runnable(self, schedule_id: str) -> Any:
        definition = self.app.schedules.get(schedule_id)
        row = self.db.fetch_one("get_schedule", id=schedule_id)
        if row is None and definition is None:
            raise HTTPError(404, "not_found", f"no schedule {schedule_id!r}")
        if definition is None:
            raise HTTPError(409, "orphaned", f"schedule {schedule_id!r} is no longer defined in code; it never runs")
        if row is None:
            raise HTTPError(
                409,
                "not_synced",
                f"schedule {schedule_id!r} is not in the database yet; restart the server or daemon to sync it",
            )
        return definition

    def audit(self, request: Request, action: str, schedule_id: str, note: str | None, now: datetime) -> None:
        self.db.insert(
            "insert_audit",
            now=now,
            actor=request.actor,
            action=action,
            schedule_id=schedule_id,
            note=note,
            remote_address=request.remote_address,
        )

    # runs

    @staticmethod
    def run_json(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "jobName": row["jobName"],
            "status": row["status"],
            "trigger": row["trigger"],
            "scheduleId": row["scheduleId"],
            "scheduledFor": iso(row["scheduledFor"]),
            "attempt": row["attempt"],
            "workerId": row["workerId"],
            "queuedAt": iso(row["queuedAt"]),
            "startedAt": iso(row["startedAt"]),
            "completedAt": iso(row["completedAt"]),
            "durationMs": row["durationMs"],
            "error": row["error"],
            "createdAt": iso(row["createdAt"]),
            "batchId": row["batchId"],
        }

    def runs_page(self, rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
        return {"runs": [self.run_json(r) for r in rows], "nextBefore": rows[-1]["id"] if len(rows) == limit else None}

    def history(self, request: Request) -> tuple[int, Any]:
        params = query_params(request.query, PAGING)
        schedule_id = request.args["id"]
        if schedule_id not in self.app.schedules and self.db.fetch_one("get_schedule", id=schedule_id) is None:
            raise HTTPError(404, "not_found", f"no schedule {schedule_id!r}")
        limit = params["limit"] or 50
        rows = self.db.fetch_all(
            "list_runs", status=None, schedule_id=schedule_id, job_name=None, before=params["before"], limit=limit
        )
        return 200, self.runs_page(rows, limit)

    def list_jobs(self, request: Request) -> tuple[int, Any]:
        params = query_params(
            request.query, {**PAGING, "status": one_of(RUN_STATUSES), "scheduleId": text, "jobName": text}
        )
        limit = params["limit"] or 50
        rows = self.db.fetch_all(
            "list_runs",
            status=params["status"],
            schedule_id=params["scheduleId"],
            job_name=params["jobName"],
            before=params["before"],
            limit=limit,
        )
        return 200, self.runs_page(rows, limit)

    def get_job(self, request: Request) -> tuple[int, Any]:
        query_params(request.query, {})
        run_id = int(request.args["run_id"])
        row = self.db.fetch_one("get_run", id=run_id) if run_id < 2**62 else None
        if row is None:
            raise HTTPError(404, "not_found", f"no run {run_id}")
        logs = [
            {"createdAt": iso(line["createdAt"]), "level": line["level"], "message": line["message"]}
            for line in self.db.fetch_all("list_logs", run_id=run_id)
        ]
        return 200, {"run": self.run_json(row), "logs": logs}

    # workers, audit, health

    def workers(self, request: Request) -> tuple[int, Any]:
        query_params(request.query, {})
        now = utcnow()
        workers = []
        for row in self.db.fetch_all("list_workers"):
            age = (now - row["lastHeartbeatAt"]).total_seconds()
            workers.append(
                {
                    "id": row["id"],
                    "workerType": row["workerType"],
                    "hostname": row["hostname"],
                    "pid": row["pid"],
                    "status": row["status"],
                    "startedAt": iso(row["startedAt"]),
                    "lastHeartbeatAt": iso(row["lastHeartbeatAt"]),
                    "stoppedAt": iso(row["stoppedAt"]),
                    "heartbeatAgeSeconds": round(age, 3),
                    "alive": row["status"] == "RUNNING" and age < self.lock_timeout.total_seconds(),
                }
            )
        return 200, {"workers": workers}

    def audit_log(self, request: Request) -> tuple[int, Any]:
        params = query_params(request.query, PAGING)
        limit = params["limit"] or 50
        rows = self.db.fetch_all("list_audit", before=params["before"], limit=limit)
        return 200, {
            "entries": [
                {
                    "id": r["id"],
                    "createdAt": iso(r["createdAt"]),
                    "actor": r["actor"],
                    "action": r["action"],
                    "scheduleId": r["scheduleId"],
                    "note": r["note"],
                    "remoteAddress": r["remoteAddress"],
                }
                for r in rows
            ],
            "nextBefore": rows[-1]["id"] if len(rows) == limit else None,
        }

    def health(self, request: Request) -> tuple[int, Any]:
        query_params(request.query, {})
        return 200, check_health(self.db, self.settings)

    # the operator's page and Prometheus

    def occurrences(self, request: Request) -> tuple[int, Any]:
        """A schedule's history grouped by occurrence, newest first, each with its runs."""
        params = query_params(request.query, {"limit": positive_int(100), "before": positive_int(2**62)})
        schedule_id = request.args["id"]
        if schedule_id not in self.app.schedules and self.db.fetch_one("get_schedule", id=schedule_id) is None:
            raise HTTPError(404, "not_found", f"no schedule {schedule_id!r}")
        found, next_before = self.recent_occurrences(
            schedule_id, params["limit"] or 20, params["before"], OCCURRENCE_RUNS_READ
        )
        return 200, {"occurrences": found, "nextBefore": next_before}

    def recent_occurrences(
        self, schedule_id: str, limit: int, before: int | None, read: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to `limit` occurrences from the latest `read` runs, and the `before` of the next page (None: no more)."""
        rows = self.db.fetch_all(
            "list_runs", status=None, schedule_id=schedule_id, job_name=None, before=before, limit=read
        )
        found = group_occurrences([self.run_json(r) for r in rows])
        if len(rows) == read and len(found) > 1:
            found = found[:-1]  # the oldest group may have runs beyond what was read
        found = found[:limit]
        more = len(rows) == read or len(found) == limit
        return found, (min(r["id"] for o in found for r in o["runs"]) if found and more else None)

    def overview(self, request: Request) -> tuple[int, Any]:
        """What the page's front shows: each schedule's last outcome, last 20 occurrences and 7-day success rate."""
        query_params(request.query, {})
        now = utcnow()
        rates = {r["scheduleId"]: r for r in self.db.fetch_all("success_rate", since=now - timedelta(days=7))}
        ids = list(self.app.schedules) + sorted(
            {r["id"] for r in self.db.fetch_all("list_schedules")} - set(self.app.schedules)
        )
        schedules = []
        for schedule_id in ids:
            # Twice the runs of 20 occurrences (retries, skip records) rather than OCCURRENCE_RUNS_READ:
            # this runs for every schedule on every refresh of the page.
            definition = self.app.schedules.get(schedule_id)
            jobs = len(self.app.jobs_for(definition)) if definition else 1
            strip, _ = self.recent_occurrences(schedule_id, 20, None, min(OCCURRENCE_RUNS_READ, 40 * max(jobs, 1) + 1))
            rate = rates.get(schedule_id)
            finished = [o for o in strip if o["status"] not in ("RUNNING", "QUEUED")]
            schedules.append(
                {
                    "id": schedule_id,
                    "lastOutcome": finished[0]["status"] if finished else None,
                    "occurrences": [{k: v for k, v in o.items() if k != "runs"} for o in strip],
                    "successRate7d": None
                    if not rate
                    else {
                        "total": rate["total"],
                        "succeeded": int(rate["succeeded"]),
                        "failed": int(rate["failed"]),
                        "percent": round(int(rate["succeeded"]) / rate["total"] * 100, 2),
                    },
                }
            )
        failures = self.db.fetch_all(
            "list_runs", status="FAILED", schedule_id=None, job_name=None, before=None, limit=10
        )
        return 200, {"schedules": schedules, "recentFailures": [self.run_json(r) for r in failures]}

    def metrics(self, request: Request) -> tuple[int, Any]:
        """Prometheus text format; METRICS_TOKEN (when set) or the admin credentials."""
        authorization = request.handler.headers.get("Authorization") or ""
        token = self.settings.metrics_token
        if not (token and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())):
            request.handler.auth.actor(authorization or None)
        query_params(request.query, {})
        payload, content_type = metrics.render(self.db, self.app, self.settings, self.db.now())
        return 200, RawBody(payload, content_type)

    def healthz(self, request: Request) -> tuple[int, Any]:
        try:
            self.db.fetch_one("ping")
        except Exception as exc:  # whatever the reason, a database that does not answer is unhealthy
            return 503, {"error": {"code": "database_unavailable", "message": f"the database does not answer: {exc}"}}
        return 200, {"status": "ok"}

    def openapi(self, request: Request) -> tuple[int, Any]:
        return 200, OPENAPI

    def page(self, request: Request) -> tuple[int, Any]:
        return 200, PAGE


OCCURRENCE_RUNS_READ = 500  # runs read to build one page of occurrences
FINISHED = ("COMPLETED", "FAILED", "SKIPPED")


def group_occurrences(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs (newest first, as run_json) grouped by occurrence, newest first, each with an overall status.

    An occurrence is one batch (its jobs and their retries), or one skip record. Its status: RUNNING
    or QUEUED while a job is; SKIPPED when every job was; FAILED when a job's latest attempt did not
    complete; COMPLETED otherwise. Its error is the first failing job's last error line.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run.get("batchId") or f"run-{run['id']}", []).append(run)
    found = []
    for key, members in groups.items():
        latest: dict[str, dict[str, Any]] = {}
        for run in sorted(members, key=lambda r: r["attempt"]):
            latest[run["jobName"]] = run
        statuses = [r["status"] for r in latest.values()]
        if "RUNNING" in statuses or "QUEUED" in statuses:
            status = "RUNNING" if "RUNNING" in statuses else "QUEUED"
        elif all(s == "SKIPPED" for s in statuses):
            status = "SKIPPED"
        elif all(s == "COMPLETED" for s in statuses):
            status = "COMPLETED"
        else:
            status = "FAILED"
        started = [r["startedAt"] for r in members if r["startedAt"]]
        ended = [r["completedAt"] for r in members if r["completedAt"]]
        failing = next((r for r in reversed(members) if r["status"] != "COMPLETED" and r["error"]), None)
        start, end = min(started, default=None), max(ended, default=None)
        found.append(
            {
                "key": key,
                "scheduleId": members[0]["scheduleId"],
                "scheduledFor": members[-1]["scheduledFor"],
                "trigger": members[0]["trigger"],
                "status": status,
                "startedAt": start,
                "completedAt": end if status in FINISHED else None,
                "durationMs": (
                    int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000)
                    if start and end and status in FINISHED
                    else None
                ),
                "error": failing["error"].strip().splitlines()[-1] if failing else None,
                "runs": sorted(members, key=lambda r: r["id"]),
            }
        )
    return found


class Request:
    """What a handler needs of an HTTP request."""

    def __init__(self, handler: AdminRequestHandler, args: dict[str, str], query: str, actor: str):
        self.handler = handler
        self.args = args
        self.query = query
        self.actor = actor
        self.remote_address = handler.client_address[0]

    def json(self, allow_empty: bool = False) -> Any:
        raw = self.handler.body
        if not raw.strip():
            if allow_empty:
                return {}
            raise HTTPError(400, "bad_request", 'the body must be a JSON object, e.g. {"enabled": true}')
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, "bad_request", f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise HTTPError(400, "bad_request", "the body's JSON is nested too deeply") from None


# (method, path pattern, handler name, needs authentication)
ROUTES: list[tuple[str, str, str, bool]] = [
    ("GET", r"/healthz", "healthz", False),
    ("GET", r"/admin", "page", False),  # a static shell: every piece of data it shows comes from the API
    ("GET", r"/admin/openapi\.json", "openapi", True),
    ("GET", r"/admin/schedules", "list_schedules", True),
    ("GET", r"/admin/schedules/(?P<id>[^/]+)", "get_schedule", True),
    ("PATCH", r"/admin/schedules/(?P<id>[^/]+)", "patch_schedule", True),
    ("POST", r"/admin/schedules/(?P<id>[^/]+)/trigger", "trigger", True),
    ("GET", r"/admin/schedules/(?P<id>[^/]+)/history", "history", True),
    ("GET", r"/admin/jobs", "list_jobs", True),
    ("GET", r"/admin/jobs/(?P<run_id>[0-9]{1,19})", "get_job", True),
    ("GET", r"/admin/workers", "workers", True),
    ("GET", r"/admin/audit", "audit_log", True),
    ("GET", r"/admin/health", "health", True),
    ("GET", r"/admin/overview", "overview", True),
    ("GET", r"/admin/schedules/(?P<id>[^/]+)/occurrences", "occurrences", True),
    ("GET", r"/metrics", "metrics", False),  # checks METRICS_TOKEN or the admin credentials itself
]
COMPILED_ROUTES = [(method, re.compile(pattern + r"/?\Z"), name, auth) for method, pattern, name, auth in ROUTES]


class ClientGone(Exception):
    """The client closed the connection, or was cut off by the idle timeout, before its request was in."""


class AdminRequestHandler(BaseHTTPRequestHandler):
    server_version = "schedule-jobs-admin"
    api: AdminAPI
    auth: Authenticator
    server: AdminHTTPServer
    body = b""

    def handle_one_request(self) -> None:
        """One request on this connection; the idle deadline runs from here until its body is in."""
        self.server.awaiting_request(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.request_received(self.connection)

    def __getattr__(self, name: str) -> Any:
        """http.server calls do_<METHOD>; every method goes through dispatch(), so unknown ones get a 405."""
        if name.startswith("do_"):
            return lambda: self.dispatch(name[3:])
        raise AttributeError(name)

    def dispatch(self, method: str) -> None:
        self.started = time.monotonic()
        parts = urllib.parse.urlsplit(self.path)
        try:
            self.body = self.read_body()  # first: an unread body must not be parsed as the next request
            # At EOF http.server takes a half-sent request for a whole one: never act on one the timeout cut.
            if not self.server.request_received(self.connection):  # and a long "Run now" is not an idle client
                raise ClientGone("cut off by ADMIN_IDLE_TIMEOUT_S before the request was complete")
            path = urllib.parse.unquote(parts.path)
            matches = [
                (m, match, name, auth) for m, pattern, name, auth in COMPILED_ROUTES if (match := pattern.match(path))
            ]
            if not matches:
                raise HTTPError(404, "not_found", f"no route {parts.path}")
            allowed = sorted({m for m, *_ in matches} | ({"HEAD"} if any(m == "GET" for m, *_ in matches) else set()))
            chosen = next((x for x in matches if x[0] == method or (method == "HEAD" and x[0] == "GET")), None)
            if chosen is None:
                raise HTTPError(
                    405, "method_not_allowed", f"{method} is not allowed on {parts.path}", {"Allow": ", ".join(allowed)}
                )
            _, match, name, needs_auth = chosen
            actor = self.auth.actor(self.headers.get("Authorization")) if needs_auth else "anonymous"
            status, body = getattr(self.api, name)(Request(self, match.groupdict(), parts.query, actor))
        except ClientGone as exc:
            self.close_connection = True
            log.debug("[admin] %s %s from %s: %s", method, parts.path, self.client_address[0], exc)
        except HTTPError as exc:
            self.send_body(exc.status, {"error": {"code": exc.code, "message": exc.message}}, exc.headers)
        except DatabaseUnavailable as exc:
            self.send_body(503, {"error": {"code": "database_unavailable", "message": str(exc)}})
        except Conflict as exc:
            self.send_body(409, {"error": {"code": "conflict", "message": f"{exc}; try again"}})
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("[admin] %s %s failed: %r at %s:%s", method, parts.path, exc, where.filename, where.lineno)
            self.send_body(500, {"error": {"code": "internal_error", "message": "internal error; see the server log"}})
        else:  # not inside the try: a client that stopped reading must not turn into a second, 500 answer
            self.send_body(status, body)

    def read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.isdigit():
            self.close_connection = True
            raise HTTPError(400, "bad_request", "Content-Length must be a number")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            raise HTTPError(413, "payload_too_large", f"the body is {length} bytes; the limit is {MAX_BODY_BYTES}")
        try:
            body = self.rfile.read(int(length))
        except (TimeoutError, OSError):
            body = b""
        if len(body) < int(length):
            raise ClientGone(f"closed after {len(body)} of {length} body bytes (ADMIN_IDLE_TIMEOUT_S or the client)")
        return body

    def send_body(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """The one way out for every answer: logs the request's line (no headers: tokens live there), then sends."""
        etag = None
        if isinstance(body, EncodedJSON):
            payload, content_type, etag = body.payload, "application/json", body.etag
            if status == 200 and self.headers.get("If-None-Match") == etag:
                status = 304
        elif isinstance(body, bytes):
            payload, content_type = body, "text/html; charset=utf-8"
        elif isinstance(body, RawBody):
            payload, content_type = body.payload, body.content_type
        else:
            payload, content_type = json.dumps(body).encode(), "application/json"
        path = urllib.parse.urlsplit(getattr(self, "path", "") or "").path  # unset when the request line was garbage
        log.info(
            "[admin] %s %s %d %.1fms",
            getattr(self, "command", None),
            path,
            status,
            (time.monotonic() - getattr(self, "started", time.monotonic())) * 1000,
        )
        self.send_response(status)
        if status != 304:  # "not modified" has no body, so no type or length of one
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
        if etag is not None:  # the client may keep the list, but must ask again each time (a 304 is cheap)
            self.send_header("ETag", etag)
            self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if content_type.startswith("text/html"):
            self.send_header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
            )
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and status != 304:
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (malformed request line, unsupported method) as JSON too."""
        self.close_connection = True
        if not self.server.request_received(self.connection):
            return  # what looks malformed was cut off by the idle timeout: nobody is listening for an answer
        self.send_body(code, {"error": {"code": "bad_request" if code < 500 else "error", "message": message or ""}})

    def log_message(self, format: str, *args: Any) -> None:
        pass  # send_body() logs one line per request


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(settings: Settings, db: Database, app: App) -> AdminHTTPServer:
    """Check the auth configuration, sync definitions, and bind the server (not yet serving)."""
    admin_token = settings.admin_token
    if not admin_token and not settings.jwt_secret:
        if not is_loopback(settings.host):
            raise ScheduleJobsError(
                f"refusing to serve /admin on {settings.host} without authentication: "
                "set ADMIN_TOKEN (a long random string) or JWT_SECRET"
            )
        admin_token = secrets.token_urlsafe(24)
        token_file = Path(".admin-token")
        write_private_file(token_file, admin_token + "\n")
        log.warning(
            "[admin] no ADMIN_TOKEN or JWT_SECRET set: wrote a one-off token for this run to %s (loopback only)",
            token_file.resolve(),
        )
    db.migrate()
    sync_definitions(db, app, utcnow())
    return bind(
        settings.host,
        settings.port,
        AdminAPI(db, app, settings),
        Authenticator(admin_token, settings.jwt_secret, settings.jwt_audience),
    )


def write_private_file(path: Path, content: str) -> None:
    """Write `content` to a new file that is mode 600 from its first byte and never a symbolic link's target."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW  # O_EXCL: fail on anything already there
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        if path.is_symlink() or not path.is_file():
            raise ScheduleJobsError(
                f"{path.resolve(strict=False)} exists and is not a regular file (a symbolic link?): "
                "remove it, or set ADMIN_TOKEN"
            ) from None
        path.unlink()  # the token of an earlier run; replaced, never rewritten in place
        fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(content)


def bind(host: str, port: int, api: AdminAPI, auth: Authenticator) -> AdminHTTPServer:
    """An AdminHTTPServer answering with `api` behind `auth`; port 0 picks a free port."""
    idle_timeout = api.settings.admin_idle_timeout_s
    # `timeout` bounds each socket operation, sending an answer to a client that does not read included;
    # a second over the reaper's deadline so that the reaper alone closes idle readers (and counts them).
    handler = type("Handler", (AdminRequestHandler,), {"api": api, "auth": auth, "timeout": idle_timeout + 1})
    return AdminHTTPServer((host, port), handler, idle_timeout)


def shut(connection: socket.socket) -> None:
    """Shut a connection down from another thread: a recv() blocked on it returns at once."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its handler


class AdminHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that idle, slow or departed clients cannot stall.

    Each request (line, headers and body) must be in within `idle_timeout` seconds of the connection
    starting to wait for it, however slowly it trickles in: one reaper thread shuts down the connections
    past their deadline, which frees their threads. When serving stops, every connection still waiting
    for its request is shut down at once, so stopping waits only for requests in flight. Each connection
    gets a thread of its own, reused from connections before it when one is idle.
    """

    request_queue_size = 128  # the default listen backlog of 5 drops connections under a burst of 50
    daemon_threads = False  # server_close() waits for requests in flight, manual runs included

    def __init__(self, address: tuple[str, int], handler: type[AdminRequestHandler], idle_timeout: float):
        super().__init__(address, handler)
        self.database = handler.api.db
        self.idle_timeout = idle_timeout
        self.waiting: dict[socket.socket, float] = {}  # connection -> monotonic deadline for its request
        self.waiting_lock = threading.Lock()
        self.stopped = threading.Event()
        self.pool_lock = threading.Lock()
        self.idle_workers: list[queue.SimpleQueue[tuple[Any, Any] | None]] = []  # the last to finish first
        self.closing = False
        self.workers: set[threading.Thread] = set()

    def awaiting_request(self, connection: socket.socket) -> None:
        with self.waiting_lock:
            if self.stopped.is_set():
                shut(connection)
            else:
                self.waiting[connection] = time.monotonic() + self.idle_timeout

    def request_received(self, connection: socket.socket) -> bool:
        """Stop the connection's clock; False when it had run out (the request was cut off, not complete)."""
        with self.waiting_lock:
            return self.waiting.pop(connection, None) is not None

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.stopped.clear()
        threading.Thread(target=self.reap_idle, name="admin-idle-reaper", daemon=True).start()
        try:
            super().serve_forever(poll_interval)
        finally:
            with self.waiting_lock:
                self.stopped.set()
                for connection in self.waiting:
                    shut(connection)
                self.waiting.clear()

    def reap_idle(self) -> None:
        while not self.stopped.wait(min(0.25, self.idle_timeout / 4)):
            now = time.monotonic()
            with self.waiting_lock:
                expired = [connection for connection, deadline in self.waiting.items() if deadline <= now]
                for connection in expired:
                    del self.waiting[connection]
                    shut(connection)
            if expired:
                log.info(
                    "[admin] closed %d connections that sent no complete request within %ss",
                    len(expired),
                    self.idle_timeout,
                )

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to an idle worker thread, or start one: still a thread per connection in
        flight, so a slow client holds up no other, but without a new thread (and the accept loop waiting
        for it to start) per connection: under 50 clients each connecting anew, that was the cost."""
        with self.pool_lock:
            inbox = self.idle_workers.pop() if self.idle_workers else None
        if inbox is not None:
            inbox.put((request, client_address))
            return
        thread = threading.Thread(
            target=self.work, args=(request, client_address), name="admin-worker", daemon=self.daemon_threads
        )
        with self.pool_lock:
            self.workers.add(thread)
        thread.start()

    def work(self, request: Any, client_address: Any) -> None:
        """Serve connections until idle for WORKER_IDLE_S, or until server_close(), on one database connection.

        A new connection per request cost more than the request: PyMySQL builds a TLS context for each
        (~20 ms of CPU); a connection gone stale while idle is replaced by the database layer."""
        inbox: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        handed: tuple[Any, Any] | None = (request, client_address)
        try:
            while handed is not None:
                self.process_request_thread(*handed)
                with self.pool_lock:
                    if self.closing:
                        return
                    self.idle_workers.append(inbox)
                try:
                    handed = inbox.get(timeout=WORKER_IDLE_S)
                except queue.Empty:
                    with self.pool_lock:
                        if inbox in self.idle_workers:
                            self.idle_workers.remove(inbox)
                            return
                    handed = inbox.get()  # taken off the idle list as the wait ran out: a connection is on its way
        finally:
            self.database.close()  # the thread's connection, kept from request to request, ends with it
            with self.pool_lock:
                self.workers.discard(threading.current_thread())

    def server_close(self) -> None:
        with self.pool_lock:
            self.closing = True
            idle, self.idle_workers = self.idle_workers, []
        for inbox in idle:
            inbox.put(None)
        super().server_close()
        with self.pool_lock:
            busy = list(self.workers)
        for thread in busy:  # requests in flight, manual runs included, finish first
            thread.join()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback: mostly a client that went away mid-answer."""
        log.warning("[admin] connection from %s ended early: %r", client_address[0], sys.exc_info()[1])


def main() -> int:
    configure_logging()
    try:
        settings = Settings.from_env()
        app = load_app(settings.schedules_module, settings.environment)
        db = settings.database()
        server = make_server(settings, db, app)
    except (ScheduleJobsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    worker = None
    if settings.embedded_job_worker:
        worker = JobWorker(db, app, settings)
        until_database_answers("embedded job worker start-up", worker.start, worker.stopping, "admin")
        threading.Thread(target=worker.run_forever, name="embedded-job-worker", daemon=True).start()
        log.info(
            "[admin] Embedded job worker started (JOB_WORKER_POLL_INTERVAL_MS=%d)", settings.job_worker_poll_interval_ms
        )
    else:
        log.info("[admin] Job worker disabled (EMBEDDED_JOB_WORKER is not true)")
    alerts.start(db, settings, "admin")  # the web service stays up: its watchdog notices the only daemon gone
    host, port = server.server_address[:2]
    log.info(
        "[admin] Admin server listening on http://%s:%s/admin (database %s, %d schedules)",
        host,
        port,
        db.url,
        len(app.schedules),
    )
    api = cast(type[AdminRequestHandler], server.RequestHandlerClass).api

    def shut_down(signum: int, _frame: Any) -> None:
        log.info(
            "[admin] %s received: finishing requests in flight (manual runs get SHUTDOWN_GRACE_S, %ds), then stopping",
            signal.Signals(signum).name,
            settings.shutdown_grace_s,
        )
        api.stopping.set()
        api.pool.end_runs_after_grace()
        if worker is not None:
            worker.stop()
            worker.pool.end_runs_after_grace()
        threading.Thread(target=server.shutdown).start()  # shutdown() waits for serve_forever: not on its thread

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    server.serve_forever()
    if worker is not None:
        worker.stop()  # the worker finishes the job in hand and marks itself STOPPED
        worker.stopped.wait(timeout=60)
    alerts.stop()
    server.server_close()
    api.pool.close()
    log.info("[admin] Admin server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
