"""A test application (SCHEDULES_MODULE=tests.sample_app) whose behaviour the tests steer by environment.

Its job `tick.record` appends "<schedule id> <scheduledFor> <pid>" to TEST_MARKER_FILE, outside the
database, so the tests count executions independently of the JobRun rows; then sleeps TEST_JOB_SECONDS.
"""

import os
import time

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()


@registry.job(group="tick", name="tick.record")
def record(ctx):
    with open(os.environ["TEST_MARKER_FILE"], "a") as marker:
        marker.write(f"{ctx.schedule_id} {ctx.scheduled_for.isoformat()} {os.getpid()}\n")
    ctx.log("recorded")
    time.sleep(float(os.environ.get("TEST_JOB_SECONDS", "0")))


schedules = [
    ScheduleDefinition(
        id="tick",
        name="Tick",
        description="Records each occurrence in a file",
        cron=os.environ.get("TEST_CRON", "* * * * * *"),
        timezone="UTC",
        execution_mode="GROUP",
        job_group="tick",
        missed_run_policy=os.environ.get("TEST_POLICY", "SKIP"),
    ),
]
