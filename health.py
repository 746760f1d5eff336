"""Health checks shared by `schedule_daemon.py --health` and GET /admin/health.

The design documents' checkScheduleDaemonHealth, with their thresholds as defaults: a live schedule
daemon exists; no RUNNING instance's heartbeat is older than 2 minutes; no enabled schedule is
overdue beyond its tolerance; no lock is older than LOCK_TIMEOUT_MS; the queue holds at most 50 runs
and none has waited over an hour; and, when EXPECTED_DAEMONS / EXPECTED_WORKERS are set, no more
live instances of a type than expected (the documents' "ghost" check).

Beyond the documents, what a fault can leave stuck: a schedule is overdue whatever the reason (no
daemon, a stuck one, or a long run still holding it), a run RUNNING for longer than LOCK_TIMEOUT_MS
whose holder is not alive or (inline) no longer holds its schedule, queued runs whose dependencies can no longer complete. Ages are judged by
the database server's clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from db import Database
from settings import Settings


def check_health(db: Database, settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """{"healthy": bool, "problems": [one line each], "checks": {figures}}; `now` defaults to the database's clock."""
    if now is None:
        db.measure_clock()
        now = db.now()
    problems: list[str] = []
    max_age = timedelta(seconds=settings.health_max_heartbeat_age_s)
    lock_timeout = timedelta(milliseconds=settings.lock_timeout_ms)

    live: dict[str, int] = {}
    for worker in db.fetch_all("list_workers"):
        if worker["status"] != "RUNNING":
            continue
        age = now - worker["lastHeartbeatAt"]
        if age > max_age:
            problems.append(
                f"{worker['workerType']} {worker['id']} on {worker['hostname']}: last heartbeat "
                f"{age.total_seconds():.0f}s ago (more than {max_age.total_seconds():.0f}s)"
            )
        else:
            live[worker["workerType"]] = live.get(worker["workerType"], 0) + 1
    if not live.get("schedule_daemon"):
        problems.append("no live schedule daemon: start `python schedule_daemon.py` (SCHEDULE_DAEMON_ENABLED=true)")
    for worker_type, expected in (
        ("schedule_daemon", settings.expected_daemons),
        ("job_worker", settings.expected_workers),
    ):
        if expected is not None and live.get(worker_type, 0) > expected:
            problems.append(f"{live[worker_type]} live {worker_type} instances, expected {expected}: a ghost process?")
    if settings.execution_mode == "queue" and not live.get("job_worker"):
        problems.append("EXECUTION_MODE=queue but no live job worker: runs will wait forever")

    tolerance = timedelta(seconds=settings.health_overdue_tolerance_s)
    for schedule in db.fetch_all("list_schedules"):
        # nextRunAt is the earliest occurrence not started yet, whether or not a long run holds the schedule.
        if schedule["enabled"] and schedule["nextRunAt"] is not None and now - schedule["nextRunAt"] > tolerance:
            why = (
                f"; held by {schedule['lockedBy']} since {schedule['lockedAt'].isoformat()}, still running an "
                "earlier occurrence"
                if schedule["lockedAt"] is not None
                else ""
            )
            problems.append(
                f"schedule {schedule['id']} is overdue: due {schedule['nextRunAt'].isoformat()}, "
                f"more than {tolerance.total_seconds():.0f}s ago{why}"
            )
        if schedule["lockedAt"] is not None and now - schedule["lockedAt"] > lock_timeout:
            problems.append(
                f"schedule {schedule['id']} is locked by {schedule['lockedBy']} since "
                f"{schedule['lockedAt'].isoformat()}, longer than LOCK_TIMEOUT_MS"
            )

    # The run's own timeout (supervised execution, issue 10) belongs here beside LOCK_TIMEOUT_MS.
    for run in db.fetch_all("long_running_runs", started_before=now - lock_timeout):
        holder_alive = run["holderStatus"] == "RUNNING" and now - run["holderHeartbeatAt"] <= lock_timeout
        what = (
            f"run {run['id']} ({run['jobName']} of schedule {run['scheduleId']}) has been RUNNING since "
            f"{run['startedAt'].isoformat()}, longer than LOCK_TIMEOUT_MS"
        )
        if not holder_alive:
            problems.append(f"{what}, and its holder {run['workerId']} is not alive")
        elif run["queuedAt"] is None and run["scheduleLockedBy"] != run["workerId"]:
            # An inline run is in progress only while its process holds the schedule: a live holder without
            # the lock has let go of the occurrence (it could not store the outcome) and the run is stuck.
            problems.append(
                f"{what}, and its holder {run['workerId']} no longer holds the schedule (it "
                f"could not store the run's outcome)"
            )
    for run in db.fetch_all("stranded_queued_runs"):
        problems.append(
            f"run {run['id']} ({run['jobName']} of schedule {run['scheduleId']}) is QUEUED behind "
            "dependencies that can no longer complete (nothing of its occurrence is queued or running)"
        )

    queued = db.fetch_value("queue_depth", "queued")
    oldest = db.fetch_one("oldest_queued")
    oldest_age = (now - oldest["queuedAt"]).total_seconds() if oldest else 0.0
    if queued > settings.health_max_queued:
        problems.append(f"{queued} runs queued, more than {settings.health_max_queued}: workers are not keeping up")
    if oldest and oldest_age > settings.health_max_queue_age_s:
        problems.append(
            f"run {oldest['id']} has been queued for {oldest_age:.0f}s, more than {settings.health_max_queue_age_s}s"
        )
    return {
        "healthy": not problems,
        "problems": problems,
        "checks": {"liveInstances": live, "queued": queued, "oldestQueuedSeconds": round(oldest_age, 3)},
    }
