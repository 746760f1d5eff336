"""A stand-in for supervisor.ChildPool for the tests of the daemon's and the worker's steps.

Those tests define their jobs as closures that record calls in the test's own memory, which a child
process cannot do; this runs them in the calling thread, with the same ctx and the same JobLog
lines. Supervision itself (children, timeouts, crashes, capture) is tested on real processes in
tests/test_supervisor.py and tests/test_supervised_processes.py.
"""

from __future__ import annotations

import time
import traceback
from datetime import datetime, timezone

from db import Database
from jobs import Job, JobContext
from records import JobCall, JobResult, RunStatus


class InProcessPool:
    def __init__(self, db: Database):
        self.db = db

    def run(self, job: Job, call: JobCall) -> JobResult:
        lines = []

        def emit(level: str, message: str) -> None:
            lines.append(
                {"run_id": call.run_id, "created_at": datetime.now(timezone.utc), "level": level, "message": message}
            )

        ctx = JobContext(
            call.run_id, call.job_name, call.schedule_id, call.scheduled_for, call.trigger, call.attempt, self.db, emit
        )
        started = time.monotonic()
        try:
            job.fn(ctx)
            status, error = RunStatus.COMPLETED, None
        except Exception:
            status, error = RunStatus.FAILED, traceback.format_exc()
        self.db.execute_many("insert_log", lines)
        return JobResult(status, error, int((time.monotonic() - started) * 1000))

    def warm(self) -> None:
        pass

    def expect(self, due_in: float) -> None:
        pass

    def end_runs_after_grace(self) -> None:
        pass

    def close(self) -> None:
        pass
