"""The daemon's steps, called in-process with an explicit `now`, on both backends."""

from datetime import datetime, timedelta, timezone

from jobs import JobRegistry
from runner import Presence, recover, recovery_needed, sync_definitions
from schedule_daemon import ScheduleDaemon
from scheduling import App, ScheduleDefinition
from settings import Settings
from tests.inprocess import InProcessPool

T0 = datetime(2026, 1, 10, 2, 0, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)


def make_app(*schedules, calls=None, fail=()):
    """An App with three jobs a -> b -> c (c depends on b, b on a) in group 'g', recording calls."""
    registry = JobRegistry()
    calls = [] if calls is None else calls

    def body(name):
        def run(ctx):
            calls.append((name, ctx.scheduled_for))
            ctx.log(f"{name} ran")
            if name in fail:
                raise RuntimeError(f"{name} broke")

        return run

    registry.job(group="g", name="a")(body("a"))
    registry.job(group="g", name="b", depends_on=["a"])(body("b"))
    registry.job(group="h", name="c", depends_on=["b"])(body("c"))
    schedules = schedules or (ScheduleDefinition("every-minute", "Every minute", "", "* * * * *"),)
    return App({s.id: s for s in schedules}, registry, "test"), calls


def make_daemon(db, app, **env):
    settings = Settings.from_env({"HEARTBEAT_INTERVAL_MS": "1000", "LOCK_TIMEOUT_MS": "5000", **env})
    daemon = ScheduleDaemon(db, app, settings, InProcessPool(db))
    return daemon


def register(daemon, now):
    """Register the daemon's WorkerInstance without its heartbeat thread: the tests move time themselves."""
    daemon.db.insert(
        "register_worker", id=daemon.presence.id, worker_type="schedule_daemon", hostname="test", pid=1, now=now
    )
    sync_definitions(daemon.db, daemon.app, now)


def tick(daemon, now):
    """One pass of the daemon at `now`, after the heartbeat its thread would have sent."""
    daemon.presence.beat(now)
    did_work = daemon.run_pass(now)
    daemon.executor.wait()  # occurrences run on threads of their own
    return did_work


def enable(db, schedule_id, next_run_at, now=T0):
    db.execute("enable_schedule", id=schedule_id, next_run_at=next_run_at, now=now)


def runs(db, **where):
    rows = db.fetch_all("list_runs", status=None, schedule_id=None, job_name=None, before=None, limit=1000)
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def test_sync_creates_missing_schedules_disabled_and_never_touches_enabled(db):
    app, _ = make_app()
    sync_definitions(db, app, T0)
    row = db.fetch_one("get_schedule", id="every-minute")
    assert row["enabled"] in (0, False) and row["nextRunAt"] is None
    enable(db, "every-minute", T0 + 60 * SECOND)
    report = sync_definitions(db, app, T0 + SECOND)
    assert report.created == [] and report.changed == []
    assert db.fetch_one("get_schedule", id="every-minute")["enabled"] in (1, True)


def test_sync_reschedules_a_changed_cron_and_unschedules_rows_not_in_code(db):
    app, _ = make_app(
        ScheduleDefinition("s", "S", "", "0 * * * *"), ScheduleDefinition("gone", "Gone", "", "* * * * *")
    )
    sync_definitions(db, app, T0)
    enable(db, "s", T0 + 3600 * SECOND)
    enable(db, "gone", T0 + 60 * SECOND)
    changed, _ = make_app(ScheduleDefinition("s", "S", "", "*/5 * * * *", timezone="Europe/Paris"))
    report = sync_definitions(db, changed, T0 + 90 * SECOND)
    assert report.changed == ["s"] and report.orphaned == ["gone"]
    row = db.fetch_one("get_schedule", id="s")
    assert (row["cron"], row["timezone"], row["nextRunAt"]) == ("*/5 * * * *", "Europe/Paris", T0 + 300 * SECOND)
    gone = db.fetch_one("get_schedule", id="gone")
    assert gone is not None and gone["enabled"] in (1, True) and gone["nextRunAt"] is None


def test_due_schedule_runs_its_jobs_in_order_once_and_moves_to_the_next_occurrence(db):
    app, calls = make_app(ScheduleDefinition("g", "G", "", "* * * * *", execution_mode="GROUP", job_group="g"))
    daemon = make_daemon(db, app)
    register(daemon, T0 - SECOND)
    enable(db, "g", T0)
    assert tick(daemon, T0) is True
    assert calls == [("a", T0), ("b", T0)]
    assert tick(daemon, T0 + SECOND) is False  # same occurrence: nothing more to do
    assert len(calls) == 2
    row = db.fetch_one("get_schedule", id="g")
    assert row["nextRunAt"] == T0 + 60 * SECOND and row["lockedAt"] is None and row["lockedBy"] is None
    assert (row["runCount"], row["failureCount"]) == (1, 0) and row["lastRunAt"] == T0
    recorded = runs(db, scheduleId="g")
    assert sorted((r["jobName"], r["status"], r["trigger"]) for r in recorded) == [
        ("a", "COMPLETED", "CRON"),
        ("b", "COMPLETED", "CRON"),
    ]
    assert all(r["scheduledFor"] == T0 and r["durationMs"] is not None for r in recorded)


