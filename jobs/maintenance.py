"""The `maintenance` group: one real job that keeps the history tables from growing forever."""

import os
from datetime import timedelta

from jobs import job


@job(group="maintenance")
def prune_history(ctx):
    """Delete finished runs (their JobLog lines go with them), stopped worker rows and sent alerts older than
    JOB_HISTORY_RETENTION_DAYS (default 30) days before this occurrence."""
    days = int(os.environ.get("JOB_HISTORY_RETENTION_DAYS", "30"))
    before = ctx.scheduled_for - timedelta(days=days)
    logs = ctx.db.execute("prune_logs", before=before)
    runs = ctx.db.execute("prune_runs", before=before)
    workers = ctx.db.execute("prune_workers", before=before)
    alerts = ctx.db.execute("prune_alerts", before=before)
    ctx.log(f"pruned {runs} runs, {logs} log lines, {workers} worker rows and {alerts} alerts older than {days} days")
