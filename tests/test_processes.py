"""Real daemon processes against one database: exactly once, kill -9, SIGTERM, downtime, a server restart.

Each daemon runs tests/sample_app.py, whose job appends "<schedule> <scheduledFor> <pid>" to a marker
file outside the database, so executions are counted independently of the JobRun rows.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import ROOT, operator_sql, wait_for

FAST = {"HEARTBEAT_INTERVAL_MS": "500", "LOCK_TIMEOUT_MS": "3000", "SCHEDULE_POLL_INTERVAL_MS": "1000"}


class Daemons:
    """Starts schedule_daemon.py processes (daemons, or `--worker` with that argument) on one database and
    stops them all at the end. A subclass names another test application and its settings."""

    app = "tests.sample_app"
    settings = FAST

    def __init__(self, database_url: str, tmp_path: Path):
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.marker = tmp_path / "marker.txt"
        self.marker.touch()
        self.processes: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        """The environment every daemon of the group starts with."""
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.database_url,
            "SCHEDULES_MODULE": self.app,
            "APP_ENV": "test",
            "TEST_MARKER_FILE": str(self.marker),
            **self.settings,
        }

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"process-{len(self.processes)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "schedule_daemon.py"), *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env(), **env},
        )
        process.log_path = log.name
        self.processes.append(process)
        return process

    def executions(self) -> list[tuple[str, str, str]]:
        return [tuple(line.split()) for line in self.marker.read_text().splitlines()]

    def log_of(self, process: subprocess.Popen) -> str:
        return Path(process.log_path).read_text()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def daemons(database_url, tmp_path):
    group = Daemons(database_url, tmp_path)
    yield group
    group.stop_all()


def now() -> datetime:
    return datetime.now(timezone.utc)


def wait_for_schedule_row(db, schedule_id="tick"):
    return wait_for(lambda: db.fetch_one("get_schedule", id=schedule_id), 30, f"the daemon to sync {schedule_id!r}")


def enable_now(db, schedule, schedule_id="tick"):
    """What the admin's enable does: next occurrence from now."""
    db.execute("enable_schedule", id=schedule_id, next_run_at=schedule.next_after(now()), now=now())


def tick_schedule(cron="* * * * * *"):
    from scheduling import ScheduleDefinition

    return ScheduleDefinition("tick", "Tick", "", cron)


def test_three_daemons_run_each_every_second_occurrence_exactly_once(db, daemons):
    for _ in range(3):
        daemons.start()
    wait_for_schedule_row(db)
    wait_for(
        lambda: len(db.fetch_all("running_workers", worker_type="schedule_daemon")) == 3, 30, "3 daemons registered"
    )
    started = now()
    enable_now(db, tick_schedule())
    wait_for(lambda: now() - started > timedelta(seconds=22), 30, "22 seconds of firing", interval=0.5)
    daemons.stop_all()
    assert all(p.returncode == 0 for p in daemons.processes), [daemons.log_of(p)[-2000:] for p in daemons.processes]

    executions = daemons.executions()
    per_occurrence = collections.Counter(occurrence for _, occurrence, _ in executions)
    duplicates = {occ: n for occ, n in per_occurrence.items() if n > 1}
    assert duplicates == {}, f"occurrences run more than once: {duplicates}"
    assert len(per_occurrence) >= 18, f"only {len(per_occurrence)} of ~22 occurrences ran"
    assert len({pid for _, _, pid in executions}) >= 2, "the work should be shared between the daemons"
    recorded = [
        r
        for r in db.fetch_all(
            "list_runs", status=None, schedule_id="tick", job_name="tick.record", before=None, limit=10_000
        )
    ]
    assert sorted(r["scheduledFor"].isoformat() for r in recorded) == sorted(per_occurrence)
    assert all(r["status"] == "COMPLETED" for r in recorded)
    assert db.fetch_all("running_workers", worker_type="schedule_daemon") == []


