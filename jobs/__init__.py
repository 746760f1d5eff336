"""The job registry: what a job is, how it is declared, and the order jobs run in.

    from jobs import job

    @job(group="feed", depends_on=["matching.update_scores"])
    def refresh_feeds(ctx):
        ctx.log(f"refreshing feeds for {ctx.scheduled_for:%Y-%m-%d %H:%M}")

A job's name is `<module>.<function>` without the `jobs.` prefix (here `feed.refresh_feeds`) unless
`name=` is given. It receives a JobContext. Raising fails the run; the jobs that depend on it in the
same occurrence are then recorded SKIPPED. The modules of this package are example jobs for the
groups of the design documents, plus one real one (maintenance.prune_history).

An application may keep its own JobRegistry (tests do): its definitions module exposes it as
`registry`, next to `schedules`.
"""

from __future__ import annotations

import graphlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from errors import quoted

log = logging.getLogger("job")

JOB_NAME_MAX = 100  # JobRun.jobName is VARCHAR(100): MySQL refuses longer where SQLite would store it
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # JobLog.level holds one of these


@dataclass(frozen=True)
class Job:
    name: str
    fn: Callable[[JobContext], Any]
    group: str
    depends_on: tuple[str, ...] = ()
    retries: int = 0  # queue mode: how many times a failed run is queued again
    retry_backoff_s: float = 30.0  # queue mode: wait before the first retry, doubled for each next one
    timeout: float | None = None  # seconds before the run is killed; None: JOB_TIMEOUT_S; 0: never


@dataclass
class JobContext:
    """What a running job knows about itself. `ctx.log(...)` writes a JobLog line for this run.

    Inside a supervised child `emit` sends the line to the supervisor, which stores lines in batches
    and echoes them to its own log; `db` is the child's own Database.
    """

    run_id: int
    job_name: str
    schedule_id: str | None
    scheduled_for: datetime
    trigger: str
    attempt: int
    db: Any = field(repr=False)
    emit: Callable[[str, str], None] = field(repr=False)

    def log(self, message: str, level: str = "INFO") -> None:
        if level not in LOG_LEVELS:
            raise ValueError(f"job {self.job_name!r}: ctx.log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
        self.emit(level, str(message))


JobFunction = TypeVar("JobFunction", bound=Callable[..., Any])


class JobRegistry:
    """Jobs by name, in the order they were declared."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._problems: list[str] = []
        self._selections: dict[tuple[str, str | None], list[Job]] = {}  # jobs_for() results, per mode and group

    def job(
        self,
        *,
        group: str,
        name: str | None = None,
        depends_on: list[str] | tuple[str, ...] = (),
        retries: int = 0,
        retry_backoff_s: float = 30.0,
        timeout: float | None = None,
    ) -> Callable[[JobFunction], JobFunction]:
        """Decorator declaring a job; see the module docstring."""

        def register(fn: JobFunction) -> JobFunction:
            job_name = name or f"{fn.__module__.removeprefix('jobs.')}.{fn.__name__}"
            if job_name in self.jobs:
                self._problems.append(f"job {job_name!r}: declared twice")
            if not job_name or len(job_name) > JOB_NAME_MAX:
                self._problems.append(
                    f"job {quoted(job_name)}: field 'name': use 1 to {JOB_NAME_MAX} characters "
                    f"(this one has {len(job_name)})"
                )
            if not isinstance(retries, int) or retries < 0:
                self._problems.append(f"job {job_name!r}: field 'retries': must be a non-negative integer")
            if timeout is not None and (
                isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
            ):
                self._problems.append(f"job {job_name!r}: field 'timeout': must be a number of seconds >= 0 (0: none)")
            self.jobs[job_name] = Job(job_name, fn, group, tuple(depends_on), retries, float(retry_backoff_s), timeout)
            self._selections.clear()
            return fn

        return register

    @property
    def groups(self) -> set[str]:
        return {j.group for j in self.jobs.values()}

    def problems(self) -> list[str]:
        """One line per problem: duplicate names, unknown dependencies, dependency cycles."""
        problems = list(self._problems)
        for job in self.jobs.values():
            for dep in job.depends_on:
                if dep not in self.jobs:
                    problems.append(f"job {job.name!r}: field 'depends_on': unknown job {dep!r}")
        if not problems:
            try:
                self._order(self.jobs)
            except graphlib.CycleError as exc:
                problems.append("jobs depend on each other in a cycle: " + " -> ".join(exc.args[1]))
        return problems

    def jobs_for(self, execution_mode: str, job_group: str | None) -> list[Job]:
        """ALL_JOBS: every job. GROUP: the group's jobs and their transitive dependencies. In dependency order."""
        key = (execution_mode, job_group)
        if key not in self._selections:
            self._selections[key] = self._select(execution_mode, job_group)
        return self._selections[key]

    def _select(self, execution_mode: str, job_group: str | None) -> list[Job]:
        if execution_mode == "ALL_JOBS":
            return self._order(self.jobs)
        selected: dict[str, Job] = {}
        pending = [j.name for j in self.jobs.values() if j.group == job_group]
        while pending:
            name = pending.pop()
            if name not in selected:
                selected[name] = self.jobs[name]
                pending.extend(self.jobs[name].depends_on)
        return self._order({n: j for n, j in self.jobs.items() if n in selected})

    def _order(self, jobs: dict[str, Job]) -> list[Job]:
        sorter = graphlib.TopologicalSorter({name: job.depends_on for name, job in jobs.items()})
        return [jobs[name] for name in sorter.static_order()]


registry = JobRegistry()
job = registry.job
