"""Log retention on both backends: maintenance.prune_history drops log lines past JOB_LOG_RETENTION_DAYS in batches."""

from datetime import datetime, timedelta, timezone

import jobs.maintenance as maintenance
from jobs import JobContext

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_log_lines_past_the_retention_go_in_batches_and_their_runs_stay(db, monkeypatch):
    monkeypatch.setenv("JOB_LOG_RETENTION_DAYS", "7")
    monkeypatch.setattr(maintenance, "LOG_BATCH", 2)  # five old lines: three statements
    run_id = db.insert(
        "insert_run",
        job_name="x",
        trigger="CRON",
        schedule_id=None,
        scheduled_for=NOW,
        batch_id=None,
        attempt=1,
        status="COMPLETED",
        worker_id="w",
        queued_at=None,
        started_at=NOW,
        completed_at=NOW,
        duration_ms=1,
        error=None,
        now=NOW - timedelta(days=8),
    )
    db.execute_many(
        "insert_log",
        [
            {"run_id": run_id, "created_at": NOW - timedelta(days=8, seconds=i), "level": "INFO", "message": f"old {i}"}
            for i in range(5)
        ]
        + [{"run_id": run_id, "created_at": NOW - timedelta(days=6), "level": "INFO", "message": "recent"}],
    )
    said = []
    ctx = JobContext(
        0, "maintenance.prune_history", None, NOW, "CRON", 1, db, lambda level, message: said.append(message)
    )
    maintenance.prune_history(ctx)
    assert [line["message"] for line in db.fetch_all("list_logs", run_id=run_id)] == ["recent"]
    assert db.fetch_one("get_run", id=run_id) is not None  # runs follow JOB_HISTORY_RETENTION_DAYS (30)
    assert said[-1] == "pruned 5 log lines older than 7 days (JOB_LOG_RETENTION_DAYS)"
