"""Fault injection with real processes and real servers: every database fault ends in a recorded outcome.

One test per fault of issue 8, on both backends where the fault exists there. Each checks that the run
ends COMPLETED or FAILED with its cause, that the schedule runs again at a later occurrence, that no
occurrence runs twice (counted in a marker file outside the database, see tests/fault_app.py), and,
where the fault leaves something stuck for a while, that the health check reported it meanwhile.
Locks are held by a real second connection; a connection is cut at COMMIT by tests/fault_proxy.py; a
clock is skewed with libfaketime.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from health import check_health
from occurrence import enqueue_occurrence
from scheduling import load_app
from settings import Settings
from tests.conftest import operator_connection, operator_sql, wait_for
from tests.fault_proxy import FaultProxy
from tests.test_processes import Daemons

FAST = {
    "HEARTBEAT_INTERVAL_MS": "500",
    "LOCK_TIMEOUT_MS": "3000",
    "SCHEDULE_POLL_INTERVAL_MS": "1000",
    "JOB_WORKER_POLL_INTERVAL_MS": "200",
}
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


class Processes(Daemons):
    """schedule_daemon.py processes (daemons or --worker) of the fault application, all stopped at the end."""

    app = "tests.fault_app"
    settings = FAST

    def marks(self, what: str) -> list[tuple[str, str]]:
        """(scheduledFor, pid) of each `what` line (start, done, after) in the marker file."""
        return [tuple(line.split()[1:]) for line in self.marker.read_text().splitlines() if line.startswith(what + " ")]


@pytest.fixture
def processes(database_url, tmp_path):
    group = Processes(database_url, tmp_path)
    yield group
    group.stop_all()


def now() -> datetime:
    return datetime.now(timezone.utc)


def enable(db) -> None:
    """What the admin's enable does, once a daemon has synced the schedule: next occurrence from now."""
    wait_for(lambda: db.fetch_one("get_schedule", id="fault"), 30, "a daemon to sync the schedule")
    db.execute(
        "enable_schedule", id="fault", next_run_at=now().replace(microsecond=0) + timedelta(seconds=1), now=now()
    )


def runs(db, job_name: str = "fault.work") -> list[dict]:
    return db.fetch_all("list_runs", status=None, schedule_id="fault", job_name=job_name, before=None, limit=10_000)


def problems(db, **env: str) -> list[str]:
    """The health check's problems, with a 1 s overdue tolerance, judged as `--health` would."""
    settings = Settings.from_env(
        {"DATABASE_URL": "sqlite:///unused.db", **FAST, "HEALTH_OVERDUE_TOLERANCE_S": "1", **env}
    )
    return check_health(db, settings)["problems"]


def assert_each_occurrence_ran_once(processes: Processes) -> None:
    started = collections.Counter(scheduled_for for scheduled_for, _ in processes.marks("start"))
    assert [o for o, n in started.items() if n > 1] == [], "an occurrence ran twice"


def wait_for_a_later_completed_run(db, after: datetime, job_name: str = "fault.work") -> dict:
    """The schedule ran again: a run of an occurrence after `after` COMPLETED."""
    return wait_for(
        lambda: next((r for r in runs(db, job_name) if r["scheduledFor"] > after and r["status"] == "COMPLETED"), None),
        30,
        "the schedule to run again",
    )


