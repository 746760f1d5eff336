"""The benchmarks' application (SCHEDULES_MODULE=bench.bench_app): BENCH_SCHEDULES schedules of one no-op job.

BENCH_CRON is the cron of every schedule, or `spread` for one daily time per schedule (minute i % 60,
hour i // 60 % 24). With BENCH_MARKER set, each run appends "<run id> <schedule> <scheduledFor> <pid>".
With BENCH_WIDE_JOBS=n, one more schedule, `bench-wide`, runs n independent no-op jobs per occurrence.
"""

import os

from jobs import JobRegistry
from scheduling import ScheduleDefinition

COUNT = int(os.environ.get("BENCH_SCHEDULES", "20"))
CRON = os.environ.get("BENCH_CRON", "* * * * * *")
MARKER = os.environ.get("BENCH_MARKER")
WIDE_JOBS = int(os.environ.get("BENCH_WIDE_JOBS", "0"))

registry = JobRegistry()


@registry.job(group="bench", name="bench.noop")
def noop(ctx):
    if MARKER:
        with open(MARKER, "a") as marker:
            marker.write(f"{ctx.run_id} {ctx.schedule_id} {ctx.scheduled_for.isoformat()} {os.getpid()}\n")


for n in range(WIDE_JOBS):
    registry.job(group="wide", name=f"bench.wide-{n}")(noop)


schedules = [
    ScheduleDefinition(
        f"bench-{i}",
        f"Bench {i}",
        "no-op",
        CRON if CRON != "spread" else f"{i % 60} {i // 60 % 24} * * *",
        execution_mode="GROUP",
        job_group="bench",
    )
    for i in range(COUNT)
]
if WIDE_JOBS:
    schedules.append(
        ScheduleDefinition(
            "bench-wide", "Bench wide", "no-op jobs side by side", CRON, execution_mode="GROUP", job_group="wide"
        )
    )
