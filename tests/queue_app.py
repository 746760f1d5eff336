"""A queue-mode test application (SCHEDULES_MODULE=tests.queue_app): extract -> transform, and report.

Each job appends "<run id> <job> <scheduledFor> <attempt> <start> <end> <pid>" to TEST_MARKER_FILE when
it finishes and "<run id> start ..." when it starts, so executions are counted outside the database.
"""

import os
import time

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()


def record(ctx):
    with open(os.environ["TEST_MARKER_FILE"], "a") as marker:
        marker.write(f"{ctx.run_id} start {ctx.job_name} {ctx.attempt} {os.getpid()}\n")
    started = time.time()
    time.sleep(float(os.environ.get("TEST_JOB_SECONDS", "0.05")))
    with open(os.environ["TEST_MARKER_FILE"], "a") as marker:
        marker.write(f"{ctx.run_id} done {ctx.job_name} {ctx.attempt} {os.getpid()} {started} {time.time()}\n")


registry.job(group="q", name="q.extract", retries=3, retry_backoff_s=0.2)(record)
registry.job(group="q", name="q.transform", depends_on=["q.extract"], retries=3, retry_backoff_s=0.2)(record)
registry.job(group="q", name="q.report", retries=3, retry_backoff_s=0.2)(record)

schedules = [
    ScheduleDefinition("stream", "Stream", "Three jobs every second", os.environ.get("TEST_CRON", "* * * * * *"))
]
