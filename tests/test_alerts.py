"""Alerts and pings with real HTTP receivers on loopback, real daemon and admin server processes, both backends.

The daemons run tests/alert_app.py, whose job fails as TEST_FAIL says. The webhook URL carries a
secret path and query, which must never reach a log.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

import alerts
from alerts import Alert, AlertService, Event
from settings import Settings
from tests.conftest import ROOT, wait_for
from tests.receiver import Receiver
from tests.test_processes import FAST, Daemons

SECRET_PATH = "/hooks/T0-secret-path"
SECRET_QUERY = "token=s3cret-query"
BODY_KEYS = {"event", "scheduleId", "jobName", "runId", "error", "at", "text", "content"}


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def daemons(database_url, tmp_path):
    group = Daemons(database_url, tmp_path)
    yield group
    group.stop_all()


def webhook_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "SCHEDULES_MODULE": "tests.alert_app",
        "ALERT_WEBHOOK_URL": f"{receiver.url}{SECRET_PATH}?{SECRET_QUERY}",
        **extra,
    }


def enable_flaky(db, cron="* * * * * *"):
    from scheduling import ScheduleDefinition

    wait_for(lambda: db.fetch_one("get_schedule", id="flaky"), 30, "the daemon to sync 'flaky'")
    db.execute(
        "enable_schedule",
        id="flaky",
        next_run_at=ScheduleDefinition("flaky", "", "", cron).next_after(now()),
        now=now(),
    )


def flaky_runs(db, status=None):
    return db.fetch_all("list_runs", status=status, schedule_id="flaky", job_name="flaky.work", before=None, limit=1000)


def assert_no_secret(text: str) -> None:
    assert "T0-secret-path" not in text and "s3cret-query" not in text


def test_a_failing_job_with_two_daemons_alerts_exactly_once_per_failed_run(db, daemons, receiver):
    env = webhook_env(receiver, TEST_FAIL="always", ALERT_REPEAT_S="0")
    first, second = daemons.start(**env), daemons.start(**env)
    enable_flaky(db)
    wait_for(lambda: len(flaky_runs(db, "FAILED")) >= 6, 30, "six failed runs")
    db.execute("disable_schedule", id="flaky", now=now())
    wait_for(lambda: db.fetch_one("get_schedule", id="flaky")["lockedAt"] is None, 30, "the last run to end")
    failed = {r["id"] for r in flaky_runs(db, "FAILED")}
    wait_for(lambda: {a["runId"] for a in receiver.alerts("run_failed")} >= failed, 30, "an alert for every failed run")
    daemons.stop_all()

    received = receiver.alerts("run_failed")
    per_run = collections.Counter(a["runId"] for a in received)
    assert set(per_run) == failed and set(per_run.values()) == {1}, per_run
    for body in received:
        assert set(body) == BODY_KEYS
        assert body["scheduleId"] == "flaky" and body["jobName"] == "flaky.work"
        assert body["error"].startswith("RuntimeError: boom at ") and body["text"] == body["content"]
        assert f"run {body['runId']}" in body["text"]
    assert all(r.path == f"{SECRET_PATH}?{SECRET_QUERY}" for r in receiver.requests)
    for process in (first, second):
        assert_no_secret(daemons.log_of(process))


def test_a_skip_after_downtime_alerts_occurrence_missed(db, daemons, receiver):
    at = now()
    cron = f"{(at.minute + 30) % 60} * * * *"  # hourly, the latest occurrence 30 minutes ago
    first = daemons.start(**webhook_env(receiver, TEST_CRON=cron))
    wait_for(lambda: db.fetch_one("get_schedule", id="flaky"), 30, "the daemon to sync 'flaky'")
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    db.execute("enable_schedule", id="flaky", next_run_at=at - timedelta(hours=3), now=at)  # due while no daemon ran
    daemons.start(**webhook_env(receiver, TEST_CRON=cron))
    [missed] = wait_for(lambda: receiver.alerts("occurrence_missed"), 30, "occurrence_missed")
    [skip] = db.fetch_all("list_runs", status="SKIPPED", schedule_id="flaky", job_name="*", before=None, limit=10)
    assert missed["runId"] == skip["id"] and missed["scheduleId"] == "flaky"
    assert "no schedule daemon was running" in missed["text"]
    assert flaky_runs(db) == []


def test_killing_the_only_daemon_alerts_daemon_down_from_the_admin_server_then_recovered(
    db, daemons, receiver, tmp_path
):
    watch = {"HEALTH_MAX_HEARTBEAT_AGE_S": "2"}
    victim = daemons.start(**webhook_env(receiver, **watch))
    wait_for(lambda: db.fetch_all("running_workers", worker_type="schedule_daemon"), 30, "the daemon to register")
    log_path = tmp_path / "admin.log"
    with open(log_path, "wb") as log:
        admin = subprocess.Popen(
            [sys.executable, str(ROOT / "admin_server.py")],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": daemons.database_url,
                "APP_ENV": "test",
                "ADMIN_TOKEN": "test-admin-token-0123456789",
                "PORT": "0",
                **FAST,
                **webhook_env(receiver, **watch),
            },
        )
    try:
        wait_for(lambda: "Alerts on" in log_path.read_text(), 30, "the admin server's watchdog to start")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = now()
        [down] = wait_for(lambda: receiver.alerts("daemon_down"), 30, "daemon_down")
        assert "no live schedule daemon" in down["text"] and down["text"] == down["content"]
        assert datetime.fromisoformat(down["at"]) - killed_at < timedelta(seconds=10)
        assert receiver.alerts("recovered") == []
        daemons.start(**webhook_env(receiver, **watch))
        [recovered] = wait_for(lambda: receiver.alerts("recovered"), 30, "recovered")
        assert "schedule daemon is alive again" in recovered["text"]
        assert len(receiver.alerts("daemon_down")) == 1, "no repeat within ALERT_REPEAT_S"
    finally:
        admin.send_signal(signal.SIGTERM)
        assert admin.wait(timeout=30) == 0
    assert_no_secret(log_path.read_text())


def test_an_unreachable_webhook_leaves_scheduling_on_time(db, daemons, tmp_path):
    # A port that accepts connections and never answers: every POST waits for its whole timeout.
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(128)
    url = f"http://127.0.0.1:{black_hole.getsockname()[1]}{SECRET_PATH}?{SECRET_QUERY}"
    try:
        daemon = daemons.start(
            SCHEDULES_MODULE="tests.alert_app", ALERT_WEBHOOK_URL=url, ALERT_REPEAT_S="0", TEST_FAIL="always"
        )
        enable_flaky(db)
        wait_for(lambda: len(flaky_runs(db)) >= 8, 30, "eight runs")
        runs = sorted(flaky_runs(db), key=lambda r: r["scheduledFor"])[:8]
        # A send in the run path would make each run wait for the 5 s timeout: 5 s late, 35 s for 8 runs.
        # The margins below are for a loaded machine, not for the webhook.
        lateness = [(r["startedAt"] - r["scheduledFor"]).total_seconds() for r in runs]
        assert max(lateness) < 2.5, lateness
        span = (runs[-1]["scheduledFor"] - runs[0]["scheduledFor"]).total_seconds()
        assert span <= 10, f"8 runs took {span}s of occurrences: occurrences were skipped"
        outbox = wait_for(
            lambda: [a for a in db.fetch_all("list_alerts", limit=100) if a["lastError"]], 30, "a delivery to time out"
        )
        assert all(a["status"] == "PENDING" and "timed out" in a["lastError"] for a in outbox)
        wait_for(lambda: "run_failed to http://127.0.0.1:" in daemons.log_of(daemon), 10, "the failure's log line")
        assert_no_secret(daemons.log_of(daemon))
    finally:
        black_hole.close()


def test_pings_start_then_success_or_fail_for_each_cron_occurrence_in_order(db, daemons, receiver):
    daemons.start(SCHEDULES_MODULE="tests.alert_app", TEST_FAIL="odd", TEST_PING_URL=f"{receiver.url}/ping/0f6c-uuid")
    enable_flaky(db)
    wait_for(lambda: len(flaky_runs(db)) >= 4, 30, "four runs")
    db.execute("disable_schedule", id="flaky", now=now())
    wait_for(lambda: db.fetch_one("get_schedule", id="flaky")["lockedAt"] is None, 30, "the last run to end")
    runs = sorted(flaky_runs(db), key=lambda r: r["scheduledFor"])
    expected = [
        p
        for r in runs
        for p in ("/ping/0f6c-uuid/start", "/ping/0f6c-uuid" if r["status"] == "COMPLETED" else "/ping/0f6c-uuid/fail")
    ]
    wait_for(lambda: len(receiver.requests) >= len(expected), 15, "every ping")
    assert [(r.method, r.path) for r in receiver.requests] == [("GET", p) for p in expected]
    assert {r["status"] for r in runs} == {"COMPLETED", "FAILED"}


# -- the decisions, in one process against the real database ------------------------------------------------


@pytest.fixture
def service(db, receiver, monkeypatch):
    settings = Settings.from_env({"ALERT_WEBHOOK_URL": receiver.url + "/hook", "HEALTH_OVERDUE_TOLERANCE_S": "60"})
    service = AlertService(db, settings, "test")  # its thread is not started: the test calls it step by step
    monkeypatch.setattr(alerts, "_service", service)
    return service


def outbox(db) -> list[tuple[str, str]]:
    return [(a["event"], a["body"]) for a in reversed(db.fetch_all("list_alerts", limit=100))]


def test_a_failing_schedule_alerts_once_then_recovers_and_manual_runs_never_alert(db, service, receiver):
    alerts.run_failed(db, "s1", "job.a", 1, "Traceback...\nValueError: first", "CRON")
    alerts.run_failed(db, "s1", "job.a", 2, "ValueError: second", "CRON")  # within ALERT_REPEAT_S: counted, silent
    alerts.run_failed(db, "s1", "job.a", 3, "ValueError: manual", "MANUAL")
    alerts.occurrence_finished(db, "s1", "MANUAL", True)  # a manual success does not end the episode
    alerts.occurrence_finished(db, "s1", "CRON", True)
    alerts.occurrence_finished(db, "s1", "CRON", True)  # fine already: nothing to say
    alerts.run_failed(db, "s1", "job.a", 4, "ValueError: again", "CRON")
    assert [event for event, _ in outbox(db)] == ["run_failed", "recovered", "run_failed"]
    service.deliver_due(now())
    bodies = receiver.alerts()
    assert [(b["event"], b["runId"], b["error"]) for b in bodies] == [
        ("run_failed", 1, "ValueError: first"),
        ("recovered", None, None),
        ("run_failed", 4, "ValueError: again"),
    ]
    assert all(a["status"] == "SENT" for a in db.fetch_all("list_alerts", limit=10))
    service.deliver_due(now())
    assert len(receiver.alerts()) == 3, "a sent alert is not sent again"


def test_a_schedule_that_keeps_failing_repeats_after_alert_repeat_s_with_the_count(db, service):
    t0 = now()

    def fail(run_id: int, after_s: float) -> bool:
        at = t0 + timedelta(seconds=after_s)
        return service.went_wrong(
            "failing:s2",
            Alert(Event.RUN_FAILED, f"run_failed:{run_id}", f"run {run_id} failed", at, "s2", "job.b", run_id, "E"),
            counts=True,
        )

    assert [fail(1, 0), fail(2, 10), fail(3, 20), fail(4, 3599)] == [True, False, False, False]
    assert fail(5, 3601) is True
    assert fail(6, 3602) is False
    texts = [body for _, body in outbox(db)]
    assert len(texts) == 2 and "(4 failures since the last alert)" in texts[1]


def test_the_watchdog_alerts_overdue_and_daemon_down_once_and_recovers(db, service, receiver):
    from scheduling import ScheduleDefinition

    at = now()
    db.execute("insert_schedule", id="late", name="Late", cron="* * * * *", timezone="UTC", now=at)
    db.execute("enable_schedule", id="late", next_run_at=at - timedelta(minutes=10), now=at)
    service.watch(at)
    assert [e for e, _ in outbox(db)] == ["daemon_down"], "with no daemon, overdue schedules are not listed one by one"
    db.insert("register_worker", id="d1", worker_type="schedule_daemon", hostname="h", pid=1, now=at)
    service.watch(at + timedelta(seconds=1))
    service.watch(at + timedelta(seconds=2))  # still overdue: no repeat within ALERT_REPEAT_S
    assert [e for e, _ in outbox(db)] == ["daemon_down", "recovered", "schedule_overdue"]
    db.execute("enable_schedule", id="late", next_run_at=at, now=at)  # no-op: already enabled
    db.execute("disable_schedule", id="late", now=at)
    db.execute(
        "enable_schedule", id="late", next_run_at=ScheduleDefinition("late", "", "", "* * * * *").next_after(at), now=at
    )
    service.watch(at + timedelta(seconds=3))
    events = outbox(db)
    assert [e for e, _ in events] == ["daemon_down", "recovered", "schedule_overdue", "recovered"]
    assert "schedule late runs again" in events[-1][1]


def test_a_run_failed_by_recovery_after_kill_9_alerts_run_failed(db, daemons, receiver):
    env = webhook_env(receiver, TEST_CRON="* * * * * */3")
    victim = daemons.start(**env, TEST_JOB_SECONDS="60")
    enable_flaky(db, "* * * * * */3")
    [running] = wait_for(lambda: flaky_runs(db, "RUNNING"), 30, "the victim's long job")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    daemons.start(**env)  # its recovery fails the orphaned run once LOCK_TIMEOUT_MS has passed
    [alert] = wait_for(lambda: receiver.alerts("run_failed"), 30, "run_failed for the orphaned run")
    assert alert["runId"] == running["id"] and "died" in alert["error"]


def test_queue_mode_alerts_each_failed_run_once_and_pings_start_and_fail(db, daemons, receiver, tmp_path):
    if db.kind == "mysql":
        from queue_mode import skip_locked_problem

        if skip_locked_problem(db.fetch_one("server_version")["version"]):
            pytest.skip("this MySQL server has no SKIP LOCKED")
    env = webhook_env(
        receiver,
        EXECUTION_MODE="queue",
        TEST_FAIL="always",
        ALERT_REPEAT_S="0",
        TEST_PING_URL=f"{receiver.url}/ping/q-uuid",
        TEST_CRON="* * * * * */2",
    )
    daemons.start(**env)
    worker = daemons.start("--worker", JOB_WORKER_POLL_INTERVAL_MS="200", **env)
    try:
        enable_flaky(db, "* * * * * */2")
        wait_for(lambda: len(flaky_runs(db, "FAILED")) >= 2, 30, "two failed queued runs")
        db.execute("disable_schedule", id="flaky", now=now())
        wait_for(lambda: not flaky_runs(db, "QUEUED") and not flaky_runs(db, "RUNNING"), 30, "the queue to drain")
        failed = [r["id"] for r in flaky_runs(db, "FAILED")]
        wait_for(
            lambda: sorted(a["runId"] for a in receiver.alerts("run_failed")) == sorted(failed),
            30,
            "one run_failed per failed run",
        )
        wait_for(lambda: len([r for r in receiver.requests if r.method == "GET"]) >= 2 * len(failed), 15, "the pings")
        pings = [r.path for r in receiver.requests if r.method == "GET"]  # from two processes: counted, not ordered
        assert pings.count("/ping/q-uuid/start") == pings.count("/ping/q-uuid/fail") == len(failed)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert_no_secret(daemons.log_of(worker))


def test_in_queue_mode_no_live_job_worker_is_daemon_down_too(db, receiver, monkeypatch):
    settings = Settings.from_env({"ALERT_WEBHOOK_URL": receiver.url + "/hook", "EXECUTION_MODE": "queue"})
    service = AlertService(db, settings, "test")
    at = now()
    db.insert("register_worker", id="d1", worker_type="schedule_daemon", hostname="h", pid=1, now=at)
    service.watch(at)
    [(event, body)] = outbox(db)
    assert event == "daemon_down" and "no live job worker" in body
    db.insert("register_worker", id="w1", worker_type="job_worker", hostname="h", pid=2, now=at)
    service.watch(at + timedelta(seconds=1))
    assert [e for e, _ in outbox(db)] == ["daemon_down", "recovered"]


def test_manual_runs_never_ping(receiver):
    import pings

    pings.started(receiver.url + "/ping/m", "MANUAL")
    pings.finished(receiver.url + "/ping/m", "MANUAL", False)
    pings.finished(receiver.url + "/ping/c", "CRON", True)  # pings go out in order: the manual ones would come first
    wait_for(lambda: receiver.requests, 10, "the cron ping")
    assert [r.path for r in receiver.requests] == ["/ping/c"]


def test_two_watchdogs_racing_on_one_database_alert_daemon_down_once(db, database_url, receiver):
    import threading

    from db import Database

    settings = Settings.from_env({"ALERT_WEBHOOK_URL": receiver.url + "/hook"})
    services = [AlertService(Database.from_url(database_url), settings, f"watchdog-{i}") for i in range(2)]
    start, at, lost = threading.Barrier(2), now(), []

    def race(service: AlertService, offset_us: int) -> None:
        start.wait()
        for step in range(15):
            try:  # the two see different instants, so their alerts' keys differ: only the lock can keep one
                service.watch(at + timedelta(milliseconds=step, microseconds=offset_us))
            except Exception as exc:  # noqa: BLE001 - a deadlock victim is a lost decision: the test reports it
                lost.append(f"step {step}: {exc}")
        service.db.close()

    threads = [threading.Thread(target=race, args=(s, 300 * i)) for i, s in enumerate(services)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert lost == []
    assert [e for e, _ in outbox(db)] == ["daemon_down"]
    [state] = [r for r in db.fetch_all("active_alert_states") if r["subject"] == "daemon_down"]
    assert state["episode"] == 1


def test_concurrent_failures_of_one_schedule_are_all_counted_and_alerted_once(db, database_url, receiver):
    import threading

    from db import Database

    settings = Settings.from_env({"ALERT_WEBHOOK_URL": receiver.url + "/hook"})
    services = [AlertService(Database.from_url(database_url), settings, f"decider-{i}") for i in range(4)]
    start, at, lost = threading.Barrier(len(services)), now(), []

    def fail(service: AlertService, worker: int) -> None:
        start.wait()
        for step in range(25):
            run_id = worker * 100 + step
            alert = Alert(Event.RUN_FAILED, f"run_failed:{run_id}", "boom", at, "s1", "j", run_id, "boom")
            try:
                service.went_wrong("failing:s1", alert, counts=True)
            except Exception as exc:  # noqa: BLE001 - a deadlock victim's failure would go uncounted
                lost.append(f"{service.label} run {run_id}: {exc}")
        service.db.close()

    threads = [threading.Thread(target=fail, args=(s, i)) for i, s in enumerate(services)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert lost == []
    assert [e for e, _ in outbox(db)] == ["run_failed"]  # the first failure alerts, ALERT_REPEAT_S holds the rest
    assert db.fetch_one("get_alert_state", subject="failing:s1")["pending"] == 4 * 25 - 1


def test_a_slow_webhook_gets_each_alert_once_from_two_senders(db, database_url, receiver, monkeypatch):
    import threading

    from db import Database

    monkeypatch.setattr(alerts, "SEND_LEASE", timedelta(seconds=1.5))  # longer than one POST, shorter than three
    receiver.delay_s = 0.8
    settings = Settings.from_env({"ALERT_WEBHOOK_URL": receiver.url + "/hook", "HEARTBEAT_INTERVAL_MS": "30000"})
    first, second = (AlertService(Database.from_url(database_url), settings, f"sender-{i}") for i in range(2))
    for n in range(3):
        first.queue(
            first.db, Alert(Event.RUN_FAILED, f"run_failed:{n}", f"run {n} failed", now(), "s1", "j", n, "boom")
        )
    round_start = first.db.now()
    sending = threading.Thread(target=first.deliver_due, args=(round_start,))
    sending.start()
    while sending.is_alive():  # the second sender tries all along, as its alert thread would
        second.deliver_due(second.db.now())
        sending.join(timeout=0.1)
    second.deliver_due(second.db.now() + timedelta(seconds=5))  # whatever is left, sent once
    first.db.close()
    second.db.close()
    assert sorted(a["runId"] for a in receiver.alerts("run_failed")) == [0, 1, 2]


def test_alerts_for_webhooks_this_process_does_not_know_neither_starve_nor_wake_its_sender(db, service, receiver):
    at = now()
    for n in range(60):  # queued by processes with another ALERT_WEBHOOK_URL, whose senders are away
        db.execute(
            "insert_alert",
            dedup_key=f"elsewhere:{n}",
            target="0123456789abcdef",
            event="run_failed",
            schedule_id="s9",
            run_id=None,
            body="{}",
            now=at - timedelta(seconds=1),
        )
    assert service.seconds_until_next_delivery(at) is None  # nothing of ours is due: no polling
    alerts.run_failed(db, "s1", "job.a", 1, "ValueError: mine", "CRON")
    service.deliver_due(db.now())
    assert [a["runId"] for a in receiver.alerts("run_failed")] == [1]
    assert service.seconds_until_next_delivery(at) is None

    db.execute(
        "insert_alert",
        dedup_key="stale",
        target="0123456789abcdef",
        event="run_failed",
        schedule_id="s9",
        run_id=None,
        body="{}",
        now=at - alerts.GIVE_UP_AFTER - alerts.SEND_LEASE - timedelta(seconds=1),
    )
    service.housekeep(at)
    statuses = collections.Counter(
        (a["dedupKey"] == "stale", a["status"]) for a in db.fetch_all("list_alerts", limit=100)
    )
    assert statuses == {(True, "GAVE_UP"): 1, (False, "PENDING"): 60, (False, "SENT"): 1}


@pytest.mark.parametrize("bad", [" ", "\t", "\n", "\x01", "\x7f"])
def test_a_webhook_url_with_whitespace_or_control_characters_is_refused_without_showing_it(bad):
    from errors import ConfigError

    url = f"http://127.0.0.1:9/services/T0{bad}SECRET?token=abc"
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"ALERT_WEBHOOK_URL": f"http://127.0.0.1:9/ok,{url}"})
    assert "ALERT_WEBHOOK_URL" in str(raised.value) and "URL number 2" in str(raised.value)
    assert "SECRET" not in str(raised.value) and "token" not in str(raised.value)


def test_a_send_that_fails_before_connecting_reports_no_part_of_the_url():
    error = alerts.post("http://127.0.0.1:9/services/T0 SECRET?token=abc", b"{}")
    assert error is not None and "SECRET" not in error and "token" not in error


def test_a_skip_batch_alerts_once_naming_three_schedules_and_only_if_the_skip_commits(db, service, receiver):
    from occurrence import skipped_record

    at = now()
    due = at - timedelta(hours=1)
    for n in range(5):
        db.execute("insert_schedule", id=f"s{n}", name=f"S{n}", cron="0 * * * *", timezone="UTC", now=at)
    records = [skipped_record(f"s{n}", due, due, "no schedule daemon was running", "w1", at) for n in range(5)]
    with pytest.raises(RuntimeError), db.transaction():
        db.execute_many("insert_skip_record", records)
        alerts.occurrences_missed(db, records)
        raise RuntimeError("the process dies before COMMIT")
    assert outbox(db) == []  # neither the skip nor its alert
    with db.transaction():
        db.execute_many("insert_skip_record", records)
        alerts.occurrences_missed(db, records)
    service.deliver_due(db.now())
    [missed] = receiver.alerts("occurrence_missed")
    assert missed["text"] == "5 schedules skipped: s0, s1, s2 and 2 more" and missed["scheduleId"] is None


def test_a_recovery_whose_commit_answer_is_lost_still_alerts_its_failed_run(db, database_url, receiver, monkeypatch):
    if db.kind != "mysql":
        pytest.skip("SQLite has no connection to lose")
    import urllib.parse

    from db import Database
    from errors import DatabaseUnavailable
    from runner import recover
    from tests.fault_proxy import FaultProxy

    at = now()
    db.execute("insert_schedule", id="s1", name="S1", cron="* * * * *", timezone="UTC", now=at)
    db.execute(
        "register_worker",
        id="dead-1",
        worker_type="schedule_daemon",
        hostname="h",
        pid=1,
        now=at - timedelta(minutes=5),
    )
    run_id = db.insert(
        "insert_run",
        job_name="job.a",
        trigger="CRON",
        schedule_id="s1",
        scheduled_for=at,
        batch_id=None,
        attempt=1,
        status="RUNNING",
        worker_id="dead-1",
        queued_at=None,
        started_at=at,
        completed_at=None,
        duration_ms=None,
        error=None,
        now=at,
    )
    parts = urllib.parse.urlsplit(database_url)
    proxy = FaultProxy(parts.hostname, parts.port)
    cut = Database.from_url(proxy.url(parts.path.strip("/")))
    try:
        settings = Settings.from_env({"ALERT_WEBHOOK_URL": receiver.url + "/hook"})
        monkeypatch.setattr(alerts, "_service", AlertService(cut, settings, "recovery"))
        proxy.cut_at_commit(b"SET status = 'FAILED', completedAt = ")  # the COMMIT lands, its answer is lost
        with pytest.raises(DatabaseUnavailable):
            recover(cut, at, timedelta(seconds=60), "the-test")
        assert proxy.cuts == 1 and db.fetch_one("get_run", id=run_id)["status"] == "FAILED"
        assert [(a["event"], a["runId"]) for a in db.fetch_all("list_alerts", limit=10)] == [("run_failed", run_id)]
    finally:
        cut.close()
        proxy.close()


def test_a_failed_runs_alert_during_a_short_database_outage_is_retried_not_lost(
    db, database_url, receiver, monkeypatch
):
    if db.kind != "mysql":
        pytest.skip("SQLite has no connection to lose")
    import urllib.parse

    from db import Database
    from tests.fault_proxy import FaultProxy

    parts = urllib.parse.urlsplit(database_url)
    proxy = FaultProxy(parts.hostname, parts.port)
    cut = Database.from_url(proxy.url(parts.path.strip("/")))
    try:
        settings = Settings.from_env({"ALERT_WEBHOOK_URL": receiver.url + "/hook"})
        monkeypatch.setattr(alerts, "_service", AlertService(cut, settings, "runner"))
        cut.fetch_one("get_alert_state", subject="failing:s1")  # a connection through the proxy, about to be cut
        proxy.down_for = 1.0
        proxy.go_down()  # the run's own write is stored; the alert's transaction meets the outage
        alerts.run_failed(cut, "s1", "job.a", 7, "ValueError: x", "CRON")
        assert [(a["event"], a["runId"]) for a in db.fetch_all("list_alerts", limit=10)] == [("run_failed", 7)]
    finally:
        cut.close()
        proxy.close()


def test_prune_history_deletes_old_sent_alerts_and_keeps_pending_ones(db):
    from jobs import JobContext
    from jobs.maintenance import prune_history

    at = now()
    for key, age_days, status in (("old-sent", 40, "SENT"), ("old-pending", 40, "PENDING"), ("new-sent", 1, "SENT")):
        db.execute(
            "insert_alert",
            dedup_key=key,
            target="t",
            event="run_failed",
            schedule_id=None,
            run_id=None,
            body="{}",
            now=at - timedelta(days=age_days),
        )
        if status == "SENT":
            db.execute("alert_sent", id=db.fetch_all("list_alerts", limit=1)[0]["id"], now=at)
    run_id = db.insert(
        "insert_run",
        job_name="maintenance.prune_history",
        trigger="CRON",
        schedule_id=None,
        scheduled_for=at,
        batch_id=None,
        attempt=1,
        status="RUNNING",
        worker_id=None,
        queued_at=None,
        started_at=at,
        completed_at=None,
        duration_ms=None,
        error=None,
        now=at,
    )
    prune_history(JobContext(run_id, "maintenance.prune_history", None, at, "CRON", 1, db, lambda level, message: None))
    assert sorted(a["dedupKey"] for a in db.fetch_all("list_alerts", limit=10)) == ["new-sent", "old-pending"]


@pytest.mark.parametrize("url", ["ftp://hc-ping.com/x", "hc-ping.com/x", "https://", "https://host:99999/x", 42])
def test_a_bad_ping_url_is_a_definition_problem_naming_the_schedule_and_field(url):
    from jobs import JobRegistry
    from scheduling import ScheduleDefinition, schedule_problems

    registry = JobRegistry()
    registry.job(group="g", name="g.job")(lambda ctx: None)
    problems = schedule_problems([ScheduleDefinition("pinged", "P", "", "* * * * *", ping_url=url)], registry)
    assert len(problems) == 1 and problems[0].startswith("schedule 'pinged': field 'ping_url':"), problems
    assert (
        schedule_problems(
            [ScheduleDefinition("pinged", "P", "", "* * * * *", ping_url="https://hc-ping.com/5f1c")], registry
        )
        == []
    )


def test_an_occurrence_skipped_by_the_overlap_policy_alerts_occurrence_missed(db, daemons, receiver):
    daemons.start(**webhook_env(receiver, TEST_OVERLAP="SKIP", TEST_JOB_SECONDS="2.5"))
    enable_flaky(db)
    missed = wait_for(lambda: receiver.alerts("occurrence_missed"), 30, "occurrence_missed")
    assert "previous run still running (overlap policy SKIP)" in missed[0]["text"]
    skips = {
        r["id"]
        for r in db.fetch_all("list_runs", status="SKIPPED", schedule_id="flaky", job_name="*", before=None, limit=100)
    }
    assert missed[0]["runId"] in skips
