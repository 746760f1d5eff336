"""The application the fault tests run (SCHEDULES_MODULE=tests.fault_app), steered by environment.

Schedule `fault` (cron TEST_CRON, every second by default) runs `fault.work` then `fault.after`.
`fault.work` appends "start <scheduledFor> <pid>" to TEST_MARKER_FILE, waits while TEST_HOLD_FILE
exists (the test's cue), writes a ctx.log line of TEST_LOG_BYTES bytes if set, raises an error of
TEST_ERROR_BYTES bytes if set, and appends "done <scheduledFor> <pid>". `fault.after` appends
"after <scheduledFor> <pid>". In queue mode `fault.after` depends on `fault.work`; TEST_OLD_CODE=1 is
a worker's older release, which has no `fault.work` (and an `fault.after` that depends on nothing).
TEST_CRON and TEST_POLICY set the schedule's cron and missed-run policy.
"""

import os
import time
from pathlib import Path

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()


def mark(ctx, what: str) -> None:
    with open(os.environ["TEST_MARKER_FILE"], "a") as marker:
        marker.write(f"{what} {ctx.scheduled_for.isoformat()} {os.getpid()}\n")


def work(ctx):
    mark(ctx, "start")
    hold = os.environ.get("TEST_HOLD_FILE")
    while hold and Path(hold).exists():
        time.sleep(0.02)
    if os.environ.get("TEST_LOG_BYTES"):
        ctx.log("L" * int(os.environ["TEST_LOG_BYTES"]))
    mark(ctx, "done")
    if os.environ.get("TEST_ERROR_BYTES"):
        raise RuntimeError("E" * int(os.environ["TEST_ERROR_BYTES"]))


def after(ctx):
    mark(ctx, "after")


if os.environ.get("TEST_OLD_CODE"):
    registry.job(group="fault", name="fault.after")(after)
else:
    registry.job(group="fault", name="fault.work")(work)
    registry.job(
        group="fault",
        name="fault.after",
        depends_on=["fault.work"] if os.environ.get("EXECUTION_MODE") == "queue" else [],
    )(after)

schedules = [
    ScheduleDefinition(
        id="fault",
        name="Fault",
        description="What the fault tests break",
        cron=os.environ.get("TEST_CRON", "* * * * * *"),
        timezone="UTC",
        execution_mode="GROUP",
        job_group="fault",
        missed_run_policy=os.environ.get("TEST_POLICY", "SKIP"),
    ),
]
