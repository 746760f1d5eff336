"""GET /metrics parsed with prometheus_client's own parser and compared with the database; JSON log lines."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.admin_client import ADMIN_TOKEN, AdminServer
from tests.conftest import operator_sql, wait_for
from tests.receiver import Receiver
from tests.test_processes import Daemons

METRICS_TOKEN = "test-metrics-token-9876543210"


@pytest.fixture
def admin(database_url):
    server = AdminServer(database_url, METRICS_TOKEN=METRICS_TOKEN)
    yield server
    server.close()


def now() -> datetime:
    return datetime.now(timezone.utc)


def scrape(admin: AdminServer, token: str = METRICS_TOKEN) -> dict[tuple[str, frozenset], float]:
    response = admin.request("GET", "/metrics", token=token)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.raw.decode())
        for s in family.samples
    }


def run_row(schedule_id, status, scheduled_for, completed_at=None, duration_ms=None, job_name="feed.refresh_feeds"):
    return {
        "job_name": job_name,
        "trigger": "CRON",
        "schedule_id": schedule_id,
        "scheduled_for": scheduled_for,
        "batch_id": None,
        "attempt": 1,
        "status": status,
        "worker_id": None,
        "queued_at": None,
        "started_at": completed_at,
        "completed_at": completed_at,
        "duration_ms": duration_ms,
        "error": None,
        "now": completed_at or scheduled_for,
    }


def test_metrics_need_a_token_and_match_the_database(admin):
    db, at = admin.db, now()
    assert admin.request("GET", "/metrics", token=None).status == 401
    assert admin.request("GET", "/metrics", token="wrong").status == 401
    assert admin.request("PATCH", "/admin/schedules/feed-refresh", {"enabled": True}).status == 200
    success_at, failure_at = at - timedelta(seconds=90), at - timedelta(seconds=30)
    db.insert("insert_run", **run_row("feed-refresh", "COMPLETED", success_at, success_at, 1500))
    db.insert("insert_run", **run_row("feed-refresh", "FAILED", failure_at, failure_at, 250))
    for minutes in (1, 2):
        db.insert("insert_run", **run_row("feed-refresh", "SKIPPED", at - timedelta(hours=minutes), job_name="*"))
    db.execute("count_occurrence", id="feed-refresh", succeeded=1, failed=0, now=at)
    db.execute("count_occurrence", id="feed-refresh", succeeded=0, failed=1, now=at)
    db.execute("count_occurrence", id="hourly-matching", succeeded=1, failed=0, now=at)
    db.insert("register_worker", id="d-live", worker_type="schedule_daemon", hostname="h", pid=1, now=at)
    db.insert(
        "register_worker",
        id="d-stale",
        worker_type="schedule_daemon",
        hostname="h",
        pid=2,
        now=at - timedelta(seconds=300),
    )
    db.insert("register_worker", id="w-stopped", worker_type="job_worker", hostname="h", pid=3, now=at)
    db.execute("stop_worker", id="w-stopped", now=at)
    db.insert(
        "insert_queued_run",
        job_name="matching.update_match_scores",
        trigger="CRON",
        schedule_id="hourly-matching",
        scheduled_for=at,
        batch_id=None,
        attempt=1,
        now=at - timedelta(seconds=42),
        available_at=at,
        blocked_by=0,
    )

    metrics = scrape(admin)
    assert set(scrape(admin, ADMIN_TOKEN)) == set(metrics)  # the admin token works too (ages move: compare the series)

    def value(name: str, **labels: str) -> float | None:
        return metrics.get((name, frozenset(labels.items())))

    # The database, read by the operator's own SQL: the figures the scrape must agree with.
    for schedule_id, run_count, failure_count, enabled in operator_sql(
        db, "SELECT id, runCount, failureCount, enabled FROM JobSchedule"
    ):
        assert value("schedule_runs_total", schedule=schedule_id) == run_count
        assert value("schedule_failures_total", schedule=schedule_id) == failure_count
        assert value("schedule_enabled", schedule=schedule_id) == (1 if enabled else 0)
        assert value("schedule_running", schedule=schedule_id) == 0
    [(skips,)] = operator_sql(
        db, "SELECT COUNT(*) FROM JobRun WHERE scheduleId = 'feed-refresh' AND status = 'SKIPPED'"
    )
    assert value("schedule_skipped_total", schedule="feed-refresh") == skips == 2
    assert value("schedule_skipped_total", schedule="daily-full-sync") == 0
    assert (
        value("schedule_runs_total", schedule="feed-refresh") == 1
        and value("schedule_failures_total", schedule="feed-refresh") == 1
    )
    assert value("schedule_last_success_timestamp_seconds", schedule="feed-refresh") == pytest.approx(
        success_at.timestamp(), abs=0.002
    )
    assert value("schedule_last_duration_seconds", schedule="feed-refresh") == 0.25
    next_run = db.fetch_one("get_schedule", id="feed-refresh")["nextRunAt"]
    assert value("schedule_next_run_timestamp_seconds", schedule="feed-refresh") == pytest.approx(next_run.timestamp())
    assert value("schedule_next_run_timestamp_seconds", schedule="daily-full-sync") is None, "disabled: no next run"
    assert value("schedule_period_seconds", schedule="feed-refresh") == 900
    assert value("schedule_workers", type="schedule_daemon", status="live") == 1
    assert value("schedule_workers", type="schedule_daemon", status="stale") == 1
    assert value("schedule_workers", type="job_worker", status="stopped") == 1
    assert value("schedule_workers", type="job_worker", status="live") == 0
    assert 0 <= value("schedule_worker_heartbeat_age_seconds", type="schedule_daemon", worker="d-live") < 30
    assert 300 <= value("schedule_worker_heartbeat_age_seconds", type="schedule_daemon", worker="d-stale") < 330
    assert value("schedule_worker_heartbeat_age_seconds", type="job_worker", worker="w-stopped") is None
    [(queued,)] = operator_sql(db, "SELECT COUNT(*) FROM JobRun WHERE status = 'QUEUED'")
    assert value("schedule_queue_depth") == queued == 1
    assert 42 <= value("schedule_queue_oldest_age_seconds") < 72


def test_json_logs_are_one_object_a_line_with_the_run_fields(db, database_url, tmp_path):
    from scheduling import ScheduleDefinition

    receiver, daemons = Receiver(), Daemons(database_url, tmp_path)
    try:
        daemon = daemons.start(
            LOG_FORMAT="json",
            SCHEDULES_MODULE="tests.alert_app",
            TEST_FAIL="always",
            ALERT_WEBHOOK_URL=receiver.url + "/hook",
        )
        wait_for(lambda: db.fetch_one("get_schedule", id="flaky"), 30, "the daemon to sync")
        db.execute(
            "enable_schedule",
            id="flaky",
            now=now(),
            next_run_at=ScheduleDefinition("flaky", "", "", "* * * * * *").next_after(now()),
        )
        wait_for(lambda: receiver.alerts("run_failed"), 30, "a failed run's alert")
    finally:
        daemons.stop_all()
        receiver.close()
    lines = [json.loads(line) for line in daemons.log_of(daemon).splitlines() if line.strip()]
    assert len(lines) > 10
    for line in lines:
        assert {"time", "level", "message"} <= set(line)
        assert datetime.fromisoformat(line["time"]).tzinfo is not None
    failed = [line for line in lines if line["level"] == "ERROR" and line.get("jobName") == "flaky.work"]
    assert failed and failed[0]["scheduleId"] == "flaky" and isinstance(failed[0]["runId"], int)
    assert "FAILED flaky.work" in failed[0]["message"]
    alert = next(line for line in lines if line.get("event") == "run_failed")
    assert alert["runId"] == failed[0]["runId"]
    assert any(line["message"].startswith("[daemon] Schedule daemon registered") for line in lines)
