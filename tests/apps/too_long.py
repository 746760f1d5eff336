"""Names longer than their columns: MySQL refuses them where SQLite stores them, so load refuses them on both."""

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()
registry.job(group="g", name="g." + "j" * 99)(lambda ctx: None)  # 101 characters, JobRun.jobName holds 100
registry.job(group="g", name="g." + "k" * 98)(lambda ctx: None)  # 100: fits
schedules = [
    ScheduleDefinition("long-name", "N" * 201, "", "* * * * *"),  # JobSchedule.name holds 200
    ScheduleDefinition("fits", "N" * 200, "", "* * * * *"),
]
