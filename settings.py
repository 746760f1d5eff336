"""Environment variables, read and checked in one place. Every variable is listed in the README."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.parse
from dataclasses import dataclass

from db import DEFAULT_DATABASE_URL, Database
from errors import ConfigError


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _millis(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"{name} must be a positive whole number of milliseconds, got {raw!r}")
    return int(raw)


def _count(env: dict[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


def _whole(env: dict[str, str], name: str, default: int) -> int:
    value = _count(env, name, default)
    return default if value is None else value


def _positive(env: dict[str, str], name: str, default: int) -> int:
    value = _whole(env, name, default)
    if value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {env.get(name)!r}")
    return value


def _seconds(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"{name} must be a positive whole number of seconds, got {raw!r}")
    return int(raw)


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _port(env: dict[str, str]) -> int:
    raw = env.get("PORT", "").strip() or "8080"
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ConfigError(f"PORT must be a TCP port number (0-65535), got {raw!r}")
    return int(raw)


def _urls(env: dict[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of http(s) URLs; the message never repeats a URL (they hold secrets)."""
    urls = tuple(u.strip() for u in env.get(name, "").split(",") if u.strip())
    for position, url in enumerate(urls, 1):
        if url_problem(url):
            raise ConfigError(f"{name}: URL number {position} {url_problem(url)}")
    return urls


def url_problem(url: str) -> str | None:
    """None for an http or https URL with a host; otherwise what is wrong with it (never the URL: it holds secrets)."""
    if any(c.isspace() or not c.isprintable() for c in url):  # the HTTP client would refuse it, quoting its path
        return "contains whitespace or control characters: percent-encode them (%20 for a space)"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


@dataclass(frozen=True)
class Settings:
    database_url: str
    schedules_module: str
    environment: str
    daemon_enabled: bool
    poll_interval_ms: int
    heartbeat_interval_ms: int
    lock_timeout_ms: int
    db_lock_wait_timeout_ms: int
    host: str
    port: int
    admin_token: str | None
    jwt_secret: str | None
    jwt_audience: str | None
    admin_idle_timeout_s: int
    execution_mode: str
    embedded_job_worker: bool
    job_worker_poll_interval_ms: int
    health_max_heartbeat_age_s: int
    health_overdue_tolerance_s: int
    health_max_queued: int
    health_max_queue_age_s: int
    expected_daemons: int | None
    expected_workers: int | None
    job_timeout_s: int
    job_kill_grace_s: int
    job_max_runs_per_child: int
    job_child_idle_s: int
    job_log_max_bytes: int
    job_log_retention_days: int
    schedule_concurrency: int
    job_worker_concurrency: int
    shutdown_grace_s: int
    alert_webhook_urls: tuple[str, ...]
    alert_repeat_s: int
    metrics_token: str | None
    log_format: str
    log_level: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        settings = cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            schedules_module=env.get("SCHEDULES_MODULE") or "definitions",
            environment=env.get("APP_ENV") or env.get("NODE_ENV") or "development",
            daemon_enabled=_flag(env, "SCHEDULE_DAEMON_ENABLED", True),
            poll_interval_ms=_millis(env, "SCHEDULE_POLL_INTERVAL_MS", 60_000),
            heartbeat_interval_ms=_millis(env, "HEARTBEAT_INTERVAL_MS", 60_000),
            lock_timeout_ms=_millis(env, "LOCK_TIMEOUT_MS", 300_000),
            db_lock_wait_timeout_ms=_millis(env, "DB_LOCK_WAIT_TIMEOUT_MS", 30_000),
            host=env.get("HOST") or "127.0.0.1",
            port=_port(env),
            admin_token=env.get("ADMIN_TOKEN") or None,
            jwt_secret=env.get("JWT_SECRET") or None,
            jwt_audience=env.get("JWT_AUDIENCE") or None,
            admin_idle_timeout_s=_seconds(env, "ADMIN_IDLE_TIMEOUT_S", 5),
            execution_mode=_choice(env, "EXECUTION_MODE", ("inline", "queue")),
            embedded_job_worker=_flag(env, "EMBEDDED_JOB_WORKER", False),
            job_worker_poll_interval_ms=_millis(env, "JOB_WORKER_POLL_INTERVAL_MS", 5_000),
            health_max_heartbeat_age_s=_whole(env, "HEALTH_MAX_HEARTBEAT_AGE_S", 120),
            health_overdue_tolerance_s=_whole(env, "HEALTH_OVERDUE_TOLERANCE_S", 300),
            health_max_queued=_whole(env, "HEALTH_MAX_QUEUED", 50),
            health_max_queue_age_s=_whole(env, "HEALTH_MAX_QUEUE_AGE_S", 3600),
            expected_daemons=_count(env, "EXPECTED_DAEMONS", None),
            expected_workers=_count(env, "EXPECTED_WORKERS", None),
            job_timeout_s=_whole(env, "JOB_TIMEOUT_S", 3600),
            job_kill_grace_s=_whole(env, "JOB_KILL_GRACE_S", 10),
            job_max_runs_per_child=_positive(env, "JOB_MAX_RUNS_PER_CHILD", 1000),
            job_child_idle_s=_whole(env, "JOB_CHILD_IDLE_S", 300),
            job_log_max_bytes=_whole(env, "JOB_LOG_MAX_BYTES", 1024 * 1024),
            job_log_retention_days=_positive(env, "JOB_LOG_RETENTION_DAYS", 7),
            schedule_concurrency=_positive(env, "SCHEDULE_CONCURRENCY", 4),
            job_worker_concurrency=_positive(env, "JOB_WORKER_CONCURRENCY", 1),
            shutdown_grace_s=_whole(env, "SHUTDOWN_GRACE_S", 25),
            alert_webhook_urls=_urls(env, "ALERT_WEBHOOK_URL"),
            alert_repeat_s=_whole(env, "ALERT_REPEAT_S", 3600),
            metrics_token=env.get("METRICS_TOKEN") or None,
            log_format=_choice(env, "LOG_FORMAT", ("text", "json")),
            log_level=_choice(env, "LOG_LEVEL", LOG_LEVELS).upper(),
        )
        if settings.heartbeat_interval_ms * 2 > settings.lock_timeout_ms:
            raise ConfigError(
                f"HEARTBEAT_INTERVAL_MS ({settings.heartbeat_interval_ms}) must be at most half of LOCK_TIMEOUT_MS "
                f"({settings.lock_timeout_ms}), or a live holder's lease could expire between two renewals"
            )
        return settings

    def database(self) -> Database:
        """The Database these settings name, with their lock wait timeout."""
        return Database.from_url(self.database_url, self.db_lock_wait_timeout_ms)


LOG_FIELDS = ("scheduleId", "jobName", "runId", "event")  # given with logging's extra={...}


class JsonFormatter(logging.Formatter):
    """One JSON object a line (LOG_FORMAT=json): time, level, message, and the LOG_FIELDS a call gave."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in LOG_FIELDS if getattr(record, name, None) is not None})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


LOG_LEVELS = ("info", "debug", "warning", "error", "critical")  # the first is the default


def configure_logging() -> None:
    """One line per event on stdout, as Railway's log view shows them: text, or JSON with LOG_FORMAT=json.

    An unknown LOG_FORMAT or LOG_LEVEL falls back to text or INFO here; Settings.from_env() then reports it and
    the process exits 1.
    """
    handler = logging.StreamHandler(sys.stdout)
    if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    level = os.environ.get("LOG_LEVEL", "").strip().lower()
    logging.basicConfig(handlers=[handler], level=(level if level in LOG_LEVELS else LOG_LEVELS[0]).upper())
