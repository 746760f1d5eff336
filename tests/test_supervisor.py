"""The child-process pool on real processes and both backends: capture, timeouts, crashes, reuse.

Jobs come from tests/supervised_app.py, imported by the children themselves (SCHEDULES_MODULE).
"""

from __future__ import annotations

import logging
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import threading
import time
from datetime import datetime, timezone

import pytest

from occurrence import enqueue_occurrence
from queue_mode import JobWorker
from records import JobCall, RunStatus
from runner import sync_definitions
from scheduling import load_app
from settings import Settings
from supervisor import ChildPool
from tests.conftest import wait_for

APP = load_app("tests.supervised_app", "test")


@pytest.fixture
def make_pool(db, database_url):
    pools = []

    def make(**env: str) -> ChildPool:
        settings = Settings.from_env({"DATABASE_URL": database_url, "JOB_KILL_GRACE_S": "1", **env})
        pool = ChildPool(db, settings, "tests.supervised_app", label="test")
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def run(pool: ChildPool, db, job_name: str):
    """Insert a RUNNING JobRun for `job_name` and run it in the pool: (result, the run's log lines)."""
    now = datetime.now(timezone.utc)
    run_id = db.insert(
        "insert_run",
        job_name=job_name,
        trigger="MANUAL",
        schedule_id=None,
        scheduled_for=now,
        batch_id=None,
        attempt=1,
        status="RUNNING",
        worker_id="test",
        queued_at=None,
        started_at=now,
        completed_at=None,
        duration_ms=None,
        error=None,
        now=now,
    )
    result = pool.run(APP.registry.jobs[job_name], JobCall(run_id, job_name, None, now, "MANUAL", 1))
    return result, db.fetch_all("list_logs", run_id=run_id)


