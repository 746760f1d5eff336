"""A test application (SCHEDULES_MODULE=tests.prewarm_app) for pre-warming: one sparse schedule whose job
says when its process started.

Its job appends "<scheduledFor> <pid> <process start> <job start>" (the two starts as Unix times) to
TEST_MARKER_FILE, so the test can tell whether the child that ran an occurrence existed before the
occurrence was due.
"""

import os
import time
from pathlib import Path

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()


def process_started_at() -> float:
    """This process's start as a Unix time (Linux: /proc/self/stat's starttime against /proc/uptime, 10 ms)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


@registry.job(group="sparse", name="sparse.record")
def record(ctx):
    started = time.time()
    with open(os.environ["TEST_MARKER_FILE"], "a") as marker:
        marker.write(f"{ctx.scheduled_for.isoformat()} {os.getpid()} {process_started_at()} {started}\n")


schedules = [
    ScheduleDefinition(
        "sparse",
        "Sparse",
        "Stands for an hourly schedule: its child ends between occurrences",
        os.environ.get("TEST_CRON", "* * * * * */6"),
        execution_mode="GROUP",
        job_group="sparse",
    ),
]
