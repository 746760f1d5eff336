"""The `maintenance` group: one real job that keeps the history tables from growing forever."""

import os
from datetime import timedelta

from jobs import JobContext, job
from settings import Settings

LOG_BATCH = 5000  # log lines deleted per statement: short write locks, even after a flood of output


@job(group="maintenance")
def prune_history(ctx: JobContext) -> None:
    """Delete finished runs (their JobLog lines go with them), stopped worker rows and sent alerts older than
    JOB_HISTORY_RETENTION_DAYS (default 30) days before this occurrence, then log lines older than
    JOB_LOG_RETENTION_DAYS (default 7)."""
    days = int(os.environ.get("JOB_HISTORY_RETENTION_DAYS", "30"))
    before = ctx.scheduled_for - timedelta(days=days)
    logs = ctx.db.execute("prune_logs", before=before)
    runs = ctx.db.execute("prune_runs", before=before)
    workers = ctx.db.execute("prune_workers", before=before)
    alerts = ctx.db.execute("prune_alerts", before=before)
    ctx.log(f"pruned {runs} runs, {logs} log lines, {workers} worker rows and {alerts} alerts older than {days} days")
    # Captured output is the bulk of the history: its lines go sooner than the runs they belong to.
    days = Settings.from_env().job_log_retention_days
    before = ctx.scheduled_for - timedelta(days=days)
    deleted = batch = ctx.db.execute("prune_log_lines", before=before, limit=LOG_BATCH)
    while batch == LOG_BATCH:
        batch = ctx.db.execute("prune_log_lines", before=before, limit=LOG_BATCH)
        deleted += batch
    ctx.log(f"pruned {deleted} log lines older than {days} days (JOB_LOG_RETENTION_DAYS)")
