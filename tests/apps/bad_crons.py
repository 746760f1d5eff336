"""Cron expressions that must be refused at load, one per kind of mistake, for the validation tests."""

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()
registry.job(group="g", name="noop")(lambda ctx: None)

schedules = [
    ScheduleDefinition("feb-31", "Never", "", "0 0 31 2 *"),
    ScheduleDefinition("feb-30", "Never", "", "0 0 30 2 *"),
    ScheduleDefinition("random", "Random", "", "R 3 * * *"),
    ScheduleDefinition("hashed", "Hashed", "", "0 H * * *"),
    ScheduleDefinition("backwards", "Backwards", "", "0 22-2 * * *"),
    ScheduleDefinition("weekdays-backwards", "Backwards", "", "0 9 * * fri-mon"),
    ScheduleDefinition("second-61", "Out of range", "", "* * * * * 61"),
    ScheduleDefinition("long", "Long", "", "0 0 1 1 " + "9," * 500 + "9"),
    ScheduleDefinition("nickname", "Unknown nickname", "", "@reboot"),
]