def test_kill_9_mid_run_frees_the_lock_fails_the_run_and_the_schedule_runs_again(db, daemons):
    victim = daemons.start(TEST_JOB_SECONDS="60", TEST_CRON="* * * * * */3")
    wait_for_schedule_row(db)
    enable_now(db, tick_schedule("* * * * * */3"))
    wait_for(lambda: daemons.executions(), 30, "the victim to start its long job")
    locked = db.fetch_one("get_schedule", id="tick")
    assert locked["lockedBy"] is not None
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    rescuer = daemons.start(TEST_CRON="* * * * * */3")  # its jobs are quick
    wait_for(lambda: len(daemons.executions()) >= 2, 30, "the schedule to run again under the rescuer")
    orphan = db.fetch_all("list_runs", status="FAILED", schedule_id="tick", job_name=None, before=None, limit=10)
    assert len(orphan) == 1 and "died" in orphan[0]["error"]
    first, second = daemons.executions()[:2]
    assert second[1] > first[1], "the next run is a later occurrence, not the interrupted one again"
    # The lock was freed only after its lease expired (LOCK_TIMEOUT_MS=3000), not earlier.
    rerun = [
        r
        for r in db.fetch_all(
            "list_runs", status=None, schedule_id="tick", job_name="tick.record", before=None, limit=10
        )
        if r["id"] != orphan[0]["id"]
    ]
    assert min(r["startedAt"] for r in rerun) >= locked["lockedAt"] + timedelta(seconds=3)
    assert rescuer.poll() is None, "the rescuer keeps running"
    assert db.fetch_one("get_worker", id=locked["lockedBy"])["status"] == "DEAD"


def test_sigterm_finishes_the_job_in_hand_releases_and_marks_the_daemon_stopped(db, daemons):
    daemon = daemons.start(TEST_JOB_SECONDS="2")
    wait_for_schedule_row(db)
    enable_now(db, tick_schedule())
    wait_for(lambda: daemons.executions(), 30, "a job to start")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    [run] = db.fetch_all("list_runs", status=None, schedule_id="tick", job_name="tick.record", before=None, limit=10)
    assert run["status"] == "COMPLETED" and run["durationMs"] >= 2000
    row = db.fetch_one("get_schedule", id="tick")
    assert row["lockedAt"] is None and row["lockedBy"] is None and row["runCount"] == 1
    workers = db.fetch_all("list_workers")
    assert [w["status"] for w in workers] == ["STOPPED"]


def test_occurrences_missed_while_no_daemon_ran_are_skipped_not_replayed(db, daemons):
    at = now()
    cron = f"{(at.minute + 30) % 60} * * * *"  # hourly, the latest occurrence 30 minutes ago
    first = daemons.start(TEST_CRON=cron)
    wait_for_schedule_row(db)
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    # The schedule was enabled and due three hours ago; no daemon ran since.
    db.execute("enable_schedule", id="tick", next_run_at=at - timedelta(hours=3), now=at)
    daemons.start(TEST_CRON=cron)
    skipped = wait_for(
        lambda: db.fetch_all("list_runs", status="SKIPPED", schedule_id="tick", job_name="*", before=None, limit=10),
        30,
        "the skip to be recorded",
    )
    assert "no schedule daemon was running" in skipped[0]["error"]
    assert daemons.executions() == []
    assert db.fetch_one("get_schedule", id="tick")["nextRunAt"] > now()


def test_enabling_by_sql_never_fires_a_stale_run(db, daemons):
    daemons.start()
    wait_for_schedule_row(db)
    wait_for(lambda: now().microsecond < 200_000, 2, "the start of a second")
    enabled_at = now()
    operator_sql(db, "UPDATE JobSchedule SET enabled = true WHERE id = 'tick'")  # the README's statement
    wait_for(lambda: len(daemons.executions()) >= 2, 30, "the first runs")
    assert all(datetime.fromisoformat(occurrence) > enabled_at for _, occurrence, _ in daemons.executions())


def test_a_mariadb_restart_under_a_running_daemon_is_survived_without_duplicates(db, daemons, mariadb_server):
    if db.kind != "mysql":
        pytest.skip("restarts the MariaDB server")
    if mariadb_server is None:
        pytest.skip("the server in TEST_MYSQL_URL is not ours to restart")
    daemon = daemons.start()
    wait_for_schedule_row(db)
    enable_now(db, tick_schedule())
    wait_for(lambda: len(daemons.executions()) >= 3, 30, "runs before the restart")
    mariadb_server.restart()
    restarted_at = now()
    wait_for(
        lambda: any(
            datetime.fromisoformat(o) > restarted_at + timedelta(seconds=2) for _, o, _ in daemons.executions()
        ),
        60,
        "runs after the restart",
    )
    assert daemon.poll() is None, daemons.log_of(daemon)[-3000:]
    per_occurrence = collections.Counter(o for _, o, _ in daemons.executions())
    assert max(per_occurrence.values()) == 1
    assert "database error" in daemons.log_of(daemon) or "failed" in daemons.log_of(daemon)
