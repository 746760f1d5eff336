"""Jobs that depend on each other in a cycle."""

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()
registry.job(group="g", name="x", depends_on=["y"])(lambda ctx: None)
registry.job(group="g", name="y", depends_on=["x"])(lambda ctx: None)
schedules = [ScheduleDefinition("s", "S", "", "* * * * *")]
