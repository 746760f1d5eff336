"""Valid definitions with a 6-field cron written seconds first, which --check and the daemon warn about."""

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()
registry.job(group="g", name="noop")(lambda ctx: None)

schedules = [
    ScheduleDefinition("every-ten-seconds", "Meant every 10 s", "", "*/10 * * * * *"),
    ScheduleDefinition("really-every-ten-seconds", "Every 10 s", "", "* * * * * */10"),
    ScheduleDefinition("nightly", "Nightly", "", "@daily", timezone="Europe/Paris"),
]