def test_all_jobs_mode_runs_every_job_in_dependency_order(db):
    app, calls = make_app(ScheduleDefinition("all", "All", "", "* * * * *"))
    daemon = make_daemon(db, app)
    register(daemon, T0 - SECOND)
    enable(db, "all", T0)
    tick(daemon, T0)
    assert [name for name, _ in calls] == ["a", "b", "c"]


def test_disabled_schedule_never_runs(db):
    app, calls = make_app()
    daemon = make_daemon(db, app)
    register(daemon, T0 - SECOND)
    assert tick(daemon, T0 + 3600 * SECOND) is False
    assert calls == [] and runs(db) == []


def test_a_failed_job_skips_its_dependents_and_counts_as_a_failure(db):
    app, calls = make_app(ScheduleDefinition("all", "All", "", "* * * * *"), fail=("a",))
    daemon = make_daemon(db, app)
    register(daemon, T0 - SECOND)
    enable(db, "all", T0)
    tick(daemon, T0)
    assert [name for name, _ in calls] == ["a"]
    by_job = {r["jobName"]: r for r in runs(db, scheduleId="all")}
    assert by_job["a"]["status"] == "FAILED" and "RuntimeError: a broke" in by_job["a"]["error"]
    assert "Traceback" in by_job["a"]["error"]
    assert by_job["b"]["status"] == "SKIPPED" and "dependency a FAILED" in by_job["b"]["error"]
    assert by_job["c"]["status"] == "SKIPPED" and "dependency b SKIPPED" in by_job["c"]["error"]
    row = db.fetch_one("get_schedule", id="all")
    assert (row["runCount"], row["failureCount"]) == (0, 1) and row["lockedAt"] is None


def test_a_daemon_that_read_a_stale_due_row_cannot_run_the_occurrence_again(db):
    app, calls = make_app()
    first, second = make_daemon(db, app), make_daemon(db, app)
    register(first, T0 - SECOND)
    register(second, T0 - SECOND)
    enable(db, "every-minute", T0)
    lifetimes = db.fetch_all("daemon_lifetimes", since=T0 - 60 * SECOND)
    # `second` read the row as due at T0; `first` then ran and released that occurrence.
    tick(first, T0)
    assert len(calls) == 3
    second.process_due(app.schedules["every-minute"], T0, T0 + SECOND, lifetimes)
    assert len(calls) == 3
    assert len(runs(db, jobName="a")) == 1


def test_missed_occurrence_is_skipped_and_recorded_under_skip_policy(db):
    app, calls = make_app()
    daemon = make_daemon(db, app)
    register(daemon, T0 + 10 * SECOND)  # the daemon came back 10 s after the last occurrence fell due
    enable(db, "every-minute", T0 - 3600 * SECOND)
    assert tick(daemon, T0 + 30 * SECOND) is True
    assert calls == []
    [skipped] = runs(db, scheduleId="every-minute")
    assert skipped["status"] == "SKIPPED" and skipped["jobName"] == "*"
    assert skipped["scheduledFor"] == T0 - 3600 * SECOND and "no schedule daemon was running" in skipped["error"]
    assert db.fetch_one("get_schedule", id="every-minute")["nextRunAt"] == T0 + 60 * SECOND


def test_a_skip_batch_another_daemon_partly_moved_first_records_each_skip_once(db, database_url):
    from db import Database
    from occurrence import skipped_record

    app, _ = make_app(*(ScheduleDefinition(f"s{n}", f"S{n}", "", "* * * * *") for n in range(3)))
    daemon = make_daemon(db, app)
    register(daemon, T0 + 10 * SECOND)
    due, now = T0 - 3600 * SECOND, T0 + 30 * SECOND
    for n in range(3):
        enable(db, f"s{n}", due)
    # What this daemon read as due, each with the latest occurrence due by `now`
    batch = [(app.schedules[f"s{n}"], due, app.schedules[f"s{n}"].latest_at_or_before(now)) for n in range(3)]
    peer = Database.from_url(database_url)  # another daemon, on its own connection, moves s1 first
    with peer.transaction():
        assert peer.execute("skip_occurrences", id="s1", due=due, next_run_at=T0 + 60 * SECOND, now=now) == 1
        peer.execute("insert_skip_record", **skipped_record("s1", due, T0, "the peer's skip", "peer", now))
    peer.close()
    assert daemon.skip_missed(batch, now) == 2
    skips = {r["scheduleId"]: r for r in runs(db, status="SKIPPED")}
    assert sorted(skips) == ["s0", "s1", "s2"] and len(runs(db, status="SKIPPED")) == 3
    assert "the peer's skip" in skips["s1"]["error"] and "no schedule daemon" in skips["s0"]["error"]
    assert all(db.fetch_one("get_schedule", id=f"s{n}")["nextRunAt"] == T0 + 60 * SECOND for n in range(3))


