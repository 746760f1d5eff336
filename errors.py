"""The project's exceptions: one base class, a subclass per kind of thing that can go wrong.

Messages say what is wrong, where (schedule id, field, variable) and what to do about it.
"""


class ScheduleJobsError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(ScheduleJobsError):
    """An environment variable or DATABASE_URL is malformed, or a driver is missing."""


class DefinitionError(ScheduleJobsError):
    """definitions.py or the job registry is invalid; `problems` lists one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid schedule definitions:\n  " + "\n  ".join(problems))


class DatabaseUnavailable(ScheduleJobsError):
    """The database cannot be reached, or the connection dropped (a COMMIT in flight may or may not have landed)."""


class Conflict(ScheduleJobsError):
    """A write lost a race (duplicate key, or one of DatabaseBusy's); retrying the step is safe."""


class DatabaseBusy(Conflict):
    """Transient: SQLite busy/locked, MySQL lock wait timeout or deadlock. Nothing was written; retry."""


class DatabaseCannotWrite(ScheduleJobsError):
    """Transient: the database takes no writes for now (disk or table full, I/O error, read-only after a failover).

    Nothing was written; the same write succeeds once an operator frees space or the new primary takes
    writes, so it is retried with backoff. Not a Conflict: a loop that looks again at once would spin.
    """


class ValueRejected(ScheduleJobsError):
    """Permanent: the database refuses a value (too long, invalid); retrying the same write fails again."""


def quoted(value: object, limit: int = 60) -> str:
    """`value` quoted for a message, cut to about `limit` characters so that no input floods a log line."""
    text = str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
