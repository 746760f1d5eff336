"""Jobs that depend on each other in a cycle."""

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()
registry.job(lambda ctx: None, group="g", name="x", depends_on=["y"])
registry.job(lambda ctx: None, group="g", name="y", depends_on=["x"])
schedules = [ScheduleDefinition("s", "S", "", "* * * * *")]
