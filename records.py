"""Typed values handed between the run path's modules: a run's status and what a job execution returned.

RunStatus's values are the status strings of the design documents and of the JobRun.status column.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from jobs import Job


class RunStatus(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class JobCall:
    """One execution of one job, as the child that runs it needs to know it (its ctx)."""

    run_id: int
    job_name: str
    schedule_id: str | None
    scheduled_for: datetime
    trigger: str
    attempt: int


@dataclass(frozen=True)
class JobResult:
    """How one execution ended; `error` says why when it did not complete."""

    status: RunStatus
    error: str | None
    duration_ms: int


@dataclass(frozen=True)
class LogLine:
    """A JobLog line: ctx.log(), a line of stdout or stderr, or a logging record of the job."""

    created_at: datetime
    level: str
    message: str


class JobPool(Protocol):
    """What runs a job's code for the run path: supervisor.ChildPool (tests of the steps use an in-process one)."""

    def run(self, job: Job, call: JobCall) -> JobResult: ...

    def warm(self) -> None: ...

    def expect(self, due_in: float) -> None: ...

    def end_runs_after_grace(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunRecord:
    """One job's run in an occurrence, as the occurrence's outcome reports it."""

    id: int
    job_name: str
    status: RunStatus
    error: str | None
