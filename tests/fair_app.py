"""A queue-mode test application (SCHEDULES_MODULE=tests.fair_app): one occurrence of 90 quick jobs with
a slow one among them (after the 60th), all independent, to show that a worker busy with the slow job
does not sit on quick runs it claimed: another worker runs them.

Each job appends "<run id> <job> <pid>" to TEST_MARKER_FILE when it ends. The slow one runs while
TEST_HOLD_FILE exists (60 s at most).
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
    deadline = time.monotonic() + 60
    while os.path.exists(os.environ["TEST_HOLD_FILE"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    quick(ctx)


for n in range(60):
    registry.job(group="fair", name=f"fair.quick-{n:02}")(quick)
registry.job(group="fair", name="fair.slow")(slow)
for n in range(60, 90):
    registry.job(group="fair", name=f"fair.quick-{n:02}")(quick)

# Never enabled: the test enqueues its occurrence.
schedules = [ScheduleDefinition("fair", "Fair", "quick jobs and a slow one", "0 0 1 1 * 0")]
