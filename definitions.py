"""The schedules of this application, versioned with the code.

The daemon copies them into JobSchedule at start-up, disabled; an admin enables them. Changing a cron
or time zone here reschedules the schedule on the next deploy; removing one keeps its row and history
but it never runs again. Check your edits with `python schedule_daemon.py --check`.

Point SCHEDULES_MODULE at another module with the same two names (`schedules`, and optionally a job
`registry`) to run your own application's schedules instead.
"""

import jobs.feed  # noqa: F401  (importing a jobs module registers its jobs)
import jobs.maintenance  # noqa: F401
import jobs.matching  # noqa: F401
from jobs import registry  # noqa: F401
from scheduling import ScheduleDefinition

schedules = [
    ScheduleDefinition(
        id="daily-full-sync",
        name="Daily Full Sync",
        description="Run all jobs once per day at 2am UTC",
        cron="0 2 * * *",
        timezone="UTC",
        execution_mode="ALL_JOBS",
    ),
    ScheduleDefinition(
        id="hourly-matching",
        name="Hourly Matching",
        description="Update match scores every hour",
        cron="0 * * * *",
        timezone="UTC",
        execution_mode="GROUP",
        job_group="matching",
    ),
    ScheduleDefinition(
        id="feed-refresh",
        name="Feed Refresh",
        description="Refresh user feeds every 15 minutes",
        cron="*/15 * * * *",
        timezone="UTC",
        execution_mode="GROUP",
        job_group="feed",
    ),
    ScheduleDefinition(
        id="dev-quick-test",
        name="Dev Quick Test",
        description="Run all jobs every 5 minutes (dev only)",
        cron="*/5 * * * *",
        timezone="UTC",
        execution_mode="ALL_JOBS",
        environments=("development",),  # filtered out in production
    ),
]
