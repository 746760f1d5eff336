"""A definitions module with a misspelt keyword: loading it must fail in one line, not a traceback."""

from scheduling import ScheduleDefinition

schedules = [
    ScheduleDefinition("typo", "Typo", "", cronn="* * * * *"),
]
