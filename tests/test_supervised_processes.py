"""Supervision seen from outside: real daemon processes running tests/supervised_app.py on both backends.

A hung job times out while another schedule keeps its times; a segfault leaves the daemon running;
overlap policy SKIP against BUFFER_ONE; SIGTERM with a job running past SHUTDOWN_GRACE_S; a manual
run (`schedule_daemon.py --run`) holding the lock across an occurrence.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from runner import sync_definitions
from scheduling import App, ScheduleDefinition
from tests.conftest import ROOT, wait_for
from tests.test_processes import Daemons

APP = {"SCHEDULES_MODULE": "tests.supervised_app"}


@pytest.fixture
def daemons(database_url, tmp_path):
    group = Daemons(database_url, tmp_path)
    yield group
    group.stop_all()


def now() -> datetime:
    return datetime.now(timezone.utc)


def enable(db, schedule_id: str, cron: str = "* * * * * *") -> None:
    wait_for(lambda: db.fetch_one("get_schedule", id=schedule_id), 30, f"the daemon to sync {schedule_id!r}")
    definition = ScheduleDefinition(schedule_id, schedule_id, "", cron)
    db.execute("enable_schedule", id=schedule_id, next_run_at=definition.next_after(now()), now=now())


def runs(db, schedule_id: str, job_name: str | None = None) -> list[dict]:
    rows = db.fetch_all("list_runs", status=None, schedule_id=schedule_id, job_name=job_name, before=None, limit=10_000)
    return sorted(rows, key=lambda r: r["id"])


def test_a_hung_job_times_out_the_next_occurrence_runs_and_another_schedule_keeps_its_times(db, daemons):
    daemons.start(**APP, JOB_TIMEOUT_S="2", JOB_KILL_GRACE_S="1", TEST_JOB_SECONDS="600")
    enable(db, "steer")
    enable(db, "beat")
    timed_out = wait_for(
        lambda: [r for r in runs(db, "steer", "steer.run") if r["status"] == "FAILED"][2:] or None,
        40,
        "three timed-out runs of the hung schedule",
    )
    assert all("timed out after 2 s" in r["error"] for r in timed_out)
    beats = [r for r in runs(db, "beat", "beat.run") if r["status"] == "COMPLETED"]
    seconds = sorted(r["scheduledFor"] for r in beats)
    assert len(seconds) >= 5
    assert all(b - a == timedelta(seconds=1) for a, b in zip(seconds, seconds[1:])), "beat missed an occurrence"
    assert max((r["startedAt"] - r["scheduledFor"]).total_seconds() for r in beats) < 1.0


def test_a_segfaulting_job_fails_its_run_and_the_daemon_runs_the_next_occurrence(db, daemons):
    daemon = daemons.start(**APP, TEST_STEER="segfault")
    enable(db, "steer")
    failed = wait_for(
        lambda: [r for r in runs(db, "steer", "steer.run") if r["status"] == "FAILED"][2:] or None,
        30,
        "three failed runs",
    )
    assert all("died of signal SIGSEGV" in r["error"] for r in failed)
    assert daemon.poll() is None
    logs = db.fetch_all("list_logs", run_id=failed[0]["id"])
    assert [line["message"] for line in logs] == ["steer steer printing"]  # its stdout, captured before the crash


@pytest.mark.parametrize("policy", ["SKIP", "BUFFER_ONE"])
def test_overlap_policy_skip_records_the_occurrence_buffer_one_runs_it_right_after(db, daemons, policy):
    daemons.start(**APP, TEST_OVERLAP=policy, TEST_JOB_SECONDS="2.5")
    enable(db, "steer")
    wait_for(
        lambda: len([r for r in runs(db, "steer", "steer.run") if r["status"] == "COMPLETED"]) >= 3,
        40,
        "three completed runs",
    )
    rows = runs(db, "steer")
    skipped = [r for r in rows if r["jobName"] == "*" and "previous run still running" in (r["error"] or "")]
    done = [r for r in rows if r["jobName"] == "steer.run" and r["status"] == "COMPLETED"]
    gaps = [(b["startedAt"] - a["completedAt"]).total_seconds() for a, b in zip(done, done[1:])]
    if policy == "SKIP":
        assert skipped, "an occurrence due while the job ran should be recorded skipped"
        assert all(gap >= 0 for gap in gaps)
    else:
        assert skipped == []
        assert all(0 <= gap < 1.5 for gap in gaps), f"the buffered occurrence should start right after: {gaps}"


def test_sigterm_past_the_grace_interrupts_the_run_releases_the_lock_and_stops(db, daemons):
    daemon = daemons.start(**APP, SHUTDOWN_GRACE_S="1", JOB_KILL_GRACE_S="1", TEST_JOB_SECONDS="600")
    enable(db, "steer")
    wait_for(lambda: [r for r in runs(db, "steer", "steer.run") if r["status"] == "RUNNING"], 30, "the job to start")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
    interrupted = [r for r in runs(db, "steer", "steer.run") if r["status"] == "FAILED"]
    assert len(interrupted) == 1 and interrupted[0]["error"].startswith("interrupted: shutting down")
    assert [r for r in runs(db, "steer") if r["status"] == "RUNNING"] == []
    assert db.fetch_one("get_schedule", id="steer")["lockedAt"] is None
    assert db.fetch_all("running_workers", worker_type="schedule_daemon") == []


def test_an_occurrence_due_while_a_manual_run_holds_the_lock_starts_right_after_it(db, daemons, database_url):
    # Enabled before the daemon starts: with a one-minute poll it would notice an enable by SQL late.
    steer = ScheduleDefinition("steer", "Steer", "", "* * * * * */4", execution_mode="GROUP", job_group="steer")
    sync_definitions(db, App({"steer": steer}, None, "test"), now())
    enable(db, "steer", steer.cron)
    daemons.start(**APP, SCHEDULE_POLL_INTERVAL_MS="60000", TEST_CRON=steer.cron)
    first = wait_for(lambda: runs(db, "steer", "steer.run"), 30, "a first cron run")[0]
    wait_for(lambda: runs(db, "steer", "steer.run")[0]["status"] == "COMPLETED", 10, "the first run to end")
    manual = subprocess.run(
        [sys.executable, str(ROOT / "schedule_daemon.py"), "--run", "steer"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**daemons.env(), **APP, "TEST_JOB_SECONDS": "5", "TEST_CRON": steer.cron},
    )
    assert manual.returncode == 0, manual.stderr + manual.stdout
    assert "steer.run: COMPLETED" in manual.stdout and "INFO steer steer printing" in manual.stdout
    manual_run = next(r for r in runs(db, "steer", "steer.run") if r["trigger"] == "MANUAL")
    after = wait_for(
        lambda: [r for r in runs(db, "steer", "steer.run") if r["trigger"] == "CRON" and r["id"] > manual_run["id"]],
        15,
        "the cron run after it",
    )[0]
    lag = (after["startedAt"] - manual_run["completedAt"]).total_seconds()
    assert 0 <= lag < 1.5, f"the buffered occurrence started {lag:.2f}s after the manual run (heartbeat 0.5 s)"
    late = [r for r in runs(db, "steer") if r["jobName"] == "*" and r["id"] > first["id"]]
    assert late == [], "the occurrence held back by the manual run was recorded skipped"


def test_run_exits_1_when_a_job_fails_and_names_an_unknown_schedule(db, daemons):
    env = {**daemons.env(), **APP, "TEST_STEER": "raise"}
    failed = subprocess.run(
        [sys.executable, str(ROOT / "schedule_daemon.py"), "--run", "steer"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert failed.returncode == 1
    assert "steer.run: FAILED" in failed.stdout and "RuntimeError: steer was told to fail" in failed.stdout
    unknown = subprocess.run(
        [sys.executable, str(ROOT / "schedule_daemon.py"), "--run", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert unknown.returncode == 1 and "no schedule 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr
