"""Schedule definitions: the ScheduleDefinition type, their validation, and loading an application.

An application is a module (SCHEDULES_MODULE, default `definitions`) with a list `schedules` of
ScheduleDefinition and, optionally, its own job `registry` (default: the `jobs` package's). load_app()
imports it, filters the schedules by environment and validates everything before any database is
touched, raising one DefinitionError that lists every problem with the schedule id and field.
"""

from __future__ import annotations

import importlib
import re
import traceback
from dataclasses import dataclass
from datetime import datetime

import cron
from errors import ConfigError, DefinitionError, quoted
from jobs import Job, JobRegistry
from jobs import registry as default_registry
from settings import url_problem

EXECUTION_MODES = ("ALL_JOBS", "GROUP")
MISSED_RUN_POLICIES = ("SKIP", "RUN_ONCE")
OVERLAP_POLICIES = ("BUFFER_ONE", "SKIP")
ENVIRONMENTS = ("development", "test", "staging", "production")
VALID_ID = re.compile(r"[\w.-]{1,50}")  # \w is str.isalnum() and '_'; one C call for each of thousands of ids
NAME_MAX = 200  # JobSchedule.name is VARCHAR(200): MySQL refuses longer where SQLite would store it


@dataclass(frozen=True)
class ScheduleDefinition:
    id: str  # database key; letters, digits, '-', '_' and '.', at most 50
    name: str
    description: str
    cron: str  # 5 fields, 6 with seconds last, or a nickname such as "@daily"
    timezone: str = "UTC"  # IANA name the cron is read in
    execution_mode: str = "ALL_JOBS"  # 'ALL_JOBS' | 'GROUP'
    job_group: str | None = None  # required for GROUP
    environments: tuple[str, ...] | None = None  # None: every environment
    missed_run_policy: str = "SKIP"  # 'SKIP' | 'RUN_ONCE'
    overlap_policy: str = "BUFFER_ONE"  # due while still running: 'BUFFER_ONE' runs it after, 'SKIP' records it skipped
    ping_url: str | None = None  # healthchecks-style: GET /start, (success), /fail per cron occurrence

    def next_after(self, after: datetime) -> datetime:
        return cron.next_after(self.cron, self.timezone, after)

    def latest_at_or_before(self, at: datetime) -> datetime:
        return cron.latest_at_or_before(self.cron, self.timezone, at)


@dataclass(frozen=True)
class App:
    """The validated schedules of this environment and the jobs they run."""

    schedules: dict[str, ScheduleDefinition]
    registry: JobRegistry
    environment: str

    def jobs_for(self, schedule: ScheduleDefinition) -> list[Job]:
        return self.registry.jobs_for(schedule.execution_mode, schedule.job_group)


def schedule_problems(schedules: list[ScheduleDefinition], registry: JobRegistry) -> list[str]:
    """Every problem in `schedules`, one line each, naming the schedule id and the field."""
    problems: list[str] = []
    seen: set[str] = set()
    groups = registry.groups
    for position, s in enumerate(schedules):
        if not isinstance(s, ScheduleDefinition):
            problems.append(f"schedules[{position}]: is a {type(s).__name__}, not a ScheduleDefinition")
            continue
        where = f"schedule {quoted(s.id)}"
        if not isinstance(s.id, str) or not VALID_ID.fullmatch(s.id):
            problems.append(f"{where}: field 'id': use 1 to 50 letters, digits, '-', '_' or '.'")
        if s.id in seen:
            problems.append(f"{where}: field 'id': defined twice")
        seen.add(s.id)
        if not isinstance(s.name, str) or not s.name.strip() or len(s.name) > NAME_MAX:
            problems.append(
                f"{where}: field 'name': use 1 to {NAME_MAX} characters"
                + (f" (this one has {len(s.name)})" if isinstance(s.name, str) and s.name.strip() else "")
            )
        for field_name, check in (("cron", cron.cron_problem), ("timezone", cron.zone_problem)):
            value = getattr(s, field_name)
            problem = check(value) if isinstance(value, str) else f"must be a string, got {type(value).__name__}"
            if problem is not None:
                problems.append(f"{where}: field {field_name!r}: {problem}")
        if s.execution_mode not in EXECUTION_MODES:
            problems.append(
                f"{where}: field 'execution_mode': {s.execution_mode!r} is not one of {', '.join(EXECUTION_MODES)}"
            )
        elif s.execution_mode == "GROUP" and not s.job_group:
            problems.append(f"{where}: field 'job_group': required when execution_mode is 'GROUP'")
        elif s.execution_mode == "GROUP" and s.job_group not in groups:
            problems.append(
                f"{where}: field 'job_group': no job belongs to group {s.job_group!r} "
                f"(groups: {', '.join(sorted(groups)) or 'none'})"
            )
        for env in s.environments or ():
            if env not in ENVIRONMENTS:
                problems.append(
                    f"{where}: field 'environments': unknown environment {env!r} (use {', '.join(ENVIRONMENTS)})"
                )
        if s.overlap_policy not in OVERLAP_POLICIES:
            problems.append(
                f"{where}: field 'overlap_policy': {s.overlap_policy!r} is not one of {', '.join(OVERLAP_POLICIES)}"
            )
        if s.missed_run_policy not in MISSED_RUN_POLICIES:
            problems.append(
                f"{where}: field 'missed_run_policy': {s.missed_run_policy!r} is not one of {', '.join(MISSED_RUN_POLICIES)}"
            )
        if s.ping_url is not None and (not isinstance(s.ping_url, str) or url_problem(s.ping_url)):
            problem = url_problem(s.ping_url) if isinstance(s.ping_url, str) else "is not a string"
            problems.append(f"{where}: field 'ping_url': {problem}")
    return problems


def schedule_warnings(schedules: list[ScheduleDefinition]) -> list[str]:
    """Valid definitions that are probably not what was meant, one line each, naming the schedule and field."""
    return [
        f"schedule {quoted(s.id)}: field 'cron': {warning}"
        for s in schedules
        if (warning := cron.seconds_last_warning(s.cron)) is not None
    ]


def where_raised(exc: Exception) -> str:
    """`exc` in one line with the file and line it came from (the innermost frame, or a syntax error's own)."""
    if isinstance(exc, SyntaxError):
        return f"{exc.msg} ({exc.filename}, line {exc.lineno})"
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {quoted(exc, 200)} ({frame.filename}, line {frame.lineno})"


def load_app(module_name: str, environment: str) -> App:
    """Import the definitions module, validate it and keep the schedules of `environment`."""
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"APP_ENV {environment!r} is not one of {', '.join(ENVIRONMENTS)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"SCHEDULES_MODULE {module_name!r} cannot be imported: {exc}") from exc
    except Exception as exc:  # a mistake in the definitions themselves: one line naming where, not a traceback
        raise ConfigError(f"SCHEDULES_MODULE {module_name!r} fails to import: {where_raised(exc)}") from exc
    schedules = getattr(module, "schedules", None)
    if not isinstance(schedules, (list, tuple)):
        raise ConfigError(f"SCHEDULES_MODULE {module_name!r} has no list named 'schedules'")
    registry = getattr(module, "registry", None)
    if not isinstance(registry, JobRegistry):
        registry = default_registry
    problems = registry.problems() + schedule_problems(list(schedules), registry)
    if problems:
        raise DefinitionError(problems)
    active = {s.id: s for s in schedules if s.environments is None or environment in s.environments}
    return App(active, registry, environment)
