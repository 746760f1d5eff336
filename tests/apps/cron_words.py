"""Schedules whose cron the admin API describes: a nickname, and day fields combined each Vixie way."""

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()
registry.job(group="g", name="g.noop")(lambda ctx: None)
schedules = [
    ScheduleDefinition("nickname", "Nickname", "", "@daily"),
    ScheduleDefinition("odd-mondays", "Odd Mondays", "", "0 12 */2 * 1"),  # `*/2` starts with `*`: both must match
    ScheduleDefinition("fifteenth-or-monday", "15th or Monday", "", "0 12 15 * 1"),  # both restricted: either
]
