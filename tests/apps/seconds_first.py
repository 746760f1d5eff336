"""Valid definitions with a 6-field cron written seconds first, which --check and the daemon warn about."""

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()
registry.job(lambda ctx: None, group="g", name="noop")

schedules = [
    ScheduleDefinition("every-ten-seconds", "Meant every 10 s", "", "*/10 * * * * *"),
    ScheduleDefinition("really-every-ten-seconds", "Every 10 s", "", "* * * * * */10"),
    ScheduleDefinition("nightly", "Nightly", "", "@daily", timezone="Europe/Paris"),
]
