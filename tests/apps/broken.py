"""A definitions module with one mistake of each kind, for the validation tests."""

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()


@registry.job(group="work", name="work.a", depends_on=["work.missing"])
def a(ctx):
    pass


schedules = [
    ScheduleDefinition("bad-cron", "Bad cron", "", "61 * * * *"),
    ScheduleDefinition("bad-zone", "Bad zone", "", "* * * * *", timezone="Moon/Base"),
    ScheduleDefinition("twice", "Twice", "", "* * * * *"),
    ScheduleDefinition("twice", "Twice again", "", "* * * * *"),
    ScheduleDefinition("no-group", "No group", "", "* * * * *", execution_mode="GROUP"),
    ScheduleDefinition("empty-group", "Empty group", "", "* * * * *", execution_mode="GROUP", job_group="nobody"),
    ScheduleDefinition("bad-env", "Bad env", "", "* * * * *", environments=("prod",)),
    ScheduleDefinition("bad-policy", "Bad policy", "", "* * * * *", missed_run_policy="CATCH_UP_ALL"),
]
