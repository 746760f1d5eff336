"""Queue mode with real processes: 3 daemons and 4 workers on one database for 30 s, one worker kill -9'd."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduling import App
from tests.conftest import ROOT, operator_sql, wait_for

ENV = {
    "SCHEDULES_MODULE": "tests.queue_app",
    "APP_ENV": "test",
    "EXECUTION_MODE": "queue",
    "HEARTBEAT_INTERVAL_MS": "500",
    "LOCK_TIMEOUT_MS": "3000",
    "SCHEDULE_POLL_INTERVAL_MS": "1000",
    "JOB_WORKER_POLL_INTERVAL_MS": "200",
}
STREAM_SECONDS = 30


@pytest.fixture
def processes(database_url, tmp_path):
    started: list[subprocess.Popen] = []
    marker = tmp_path / "marker.txt"
    marker.touch()

    def start(*args: str, **env: str) -> subprocess.Popen:
        log = open(tmp_path / f"process-{len(started)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "schedule_daemon.py"), *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": database_url,
                "TEST_MARKER_FILE": str(marker),
                **ENV,
                **env,
            },
        )
        started.append(process)
        return process

    start.marker = marker
    start.all = started
    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def ghost_counts(db):
    rows = operator_sql(
        db, "SELECT workerType, COUNT(*) FROM WorkerInstance WHERE status = 'RUNNING' GROUP BY workerType"
    )
    return {worker_type: count for worker_type, count in rows}


def test_three_daemons_and_four_workers_run_every_queued_run_once_and_lose_nothing(db, processes):
    daemons = [processes() for _ in range(3)]
    workers = [processes("--worker") for _ in range(4)]
    wait_for(lambda: db.fetch_one("get_schedule", id="stream"), 30, "the schedule to be synced")
    wait_for(lambda: ghost_counts(db) == {"schedule_daemon": 3, "job_worker": 4}, 30, "3 daemons and 4 workers")
    began = time.monotonic()
    now = datetime.now(timezone.utc)
    db.execute("enable_schedule", id="stream", next_run_at=now.replace(microsecond=0) + timedelta(seconds=1), now=now)

    # Mid-stream, kill -9 a worker that is running a job.
    wait_for(lambda: time.monotonic() - began > 10, 20, "10 s of stream", interval=0.5)
    victim_run = wait_for(
        lambda: db.fetch_all("list_runs", status="RUNNING", schedule_id="stream", job_name=None, before=None, limit=1),
        10,
        "a running job",
        interval=0.005,
    )[0]
    victim_pid = db.fetch_one("get_worker", id=victim_run["workerId"])["pid"]
    victim = next(p for p in workers if p.pid == victim_pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    wait_for(lambda: ghost_counts(db).get("job_worker") == 3, 30, "the dead worker to stop counting as RUNNING")

    wait_for(
        lambda: time.monotonic() - began > STREAM_SECONDS, STREAM_SECONDS + 10, "the rest of the stream", interval=0.5
    )
    db.execute("disable_schedule", id="stream", now=datetime.now(timezone.utc))
    for daemon in daemons:
        daemon.send_signal(signal.SIGTERM)
    assert all(d.wait(timeout=30) == 0 for d in daemons)
    wait_for(
        lambda: (
            not db.fetch_all("list_runs", status="QUEUED", schedule_id=None, job_name=None, before=None, limit=1)
            and not db.fetch_all("list_runs", status="RUNNING", schedule_id=None, job_name=None, before=None, limit=1)
        ),
        60,
        "the queue to drain",
    )
    elapsed = time.monotonic() - began

    runs = db.fetch_all("list_runs", status=None, schedule_id="stream", job_name=None, before=None, limit=100_000)
    occurrences = collections.defaultdict(list)
    for run in runs:
        occurrences[run["scheduledFor"]].append(run)
    assert len(occurrences) >= STREAM_SECONDS * 0.8, f"only {len(occurrences)} occurrences in {STREAM_SECONDS}s"

    # Each occurrence was queued once, and every one of its jobs completed in the end (retries covered the kill).
    for scheduled_for, batch_runs in occurrences.items():
        assert len({r["batchId"] for r in batch_runs}) == 1, f"occurrence {scheduled_for} queued twice"
        final = {}
        for run in sorted(batch_runs, key=lambda r: r["attempt"]):
            final[run["jobName"]] = run
        assert {name: r["status"] for name, r in final.items()} == {
            "q.extract": "COMPLETED",
            "q.transform": "COMPLETED",
            "q.report": "COMPLETED",
        }, scheduled_for
        assert final["q.transform"]["startedAt"] >= final["q.extract"]["completedAt"], "dependency order"

    # Every claimed run executed exactly once: one start line per run id, outside the database.
    lines = [line.split() for line in Path(processes.marker).read_text().splitlines()]
    starts = collections.Counter(int(line[0]) for line in lines if line[1] == "start")
    duplicates = {run_id: n for run_id, n in starts.items() if n > 1}
    assert duplicates == {}
    completed = {r["id"] for r in runs if r["status"] == "COMPLETED"}
    assert completed <= {int(line[0]) for line in lines if line[1] == "done"}
    # The killed worker's runs failed as "died" (and were retried): the one it was running, and any it had
    # claimed to start next.
    died = [r for r in runs if r["status"] == "FAILED"]
    assert victim_run["id"] in [r["id"] for r in died]
    assert all(r["workerId"] == victim_run["workerId"] and "died" in r["error"] for r in died), died
    assert all(r["status"] in ("COMPLETED", "FAILED") for r in runs)
    row = db.fetch_one("get_schedule", id="stream")
    assert row["runCount"] == len(occurrences) and row["failureCount"] == 0
    print(
        f"\n[{db.kind}] {len(runs)} runs in {len(occurrences)} occurrences over {elapsed:.1f}s, "
        f"{len(duplicates)} duplicates, 1 worker killed, {len(died)} run failed and retried"
    )


def test_a_worker_busy_with_a_slow_job_gives_back_the_runs_it_claimed_and_another_runs_them(db, processes, tmp_path):
    """A worker claims as many runs as it can start soon at the pace runs have been going (here: quick, so
    many); a slow job among them must not hold the rest: it gives back what it has not started."""
    from occurrence import enqueue_occurrence
    from runner import sync_definitions
    from tests.fair_app import registry, schedules

    hold = tmp_path / "hold"
    hold.touch()
    fair = {"SCHEDULES_MODULE": "tests.fair_app", "TEST_HOLD_FILE": str(hold), "LOCK_TIMEOUT_MS": "15000"}
    workers = [processes("--worker", **fair) for _ in range(2)]
    wait_for(lambda: ghost_counts(db).get("job_worker") == 2, 30, "2 workers")
    app = App({s.id: s for s in schedules}, registry, "test")
    sync_definitions(db, app, datetime.now(timezone.utc))
    with db.transaction():
        batch = enqueue_occurrence(
            db, app, schedules[0], datetime.now(timezone.utc), "MANUAL", datetime.now(timezone.utc)
        )

    def quick_runs():
        return [r for r in db.fetch_all("batch_runs", batch_id=batch) if r["jobName"] != "fair.slow"]

    # The slow job runs until we let it end: every quick run must complete meanwhile, the ones claimed by
    # the worker that is running the slow job too.
    wait_for(
        lambda: all(r["status"] == "COMPLETED" for r in quick_runs()),
        30,
        "every quick run to complete while the slow one runs",
    )
    [slow] = [r for r in db.fetch_all("batch_runs", batch_id=batch) if r["jobName"] == "fair.slow"]
    assert slow["status"] == "RUNNING"
    logs = "".join(Path(processes.marker).parent.joinpath(f"process-{n}.log").read_text() for n in range(2))
    assert "gave back" in logs, "the worker running the slow job held no quick run: the test showed nothing"
    hold.unlink()
    done = wait_for(
        lambda: (b := db.fetch_one("get_batch", id=batch))["completedAt"] and b, 60, "the occurrence to complete"
    )
    assert done["failed"] == 0
    lines = [line.split() for line in Path(processes.marker).read_text().splitlines()]
    assert sorted(collections.Counter(line[0] for line in lines).values()) == [1] * 91, "each run once"
    assert all(w.poll() is None for w in workers)