def child_pid(pool, db) -> int:
    result, lines = run(pool, db, "sv.pid")
    assert result.status is RunStatus.COMPLETED, result.error
    return int(lines[0]["message"].split()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead but not yet reaped
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_stdout_stderr_logging_and_ctx_log_become_the_runs_log_lines_in_order(make_pool, db, caplog):
    caplog.set_level(logging.INFO)
    result, lines = run(make_pool(), db, "sv.talk")
    assert result.status is RunStatus.COMPLETED, result.error
    assert [(line["level"], line["message"]) for line in lines] == [
        ("INFO", "to stdout"),
        ("INFO", "from ctx.log"),
        ("WARNING", "to stderr"),
        ("WARNING", "talk: a warning record"),
        ("INFO", "talk: an info record"),
        ("INFO", "no newline at the end"),
    ]
    echoed = [r.getMessage() for r in caplog.records if r.name == "supervisor"]
    assert any("sv.talk (run " in m and m.endswith("to stderr") for m in echoed)


def test_the_job_runs_in_a_child_with_its_own_database_connection_and_ctx(make_pool, db):
    result, lines = run(make_pool(), db, "sv.own_db")
    assert result.status is RunStatus.COMPLETED, result.error
    assert lines[0]["message"] == "my run is RUNNING (MANUAL, attempt 1)"
    assert child_pid(make_pool(), db) != os.getpid()


def test_an_exception_fails_the_run_with_its_traceback(make_pool, db):
    result, _ = run(make_pool(), db, "sv.raise")
    assert result.status is RunStatus.FAILED
    assert "ValueError: bad input in row 7" in result.error and "Traceback" in result.error


def test_a_job_past_its_timeout_is_killed_failed_and_its_child_replaced(make_pool, db):
    pool = make_pool()
    first = child_pid(pool, db)
    started = time.monotonic()
    result, lines = run(pool, db, "sv.hang")
    assert result.status is RunStatus.FAILED and "timed out after 1 s" in result.error
    assert time.monotonic() - started < 10
    assert [line["message"] for line in lines] == ["hanging"]
    wait_for(lambda: not alive(first), 10, "the timed-out child to be gone")
    assert child_pid(pool, db) != first


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(make_pool, db):
    started = time.monotonic()
    result, _ = run(make_pool(JOB_KILL_GRACE_S="2"), db, "sv.stubborn")
    assert result.status is RunStatus.FAILED and "timed out after 1 s" in result.error
    assert 2.9 <= time.monotonic() - started < 15  # 1 s timeout, then 2 s of grace before SIGKILL


def test_job_timeout_s_is_the_default_and_zero_means_none(make_pool, db):
    result, _ = run(make_pool(JOB_TIMEOUT_S="1"), db, "sv.sleep")  # @job(timeout=0) overrides the default
    assert result.status is RunStatus.COMPLETED, result.error
    result, _ = run(make_pool(JOB_TIMEOUT_S="1"), db, "sv.talk")  # no timeout of its own: 1 s applies, unused
    assert result.status is RunStatus.COMPLETED


@pytest.mark.parametrize(
    "job_name, cause",
    [
        ("sv.os_exit", "exited with code 3"),
        ("sv.sys_exit", "exited with code 4"),
        ("sv.segfault", "died of signal SIGSEGV"),
        ("sv.oom_killed", "died of signal SIGKILL"),
    ],
)
def test_a_crashing_child_fails_only_its_run_and_the_next_job_runs(make_pool, db, job_name, cause):
    pool = make_pool()
    result, _ = run(pool, db, job_name)
    assert result.status is RunStatus.FAILED and cause in result.error
    result, _ = run(pool, db, "sv.noop")
    assert result.status is RunStatus.COMPLETED


def test_what_a_job_allocates_stays_out_of_the_supervisor(make_pool, db):
    def rss_mib() -> float:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    before = rss_mib()
    result, lines = run(make_pool(), db, "sv.allocate")
    assert result.status is RunStatus.COMPLETED, result.error
    assert lines[0]["message"] == f"allocated {300 * 1024 * 1024} bytes"
    assert rss_mib() - before < 30


def test_children_are_reused_then_recycled_after_job_max_runs_per_child(make_pool, db):
    pool = make_pool(JOB_MAX_RUNS_PER_CHILD="3")
    pids = [child_pid(pool, db) for _ in range(4)]
    assert pids[0] == pids[1] == pids[2] != pids[3]
    wait_for(lambda: not alive(pids[0]), 10, "the recycled child to exit")


def test_an_idle_child_is_not_reused_and_ends_by_itself(make_pool, db):
    pool = make_pool(JOB_CHILD_IDLE_S="1")
    first = child_pid(pool, db)
    time.sleep(1.2)  # past JOB_CHILD_IDLE_S: this is the condition under test, not a synchronisation
    second = child_pid(pool, db)
    assert second != first
    wait_for(lambda: not alive(second), 20, "the idle child to end (trimmed, or by itself at idle time + 5 s)")
    assert pool.pids() == []
    wait_for(lambda: multiprocessing.forkserver._forkserver._forkserver_pid is None, 10, "the fork server to stop")
    assert child_pid(pool, db) != second  # and the next job starts it again


def test_output_past_job_log_max_bytes_is_dropped_with_one_last_line_saying_how_much(make_pool, db):
    pool = make_pool(JOB_LOG_MAX_BYTES="1000")
    result, lines = run(pool, db, "sv.flood50")
    assert result.status is RunStatus.COMPLETED
    kept = lines[:-1]
    assert [line["message"][:10] for line in kept] == [f"line {i:05d}" for i in range(10)]  # 10 x 100 bytes
    assert lines[-1]["level"] == "WARNING"
    assert lines[-1]["message"].startswith(f"... {40 * 100} more bytes of output dropped")


def test_lines_are_stored_in_batches_not_one_statement_each(make_pool, db):
    pool = make_pool()
    before = db.statements_issued
    result, lines = run(pool, db, "sv.flood2000")
    assert result.status is RunStatus.COMPLETED and len(lines) == 2000
    assert db.statements_issued - before < 30  # insert_run, a few batches, list_logs


def test_a_run_still_going_when_the_shutdown_grace_ends_is_interrupted(make_pool, db):
    pool = make_pool()
    threading.Timer(1.0, pool.hard_stop.set).start()
    result, _ = run(pool, db, "sv.sleep_long")
    assert result.status is RunStatus.FAILED and result.error.startswith("interrupted: shutting down")


def test_queue_mode_retries_a_timed_out_run_like_any_failure(db, database_url):
    settings = Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "SCHEDULES_MODULE": "tests.supervised_app",
            "JOB_KILL_GRACE_S": "1",
            "EXECUTION_MODE": "queue",
        }
    )
    sync_definitions(db, APP, datetime.now(timezone.utc))
    with db.transaction():
        batch_id = enqueue_occurrence(
            db, APP, APP.schedules["retry"], datetime.now(timezone.utc), "MANUAL", datetime.now(timezone.utc)
        )
    worker = JobWorker(db, APP, settings)
    worker.start()
    try:
        [run] = worker.claim(datetime.now(timezone.utc), 10)
        worker.record([worker.execute(run)])
        first, second = db.fetch_all("batch_runs", batch_id=batch_id)
        assert (first["attempt"], first["status"]) == (1, "FAILED") and "timed out after 1 s" in first["error"]
        assert (second["attempt"], second["status"]) == (2, "QUEUED")
    finally:
        worker.stopping.set()
        worker.pool.close()
        worker.presence.stop(datetime.now(timezone.utc))


def fork_server_running() -> bool:
    return multiprocessing.forkserver._forkserver._forkserver_pid is not None


def test_the_fork_server_stops_only_when_no_pool_of_the_process_has_a_child(make_pool, db):
    quick, busy = make_pool(JOB_CHILD_IDLE_S="1"), make_pool()  # the admin server has two pools, too
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(run(busy, db, "sv.sleep_long")[0]))
    thread.start()
    wait_for(lambda: busy.pids(), 10, "the busy pool's child")
    child_pid(quick, db)
    wait_for(lambda: not quick.pids(), 10, "the quick pool's idle child to be trimmed")
    quick.trim()  # at once, so the check below does not race the timer's own trim
    assert fork_server_running(), "the fork server stopped under another pool's running child"
    busy.hard_stop.set()
    thread.join(30)
    assert outcome[0].error.startswith("interrupted: shutting down")


def test_after_the_last_child_dies_the_fork_server_and_resource_tracker_stop(make_pool, db):
    pool = make_pool(JOB_CHILD_IDLE_S="1")
    result, _ = run(pool, db, "sv.os_exit")
    assert result.status is RunStatus.FAILED and pool.pids() == []
    wait_for(
        lambda: not fork_server_running() and multiprocessing.resource_tracker._resource_tracker._pid is None,
        10,
        "the fork server and the resource tracker to stop",
    )
    assert child_pid(pool, db) != os.getpid()  # and the next job starts them again
