"""GET /metrics: the Prometheus text format, every figure read from the database at scrape time.

Because the figures come from the shared database (seven cheap queries per scrape), they are true
for the whole cluster whichever admin server answers, and a restart loses nothing. The counters are
JobSchedule's runCount and failureCount (occurrences), and the skipped occurrences recorded in the
history; pruning old history can make schedule_skipped_total go down, which Prometheus reads as a
counter reset.

    render(db, app, settings, now) -> (bytes, content type)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from db import Database
from scheduling import App
from settings import Settings

WORKER_TYPES = ("schedule_daemon", "job_worker")
WORKER_STATES = (
    "live",
    "stale",
    "stopped",
    "dead",
)  # live: RUNNING with a heartbeat younger than HEALTH_MAX_HEARTBEAT_AGE_S


def seconds(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class DatabaseCollector:
    """A prometheus_client collector whose collect() queries the database once per scrape."""

    def __init__(self, db: Database, app: App, settings: Settings, now: datetime):
        self.db, self.app, self.settings, self.now = db, app, settings, now

    def collect(self) -> Iterator[Metric]:
        rows = self.db.fetch_all("list_schedules")
        last_success = {r["scheduleId"]: r["completedAt"] for r in self.db.fetch_all("last_success_per_schedule")}
        last_duration = {r["scheduleId"]: r["durationMs"] for r in self.db.fetch_all("last_duration_per_schedule")}
        skipped = {r["scheduleId"]: r["skipped"] for r in self.db.fetch_all("skipped_per_schedule")}

        def family(kind: Any, name: str, doc: str) -> Any:
            return kind(name, doc, labels=["schedule"])

        runs = family(
            CounterMetricFamily, "schedule_runs", "Occurrences whose jobs all completed (JobSchedule.runCount)"
        )
        failures = family(
            CounterMetricFamily, "schedule_failures", "Occurrences with a failed job or a dead runner (failureCount)"
        )
        skips = family(CounterMetricFamily, "schedule_skipped", "Occurrences recorded as skipped in the history")
        enabled = family(GaugeMetricFamily, "schedule_enabled", "1 if the schedule is enabled")
        running = family(GaugeMetricFamily, "schedule_running", "1 while a process holds the schedule's lock")
        last_run = family(
            GaugeMetricFamily, "schedule_last_run_timestamp_seconds", "When its latest occurrence started"
        )
        success = family(
            GaugeMetricFamily, "schedule_last_success_timestamp_seconds", "When its latest completed run ended"
        )
        next_run = family(
            GaugeMetricFamily, "schedule_next_run_timestamp_seconds", "Its next occurrence (absent while disabled)"
        )
        duration = family(
            GaugeMetricFamily, "schedule_last_duration_seconds", "Duration of its latest finished job run"
        )
        period = family(
            GaugeMetricFamily, "schedule_period_seconds", "Time between its next two occurrences, for alerting rules"
        )
        for row in rows:
            label = [row["id"]]
            runs.add_metric(label, row["runCount"])
            failures.add_metric(label, row["failureCount"])
            skips.add_metric(label, skipped.get(row["id"], 0))
            enabled.add_metric(label, 1 if row["enabled"] else 0)
            running.add_metric(label, 1 if row["lockedAt"] is not None else 0)
            for metric, value in (
                (last_run, seconds(row["lastRunAt"])),
                (success, seconds(last_success.get(row["id"]))),
                (next_run, seconds(row["nextRunAt"])),
            ):
                if value is not None:
                    metric.add_metric(label, value)
            if last_duration.get(row["id"]) is not None:
                duration.add_metric(label, last_duration[row["id"]] / 1000)
            definition = self.app.schedules.get(row["id"])
            if definition is not None:
                first = definition.next_after(self.now)
                period.add_metric(label, (definition.next_after(first) - first).total_seconds())
        yield from (runs, failures, skips, enabled, running, last_run, success, next_run, duration, period)
        yield from self.workers()
        yield from self.queue()

    def workers(self) -> Iterator[Metric]:
        max_age = timedelta(seconds=self.settings.health_max_heartbeat_age_s)
        ages = GaugeMetricFamily(
            "schedule_worker_heartbeat_age_seconds",
            "Seconds since a RUNNING instance's last heartbeat",
            labels=["type", "worker"],
        )
        counts = {(t, s): 0 for t in WORKER_TYPES for s in WORKER_STATES}
        for row in self.db.fetch_all("list_workers"):
            age = self.now - row["lastHeartbeatAt"]
            if row["status"] == "RUNNING":
                ages.add_metric([row["workerType"], row["id"]], round(age.total_seconds(), 3))
                state = "live" if age <= max_age else "stale"
            else:
                state = row["status"].lower()
            counts[(row["workerType"], state)] = counts.get((row["workerType"], state), 0) + 1
        workers = GaugeMetricFamily(
            "schedule_workers", "Instances by type and state (live, stale, stopped, dead)", labels=["type", "status"]
        )
        for (worker_type, state), count in sorted(counts.items()):
            workers.add_metric([worker_type, state], count)
        yield ages
        yield workers

    def queue(self) -> Iterator[Metric]:
        oldest = self.db.fetch_one("oldest_queued")
        yield GaugeMetricFamily(
            "schedule_queue_depth",
            "Runs waiting for a job worker (queue mode)",
            value=self.db.fetch_value("queue_depth", "queued"),
        )
        yield GaugeMetricFamily(
            "schedule_queue_oldest_age_seconds",
            "How long the oldest queued run has waited",
            value=round((self.now - oldest["queuedAt"]).total_seconds(), 3) if oldest else 0,
        )


def render(db: Database, app: App, settings: Settings, now: datetime) -> tuple[bytes, str]:
    """The scrape's body and content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db, app, settings, now))
    return generate_latest(registry), CONTENT_TYPE_LATEST