def test_run_once_policy_runs_one_catch_up_for_the_latest_missed_occurrence(db):
    app, calls = make_app(ScheduleDefinition("r", "R", "", "* * * * *", missed_run_policy="RUN_ONCE"))
    daemon = make_daemon(db, app)
    register(daemon, T0 + 10 * SECOND)
    enable(db, "r", T0 - 3600 * SECOND)
    tick(daemon, T0 + 30 * SECOND)
    assert calls == [("a", T0), ("b", T0), ("c", T0)]
    coalesced = runs(db, scheduleId="r", jobName="*")
    assert len(coalesced) == 1 and coalesced[0]["scheduledFor"] == T0 - 3600 * SECOND
    assert db.fetch_one("get_schedule", id="r")["nextRunAt"] == T0 + 60 * SECOND


def test_occurrence_late_because_the_daemon_was_busy_still_runs(db):
    app, calls = make_app()
    daemon = make_daemon(db, app)
    register(daemon, T0 - 3600 * SECOND)  # alive since long before the occurrences
    enable(db, "every-minute", T0, now=T0 - 60 * SECOND)
    tick(daemon, T0 + 150 * SECOND)  # 2.5 minutes late: T0, T0+60 and T0+120 are pending
    assert [name for name, _ in calls] == ["a", "b", "c"] and calls[0][1] == T0 + 120 * SECOND
    [coalesced] = runs(db, jobName="*")
    assert coalesced["scheduledFor"] == T0 and "late" in coalesced["error"]


def test_enabling_computes_the_next_occurrence_from_now(db):
    app, calls = make_app()
    daemon = make_daemon(db, app)
    register(daemon, T0 - 3600 * SECOND)
    # Enabled by SQL, with no nextRunAt: housekeeping gives it the next occurrence after now.
    db.execute("enable_schedule", id="every-minute", next_run_at=None, now=T0 + 30 * SECOND)
    tick(daemon, T0 + 30 * SECOND)
    assert calls == []
    assert db.fetch_one("get_schedule", id="every-minute")["nextRunAt"] == T0 + 60 * SECOND


def test_expired_lock_is_freed_and_orphaned_runs_fail(db):
    app, _ = make_app()
    dead = make_daemon(db, app)
    register(dead, T0)
    enable(db, "every-minute", T0)
    db.execute(
        "claim_occurrence", id="every-minute", due=T0, next_run_at=T0 + 60 * SECOND, owner=dead.presence.id, now=T0
    )
    run_id = db.insert(
        "insert_run",
        job_name="a",
        trigger="CRON",
        schedule_id="every-minute",
        scheduled_for=T0,
        batch_id=None,
        attempt=1,
        status="RUNNING",
        worker_id=dead.presence.id,
        queued_at=None,
        started_at=T0,
        completed_at=None,
        duration_ms=None,
        error=None,
        now=T0,
    )
    recover(db, T0 + 4 * SECOND, timedelta(seconds=5), "the-test")  # not expired yet: nothing happens
    assert db.fetch_one("get_schedule", id="every-minute")["lockedBy"] == dead.presence.id
    recover(db, T0 + 6 * SECOND, timedelta(seconds=5), "the-test")
    row = db.fetch_one("get_schedule", id="every-minute")
    assert row["lockedAt"] is None and row["failureCount"] == 1 and row["nextRunAt"] == T0 + 60 * SECOND
    run = db.fetch_one("get_run", id=run_id)
    assert run["status"] == "FAILED" and "died" in run["error"]