@contextlib.contextmanager
def write_lock_held(db, run_id: int):
    """Another connection holds what the run's outcome write needs: SQLite's write lock (BEGIN IMMEDIATE),
    or on MySQL the row locks of the run, its schedule and the WorkerInstance rows."""
    conn = operator_connection(db)
    cur = conn.cursor()
    if db.kind == "sqlite":
        cur.execute("BEGIN IMMEDIATE")
    else:
        conn.autocommit(False)
        cur.execute("START TRANSACTION")
        cur.execute("SELECT id FROM JobRun WHERE id = %s FOR UPDATE", (run_id,))
        cur.execute("SELECT id FROM JobSchedule WHERE id = 'fault' FOR UPDATE")
        cur.execute("SELECT id FROM WorkerInstance FOR UPDATE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def wait_for_or_show(processes: Processes, process: subprocess.Popen, predicate, timeout: float, what: str):
    """wait_for(), failing with the process's log: what it was doing is the first question."""
    try:
        return wait_for(predicate, timeout, what)
    except AssertionError as error:
        raise AssertionError(f"{error}; its log:\n{processes.log_of(process)[-3000:]}") from None


def first_running_run(db) -> dict:
    return wait_for(lambda: next((r for r in runs(db) if r["status"] == "RUNNING"), None), 30, "the job to start")


# -- busy: a lock held past the lock wait timeout --------------------------------------------------------


def test_a_write_lock_held_past_the_lock_wait_timeout_delays_the_outcome_and_loses_nothing(db, processes, tmp_path):
    hold = tmp_path / "hold"
    hold.touch()
    daemon = processes.start(DB_LOCK_WAIT_TIMEOUT_MS="300", TEST_HOLD_FILE=str(hold))
    enable(db)
    run = first_running_run(db)
    with write_lock_held(db, run["id"]):
        hold.unlink()  # the job ends now; recording its result waits on the lock, times out, is retried
        wait_for(
            lambda: "recording a job's result failed, retrying" in processes.log_of(daemon),
            20,
            "the outcome write to fail as busy",
        )
        wait_for(
            lambda: any("schedule fault is overdue" in p and "held by" in p for p in problems(db)),
            20,
            "the health check to report the schedule behind",
        )
        assert db.fetch_one("get_run", id=run["id"])["status"] == "RUNNING"
    done = wait_for(
        lambda: (r := db.fetch_one("get_run", id=run["id"]))["status"] != "RUNNING" and r,
        30,
        "the outcome to be stored",
    )
    assert done["status"] == "COMPLETED" and done["completedAt"] is not None
    wait_for_a_later_completed_run(db, run["scheduledFor"])
    wait_for(lambda: not any("overdue" in p for p in problems(db)), 20, "the health check to clear")
    assert_each_occurrence_ran_once(processes)


def test_a_deadlock_while_finishing_a_queued_run_is_retried(db, processes, tmp_path):
    if db.kind != "mysql":
        pytest.skip("SQLite has one writer at a time (BEGIN IMMEDIATE): no deadlocks; busy is the test above")
    hold = tmp_path / "hold"
    hold.touch()
    # A generous LOCK_TIMEOUT_MS: on a loaded machine a late heartbeat must not pass the worker for dead.
    processes.start(EXECUTION_MODE="queue", LOCK_TIMEOUT_MS="15000")
    worker = processes.start(
        "--worker",
        EXECUTION_MODE="queue",
        TEST_HOLD_FILE=str(hold),
        DB_LOCK_WAIT_TIMEOUT_MS="20000",
        LOCK_TIMEOUT_MS="15000",
    )
    enable(db)
    run = first_running_run(db)
    conn = operator_connection(db)
    cur = conn.cursor()
    cur.execute("CREATE TABLE Ballast (id INT PRIMARY KEY) ENGINE=InnoDB")
    conn.autocommit(False)
    cur.execute("START TRANSACTION")
    # A transaction that changed many rows is never the one InnoDB rolls back: the worker's will be.
    cur.execute("INSERT INTO Ballast SELECT seq FROM seq_1_to_5000")
    cur.execute("SELECT id FROM JobBatch WHERE id = %s FOR UPDATE", (run["batchId"],))
    hold.unlink()  # the worker finishes: it locks the run's row, then waits for the batch row we hold

    def worker_holds_the_run_row() -> bool:
        """Recording the outcome: it updated the run's row (and next waits for the batch row, if not already)."""
        import pymysql

        probe = operator_connection(db)
        try:
            probe.cursor().execute("SELECT id FROM JobRun WHERE id = %s FOR UPDATE NOWAIT", (run["id"],))
            return False
        except pymysql.err.OperationalError as error:
            return error.args[0] in (1205, 3572)  # the lock is taken (NOWAIT's refusal)
        finally:
            probe.close()

    wait_for_or_show(processes, worker, worker_holds_the_run_row, 30, "the worker to lock the run's row")
    cur.execute("SELECT id FROM JobRun WHERE id = %s FOR UPDATE", (run["id"],))  # the cycle: InnoDB picks a victim
    wait_for_or_show(
        processes,
        worker,
        lambda: "Deadlock" in processes.log_of(worker),
        20,
        "the worker's transaction to be the deadlock victim",
    )
    wait_for(
        lambda: any("has been queued for" in p for p in problems(db, HEALTH_MAX_QUEUE_AGE_S="1")),
        20,
        "the health check to report the queue stalled",
    )
    assert db.fetch_one("get_run", id=run["id"])["status"] == "RUNNING"
    conn.rollback()
    conn.close()
    done = wait_for(
        lambda: (r := db.fetch_one("get_run", id=run["id"]))["status"] != "RUNNING" and r,
        30,
        "the outcome to be stored",
    )
    assert done["status"] == "COMPLETED"
    after = wait_for(
        lambda: next(
            (
                r
                for r in runs(db, "fault.after")
                if r["batchId"] == run["batchId"] and r["status"] not in ("QUEUED", "RUNNING")
            ),
            None,
        ),
        30,
        "the dependent to run",
    )
    assert after["status"] == "COMPLETED"
    wait_for(lambda: db.fetch_one("get_batch", id=run["batchId"])["completedAt"], 10, "the occurrence to complete")
    wait_for_a_later_completed_run(db, run["scheduledFor"], "fault.after")
    assert_each_occurrence_ran_once(processes)


# -- lost: the connection dropped at COMMIT ---------------------------------------------------------------


def test_a_claim_whose_commit_answer_is_lost_is_read_back_and_run_once(db, processes, database_url):
    if db.kind != "mysql":
        pytest.skip("SQLite has no connection to lose")
    parts = urllib.parse.urlsplit(database_url)
    proxy = FaultProxy(parts.hostname, parts.port)
    try:
        processes.database_url = proxy.url(parts.path.strip("/"))
        daemon = processes.start(LOCK_TIMEOUT_MS="8000")
        enable(db)
        first = wait_for(lambda: next((r for r in runs(db) if r["status"] == "COMPLETED"), None), 30, "a first run")
        # The claim's UPDATE is the only statement with ", lockedBy = '"; its COMMIT lands, the answer is cut,
        # and the database stays unreachable for 3 s.
        proxy.cut_at_commit(b", lockedBy = '", down_for=3)
        wait_for(lambda: proxy.cuts == 1, 30, "the proxy to cut a claim at COMMIT")
        wait_for(
            lambda: any("schedule fault is overdue" in p and "held by" in p for p in problems(db)),
            20,
            "the health check to report the schedule held while its holder is cut off",
        )
        wait_for(
            lambda: "the connection dropped at COMMIT but the claim of fault landed" in processes.log_of(daemon),
            30,
            "the daemon to read the claim back",
        )
        wait_for_a_later_completed_run(db, now() + timedelta(seconds=1))
        processes.stop_all()
        # The cut claim was run, not abandoned: an abandoned one would have expired and been counted a
        # failure by free_expired_lock, with no run.
        assert db.fetch_one("get_schedule", id="fault")["failureCount"] == 0
        assert {r["status"] for r in runs(db)} == {"COMPLETED"} and first in runs(db)
        claimed = {r["scheduledFor"].isoformat() for r in runs(db)}
        assert claimed == {o for o, _ in processes.marks("start")}, "a claimed occurrence was not run, or the reverse"
        assert_each_occurrence_ran_once(processes)
    finally:
        processes.stop_all()
        proxy.close()


# -- too large: values the program writes ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["inline", "queue"])
def test_an_error_and_a_log_line_larger_than_their_columns_are_stored_cut(db, processes, mode):
    big = {"TEST_ERROR_BYTES": "70000", "TEST_LOG_BYTES": "70000", "EXECUTION_MODE": mode}
    processes.start(**big)
    if mode == "queue":  # the worker records outcomes several runs to a statement
        processes.start("--worker", **big)
    enable(db)
    failed = wait_for(lambda: next((r for r in runs(db) if r["status"] == "FAILED"), None), 30, "the big error")
    assert "cut to fit the column" in failed["error"] and failed["error"].rstrip().endswith("E" * 100)
    assert len(failed["error"].encode()) <= 65_535 and "RuntimeError" in failed["error"]
    logs = db.fetch_all("list_logs", run_id=failed["id"])
    assert len(logs) == 1 and "cut to fit the column" in logs[0]["message"]
    # The occurrence's own other job ended as it should (same batch, not a later occurrence's): inline it
    # ran; in queue mode it depends on the failed job, so it was skipped. The schedule counted the failure
    # and runs again.
    other = "COMPLETED" if mode == "inline" else "SKIPPED"
    wait_for(
        lambda: next(
            (
                r
                for r in runs(db, "fault.after")
                if r["scheduledFor"] == failed["scheduledFor"]
                and r["batchId"] == failed["batchId"]
                and r["status"] == other
            ),
            None,
        ),
        30,
        "the failed run's occurrence to settle its other job",
    )
    wait_for(
        lambda: next(
            (r for r in runs(db) if r["status"] == "FAILED" and r["scheduledFor"] > failed["scheduledFor"]), None
        ),
        30,
        "the next occurrence",
    )
    assert db.fetch_one("get_schedule", id="fault")["failureCount"] >= 1
    assert_each_occurrence_ran_once(processes)


def test_an_admin_whose_jwt_subject_is_longer_than_the_audit_column_is_audited_cut(database_url):
    from tests.admin_client import AdminServer, admin_jwt

    admin = AdminServer(database_url)
    try:
        response = admin.request(
            "PATCH", "/admin/schedules/feed-refresh", {"enabled": True}, token=admin_jwt(sub="a" * 300 + "@example.com")
        )
        assert response.status == 200, response.body
        [entry] = admin.db.fetch_all("list_audit", before=None, limit=10)
        assert len(entry["actor"]) <= 200 and "cut to fit the column" in entry["actor"]
        assert entry["actor"].endswith("@example.com")
    finally:
        admin.close()


# -- clocks --------------------------------------------------------------------------------------------


def test_a_daemon_whose_clock_runs_ahead_does_not_take_a_live_peers_lease(db, processes, tmp_path):
    if db.kind != "mysql":
        pytest.skip("SQLite's processes share one host, hence one clock (the database's)")
    if not Path(LIBFAKETIME).exists():
        pytest.fail(f"{LIBFAKETIME} is missing: apt-get install -y libfaketime")
    hold = tmp_path / "hold"
    hold.touch()
    honest = processes.start(TEST_HOLD_FILE=str(hold))
    enable(db)
    run = first_running_run(db)
    ahead = processes.start(
        TEST_HOLD_FILE=str(hold),
        LD_PRELOAD=LIBFAKETIME,
        FAKETIME="+10m",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
        FAKETIME_NO_CACHE="1",
    )
    # 600 s ahead, give or take the measurement's half round trip: +599.998s or +600.002s.
    wait_for_or_show(
        processes,
        ahead,
        lambda: re.search(r"clock is \+(599\.9|600\.0)\d*s off", processes.log_of(ahead)),
        60,
        "the skewed daemon to warn about its clock",
    )
    ahead_row = wait_for(
        lambda: next((w for w in db.fetch_all("list_workers") if w["pid"] == ahead.pid), None),
        30,
        "the skewed daemon to register",
    )
    # Several of its recovery passes (one per heartbeat) go by, each judging leases and heartbeats.
    wait_for(
        lambda: (
            db.fetch_one("get_worker", id=ahead_row["id"])["lastHeartbeatAt"]
            > ahead_row["startedAt"] + timedelta(seconds=4)
        ),
        30,
        "the skewed daemon to live for 4 s",
    )
    beat = db.fetch_one("get_worker", id=ahead_row["id"])["lastHeartbeatAt"]
    assert abs((beat - now()).total_seconds()) < 5, "heartbeats are written by the database's clock"
    holder = db.fetch_one("get_schedule", id="fault")
    assert db.fetch_one("get_run", id=run["id"])["status"] == "RUNNING"
    assert holder["lockedBy"] == run["workerId"]
    assert all(w["status"] == "RUNNING" for w in db.fetch_all("list_workers"))
    hold.unlink()
    done = wait_for(
        lambda: (r := db.fetch_one("get_run", id=run["id"]))["status"] != "RUNNING" and r, 30, "the run to finish"
    )
    assert done["status"] == "COMPLETED"
    wait_for_a_later_completed_run(db, run["scheduledFor"])
    assert honest.poll() is None and ahead.poll() is None
    assert_each_occurrence_ran_once(processes)


# -- unknown job in a worker -----------------------------------------------------------------------------


def test_a_job_unknown_to_the_worker_fails_and_settles_its_occurrence(db, processes):
    processes.start(EXECUTION_MODE="queue")
    worker = processes.start("--worker", EXECUTION_MODE="queue", TEST_OLD_CODE="1")
    enable(db)
    failed = wait_for(lambda: next((r for r in runs(db) if r["status"] == "FAILED"), None), 30, "the unknown job")
    assert "no job 'fault.work' in this worker's code" in failed["error"]
    batch = wait_for(
        lambda: (b := db.fetch_one("get_batch", id=failed["batchId"]))["completedAt"] and b,
        20,
        "the occurrence to complete",
    )
    assert (batch["remaining"], batch["failed"]) == (0, 2)
    [dependent] = [r for r in runs(db, "fault.after") if r["batchId"] == failed["batchId"]]
    assert dependent["status"] == "SKIPPED" and "fault.work FAILED" in dependent["error"]
    # The next occurrence is queued and settled the same way; the schedule counts the failures.
    wait_for(
        lambda: any(r["status"] == "FAILED" and r["scheduledFor"] > failed["scheduledFor"] for r in runs(db)),
        30,
        "the next occurrence",
    )
    wait_for(lambda: db.fetch_one("get_schedule", id="fault")["failureCount"] >= 2, 20, "the failures counted")
    assert not any("can no longer complete" in p for p in problems(db))
    assert worker.poll() is None


def test_health_names_queued_runs_whose_dependencies_can_no_longer_complete(db):
    app = load_app("tests.fault_app", "test")
    at = now()
    db.execute("insert_schedule", id="fault", name="Fault", cron="* * * * * *", timezone="UTC", now=at)
    with db.transaction():
        batch_id = enqueue_occurrence(db, app, app.schedules["fault"], at, "CRON", at)
    # Out of queue mode fault.after has no dependency in tests.fault_app: give it its queue-mode one.
    operator_sql(db, f"UPDATE JobRun SET blockedBy = 1 WHERE batchId = '{batch_id}' AND jobName = 'fault.after'")
    assert not any("can no longer complete" in p for p in problems(db)), "fault.work is still queued"
    # What an old worker did before issue 8: fail the job and leave its dependents waiting.
    operator_sql(db, f"UPDATE JobRun SET status = 'FAILED' WHERE batchId = '{batch_id}' AND jobName = 'fault.work'")
    [problem] = [p for p in problems(db) if "can no longer complete" in p]
    assert "fault.after of schedule fault" in problem


def insert_running_run(db, worker_id: str, at: datetime) -> int:
    """A run of schedule 'fault' RUNNING under `worker_id` since nine minutes before `at`."""
    return db.insert(
        "insert_run",
        job_name="fault.work",
        trigger="CRON",
        schedule_id="fault",
        scheduled_for=at,
        batch_id=None,
        attempt=1,
        status="RUNNING",
        worker_id=worker_id,
        queued_at=None,
        started_at=at - timedelta(minutes=9),
        completed_at=None,
        duration_ms=None,
        error=None,
        now=at,
    )


def test_health_names_a_run_left_running_past_the_lock_timeout_by_a_dead_holder(db):
    at = now()
    db.insert(
        "register_worker", id="gone", worker_type="schedule_daemon", hostname="h", pid=1, now=at - timedelta(minutes=10)
    )
    db.execute("insert_schedule", id="fault", name="Fault", cron="* * * * * *", timezone="UTC", now=at)
    run_id = insert_running_run(db, "gone", at)
    [problem] = [p for p in problems(db) if f"run {run_id} " in p]
    assert "longer than LOCK_TIMEOUT_MS" in problem and "gone is not alive" in problem
    db.execute("heartbeat", id="gone", now=now())  # alive after all, and holding the schedule: a long job
    operator_sql(db, "UPDATE JobSchedule SET lockedBy = 'gone' WHERE id = 'fault'")
    assert not any(f"run {run_id} " in p for p in problems(db))


# -- hand-written times ----------------------------------------------------------------------------------

TYPED_BY_HAND = {
    "sqlite": "UPDATE JobSchedule SET nextRunAt = datetime('now', '-1 minute') WHERE id = 'fault'",
    "mysql": "UPDATE JobSchedule SET nextRunAt = UTC_TIMESTAMP() - INTERVAL 1 MINUTE WHERE id = 'fault'",
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_next_run_typed_by_sql_without_milliseconds_is_claimed_without_spinning(db, processes):
    # Hourly, so only the typed time makes it due; RUN_ONCE, since that time is before the daemon started.
    # Heartbeats (and housekeeping) every 20 s: the pass after the one that could not claim it must see to it.
    daemon = processes.start(
        TEST_CRON="0 * * * * 0", TEST_POLICY="RUN_ONCE", HEARTBEAT_INTERVAL_MS="20000", LOCK_TIMEOUT_MS="60000"
    )
    enable(db)
    wait_for(lambda: "Schedule daemon started" in processes.log_of(daemon), 30, "the daemon to start")
    operator_sql(db, TYPED_BY_HAND[db.kind])
    ran = wait_for(lambda: next((r for r in runs(db) if r["status"] == "COMPLETED"), None), 15, "the typed occurrence")
    assert ran["scheduledFor"] <= now()
    # The run's outcome commits before the schedule is released: wait for the release, not just the outcome.
    row = wait_for(lambda: (r := db.fetch_one("get_schedule", id="fault"))["lockedAt"] is None and r, 15, "the release")
    assert row["nextRunAt"] > now()
    before, began = cpu_seconds(daemon.pid), time.monotonic()
    time.sleep(3)  # measuring CPU over a window, not synchronising
    used = (cpu_seconds(daemon.pid) - before) / (time.monotonic() - began)
    assert used < 0.3, f"the daemon used {used:.0%} of a CPU while idle"
    assert not any("overdue" in p for p in problems(db))
    assert_each_occurrence_ran_once(processes)


def test_a_pass_that_claims_nothing_is_not_work_and_the_next_one_normalises_typed_times(db):
    from tests.test_daemon import make_app, make_daemon, register, tick

    app, calls = make_app()
    daemon = make_daemon(db, app)
    at = now().replace(microsecond=0)
    register(daemon, at - timedelta(hours=1))  # alive all along: the typed occurrence is late, not missed
    db.execute("enable_schedule", id="every-minute", next_run_at=at + timedelta(hours=1), now=at)
    typed = (at - timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M:%S")  # no milliseconds, as a person types it
    operator_sql(db, f"UPDATE JobSchedule SET nextRunAt = '{typed}' WHERE id = 'every-minute'")
    daemon.next_recovery = at + timedelta(hours=1)  # no housekeeping in these passes
    first = tick(daemon, at)
    if db.kind == "sqlite":  # the text differs from the claim's: nothing claimed, so no "work", no spin
        assert (first, daemon.stalled, calls) == (False, True, [])
        assert daemon.pause() >= 1.0
        assert tick(daemon, at) is True  # stalled: this pass rewrote the time first
    else:  # DATETIME(3) stored it in its own form
        assert first is True
    assert [name for name, _ in calls] == ["a", "b", "c"] and not daemon.stalled
    assert db.fetch_one("get_schedule", id="every-minute")["lockedAt"] is None


@pytest.mark.parametrize("late_by, runs_it", [(2.5, True), (4.0, False)])
def test_a_live_daemon_whose_heartbeat_is_a_little_late_still_runs_its_occurrence(db, late_by, runs_it):
    from tests.test_daemon import make_app, make_daemon, register

    app, calls = make_app()
    daemon = make_daemon(db, app)  # heartbeats every 1 s: a margin of 3 s
    occurrence = datetime(2026, 1, 10, 2, 0, tzinfo=timezone.utc)
    register(daemon, occurrence - timedelta(minutes=1))
    db.execute("enable_schedule", id="every-minute", next_run_at=occurrence, now=occurrence - timedelta(minutes=1))
    # Its last heartbeat, late under write contention (2.5 intervals), or that of a daemon gone (4).
    db.execute("heartbeat", id=daemon.presence.id, now=occurrence - timedelta(seconds=late_by))
    daemon.next_recovery = occurrence + timedelta(hours=1)  # the pass judges liveness only
    assert daemon.run_pass(occurrence + timedelta(milliseconds=500)) is True
    daemon.executor.wait()  # an occurrence runs on a thread of its own
    skipped = [
        r
        for r in db.fetch_all(
            "list_runs", status="SKIPPED", schedule_id="every-minute", job_name="*", before=None, limit=10
        )
    ]
    assert (bool(calls), not skipped) == (runs_it, runs_it)


# -- stop during backoff ---------------------------------------------------------------------------------


def test_a_stop_signal_ends_the_backoff_at_once_and_the_run_still_ends_failed(db, processes, tmp_path):
    hold = tmp_path / "hold"
    hold.touch()
    daemon = processes.start(DB_LOCK_WAIT_TIMEOUT_MS="200", TEST_HOLD_FILE=str(hold))
    enable(db)
    run = first_running_run(db)
    with write_lock_held(db, run["id"]):
        hold.unlink()
        wait_for(lambda: "retrying in 8.0s" in processes.log_of(daemon), 30, "the outcome write to back off 8 s")
        assert any("schedule fault is overdue" in p for p in problems(db))
        began = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        # Without the fix: the 8 s backoff, then the same shutdown (about 4 s on MySQL, whose lock waits
        # last at least 1 s each).
        assert time.monotonic() - began < 6.5, "the stop waited out the backoff"
        assert "gave up recording a job's result at shutdown" in processes.log_of(daemon)
    # Another daemon's recovery fails the run with its cause, frees the lease, and the schedule runs again.
    processes.start()
    failed = wait_for(
        lambda: (r := db.fetch_one("get_run", id=run["id"]))["status"] != "RUNNING" and r,
        30,
        "recovery to fail the run",
    )
    assert failed["status"] == "FAILED" and "died" in failed["error"]
    wait_for_a_later_completed_run(db, run["scheduledFor"])
    assert_each_occurrence_ran_once(processes)
