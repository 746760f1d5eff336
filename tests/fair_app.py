"""A queue-mode test application (SCHEDULES_MODULE=tests.fair_app): one occurrence of 90 quick jobs with
a slow one among them (after the 60th), all independent, to show that a worker busy with the slow job
does not sit on quick runs it claimed: another worker runs them.

Each job appends "<run id> <job> <pid>" to TEST_MARKER_FILE when it ends.
"""

import os
import time

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()


def quick(ctx):
    with open(os.environ["TEST_MARKER_FILE"], "a") as marker:
        marker.write(f"{ctx.run_id} {ctx.job_name} {os.getpid()}\n")


def slow(ctx):
    time.sleep(float(os.environ.get("TEST_SLOW_SECONDS", "4")))
    quick(ctx)


for n in range(60):
    registry.job(group="fair", name=f"fair.quick-{n:02}")(quick)
registry.job(group="fair", name="fair.slow")(slow)
for n in range(60, 90):
    registry.job(group="fair", name=f"fair.quick-{n:02}")(quick)

# Never enabled: the test enqueues its occurrence.
schedules = [ScheduleDefinition("fair", "Fair", "quick jobs and a slow one", "0 0 1 1 * 0")]