def test_recovery_is_looked_for_only_when_something_is_stale_and_each_cause_is_seen(db):
    """The daemon runs recovery only when recovery_needed says so: a miss here would leave a run RUNNING."""
    app, _ = make_app()
    sync_definitions(db, app, T0)
    enable(db, "every-minute", T0)
    timeout = timedelta(seconds=5)
    db.insert("register_worker", id="w", worker_type="schedule_daemon", hostname="h", pid=1, now=T0)
    assert not recovery_needed(db, T0 + 4 * SECOND, timeout, "the-test")  # all alive, nothing held
    assert recovery_needed(db, T0 + 6 * SECOND, timeout, "the-test")  # w went silent
    db.execute("heartbeat", id="w", now=T0 + 6 * SECOND)
    db.execute("claim_occurrence", id="every-minute", due=T0, next_run_at=T0 + 60 * SECOND, owner="w", now=T0)
    assert recovery_needed(db, T0 + 6 * SECOND, timeout, "the-test")  # w is alive but its lease was not renewed
    db.execute("renew_lock", id="every-minute", owner="w", now=T0 + 6 * SECOND)
    assert not recovery_needed(db, T0 + 7 * SECOND, timeout, "the-test")
    db.insert(
        "insert_run",
        **{"job_name": "a", "trigger": "CRON", "schedule_id": "every-minute", "scheduled_for": T0, "batch_id": None},
        **{"attempt": 1, "status": "RUNNING", "worker_id": "w", "queued_at": None, "started_at": T0},
        **{"completed_at": None, "duration_ms": None, "error": None, "now": T0},
    )
    assert not recovery_needed(db, T0 + 7 * SECOND, timeout, "the-test")  # a live worker's run
    db.execute("stop_worker", id="w", now=T0 + 7 * SECOND)
    assert recovery_needed(db, T0 + 7 * SECOND, timeout, "the-test")  # stopped, its run left RUNNING
    recover(db, T0 + 7 * SECOND, timeout, "the-test")
    db.execute("release_schedule", id="every-minute", owner="w", last_run_at=T0, succeeded=0, failed=1, now=T0)
    assert not recovery_needed(db, T0 + 7 * SECOND, timeout, "the-test")  # recovered: nothing left


def test_a_live_holder_renews_its_lease_so_recovery_leaves_it_alone(db):
    app, _ = make_app()
    live = Presence(db, "schedule_daemon", 1.0)
    db.insert("register_worker", id=live.id, worker_type="schedule_daemon", hostname="h", pid=1, now=T0)
    sync_definitions(db, app, T0)
    enable(db, "every-minute", T0)
    db.execute("claim_occurrence", id="every-minute", due=T0, next_run_at=T0 + 60 * SECOND, owner=live.id, now=T0)
    live.hold("every-minute")
    live.beat(T0 + 4 * SECOND)
    recover(db, T0 + 6 * SECOND, timedelta(seconds=5), "the-test")
    assert db.fetch_one("get_schedule", id="every-minute")["lockedBy"] == live.id


def test_after_an_outage_recovery_never_takes_the_asking_instance_for_dead(db):
    """Every heartbeat is stale when the database comes back; the instance that looks first is alive itself:
    it must not fail its own running run or free its own lease (it did, under load: a flaky fault test)."""
    app, _ = make_app()
    sync_definitions(db, app, T0)
    enable(db, "every-minute", T0)
    for instance in ("me", "other"):
        db.insert("register_worker", id=instance, worker_type="schedule_daemon", hostname="h", pid=1, now=T0)
    db.execute("claim_occurrence", id="every-minute", due=T0, next_run_at=T0 + 60 * SECOND, owner="me", now=T0)
    run_id = db.insert(
        "insert_run",
        **{"job_name": "a", "trigger": "CRON", "schedule_id": "every-minute", "scheduled_for": T0, "batch_id": None},
        **{"attempt": 1, "status": "RUNNING", "worker_id": "me", "queued_at": None, "started_at": T0},
        **{"completed_at": None, "duration_ms": None, "error": None, "now": T0},
    )
    after_outage, timeout = T0 + 60 * SECOND, timedelta(seconds=5)
    assert recovery_needed(db, after_outage, timeout, "me")  # the other one went silent
    recover(db, after_outage, timeout, "me")
    statuses = {w["id"]: w["status"] for w in db.fetch_all("list_workers")}
    assert statuses == {"me": "RUNNING", "other": "DEAD"}
    assert db.fetch_one("get_run", id=run_id)["status"] == "RUNNING"
    assert db.fetch_one("get_schedule", id="every-minute")["lockedBy"] == "me"
    assert not recovery_needed(db, after_outage, timeout, "me")  # only our own staleness is left
    recover(db, after_outage, timeout, "other")  # seen from another instance, we are silent: we are dead
    assert db.fetch_one("get_run", id=run_id)["status"] == "FAILED"


def test_a_schedule_held_elsewhere_and_due_is_looked_at_again_within_one_heartbeat(db):
    app, _ = make_app()
    daemon = make_daemon(db, app, SCHEDULE_POLL_INTERVAL_MS="3600000")
    register(daemon, T0)
    enable(db, "every-minute", T0 + 30 * SECOND)
    db.execute("claim_schedule_now", id="every-minute", owner="a-run-now-elsewhere", now=T0)
    assert daemon.seconds_until_next_pass(T0) == 30  # held, due in 30 s: look then, not after the hour's poll
    assert daemon.seconds_until_next_pass(T0 + 40 * SECOND) == 1  # due and still held: every heartbeat (1 s)
