"""A test application for alerts and pings (SCHEDULES_MODULE=tests.alert_app), steered by environment.

Its one job `flaky.work` fails always (TEST_FAIL=always), never (never, the default), or on the
occurrences of odd seconds (odd), after sleeping TEST_JOB_SECONDS. The schedule pings TEST_PING_URL when that is set.
"""

import os
import time

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()


@registry.job(group="flaky", name="flaky.work")
def work(ctx):
    ctx.log(f"working on {ctx.scheduled_for.isoformat()}")
    time.sleep(float(os.environ.get("TEST_JOB_SECONDS", "0")))
    mode = os.environ.get("TEST_FAIL", "never")
    if mode == "always" or (mode == "odd" and ctx.scheduled_for.second % 2):
        raise RuntimeError(f"boom at {ctx.scheduled_for.isoformat()}")


schedules = [
    ScheduleDefinition(
        id="flaky",
        name="Flaky",
        description="Fails as TEST_FAIL says",
        cron=os.environ.get("TEST_CRON", "* * * * * *"),
        execution_mode="GROUP",
        job_group="flaky",
        ping_url=os.environ.get("TEST_PING_URL") or None,
    ),
]
