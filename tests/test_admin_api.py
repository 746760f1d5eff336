"""The admin API served for real on a free port, on both backends: endpoints, auth, bad input."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta

import jwt
import pytest

import admin_server
from admin_server import ROUTES, AdminAPI, Authenticator, bind, make_server
from db import Database
from runner import utcnow
from scheduling import load_app
from settings import Settings
from tests.admin_client import ADMIN_TOKEN, JWT_SECRET, AdminServer, admin_jwt
from tests.conftest import ROOT, operator_connection, operator_sql, wait_for
from tests.fault_proxy import FaultProxy


@pytest.fixture
def admin(database_url):
    server = AdminServer(database_url)
    yield server
    server.close()


def snapshot(db):
    """Everything a request could change."""
    return (
        db.fetch_all("list_schedules"),
        db.fetch_all("list_runs", status=None, schedule_id=None, job_name=None, before=None, limit=10_000),
        db.fetch_all("list_audit", before=None, limit=10_000),
        db.fetch_all("list_workers"),
    )


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- schedules -------------------------------------------------------------------------------------------


def test_list_merges_code_and_database_state(admin):
    response = admin.request("GET", "/admin/schedules")
    assert response.status == 200
    schedules = {s["id"]: s for s in response.body["schedules"]}
    assert sorted(schedules) == ["daily-full-sync", "feed-refresh", "hourly-matching"]  # production: no dev-quick-test
    daily = schedules["daily-full-sync"]
    assert daily["name"] == "Daily Full Sync" and daily["cron"] == "0 2 * * *" and daily["executionMode"] == "ALL_JOBS"
    assert daily["cronDescription"] == "At 02:00 AM"
    assert daily["enabled"] is False and daily["nextRunAt"] is None and daily["running"] is False
    times = [parse_time(t) for t in daily["nextRunTimes"]]
    assert len(times) == 5 and all(t.hour == 2 and t.minute == 0 for t in times) and times == sorted(times)
    assert schedules["feed-refresh"]["jobGroup"] == "feed" and schedules["feed-refresh"]["orphaned"] is False


def test_list_is_served_with_an_etag_and_changes_whenever_a_row_changes(admin):
    first = admin.request("GET", "/admin/schedules")
    etag = first.headers["ETag"]
    assert first.status == 200 and etag and first.headers["Cache-Control"] == "no-cache"
    unchanged = admin.request("GET", "/admin/schedules", headers={"If-None-Match": etag})
    assert unchanged.status == 304 and unchanged.raw == b"" and unchanged.headers["ETag"] == etag
    # A change made behind the server's back (another process, an operator's SQL) shows at once.
    operator_sql(admin.db, "UPDATE JobSchedule SET runCount = 7 WHERE id = 'feed-refresh'")
    changed = admin.request("GET", "/admin/schedules", headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag
    assert {s["id"]: s["runCount"] for s in changed.body["schedules"]}["feed-refresh"] == 7
    stale = admin.request("GET", "/admin/schedules", headers={"If-None-Match": '"not-it"'})
    assert stale.status == 200 and stale.body == changed.body


def test_concurrent_list_requests_share_reads_yet_none_is_answered_from_before_it_was_sent(admin):
    committed = 0  # the last runCount an operator's transaction has committed
    stopping = threading.Event()

    def operator() -> None:
        nonlocal committed
        conn = operator_connection(admin.db)
        try:
            while not stopping.is_set():
                conn.cursor().execute(f"UPDATE JobSchedule SET runCount = {committed + 1} WHERE id = 'feed-refresh'")
                committed += 1
        finally:
            conn.close()

    stale, answered = [], []

    def reader() -> None:
        for _ in range(20):
            floor = committed
            response = admin.request("GET", "/admin/schedules")
            seen = {s["id"]: s["runCount"] for s in response.body["schedules"]}["feed-refresh"]
            answered.append(response.status)
            if seen < floor:
                stale.append((floor, seen))

    writer = threading.Thread(target=operator)
    writer.start()
    wait_for(lambda: committed > 0, 10, "the operator's first update")
    reads_before = admin.db.statements_issued
    readers = [threading.Thread(target=reader) for _ in range(10)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(timeout=60)
    reads = admin.db.statements_issued - reads_before
    stopping.set()
    writer.join(timeout=10)
    assert answered == [200] * 200 and stale == []
    assert reads < 200  # requests in flight together were answered from one read


def test_listed_run_times_move_on_once_the_first_of_them_has_passed(database_url):
    server = AdminServer(database_url, SCHEDULES_MODULE="tests.sample_app", APP_ENV="test")
    try:

        def first_upcoming():
            listed = server.request("GET", "/admin/schedules").body["schedules"]
            return min(parse_time(s["nextRunTimes"][0]) for s in listed if s["nextRunTimes"])

        before = first_upcoming()
        wait_for(lambda: utcnow() > before, 5, "the first listed run time to pass")
        assert first_upcoming() > before
    finally:
        server.close()


def test_rows_no_longer_in_code_are_listed_as_orphaned_and_never_runnable(admin):
    admin.db.execute(
        "insert_schedule", id="old-report", name="Old Report", cron="0 5 * * *", timezone="UTC", now=utcnow()
    )
    listed = {s["id"]: s for s in admin.request("GET", "/admin/schedules").body["schedules"]}
    assert listed["old-report"]["orphaned"] is True and listed["old-report"]["nextRunTimes"] == []
    before = snapshot(admin.db)
    trigger = admin.request("POST", "/admin/schedules/old-report/trigger")
    enable = admin.request("PATCH", "/admin/schedules/old-report", {"enabled": True})
    assert (trigger.status, enable.status) == (409, 409)
    assert trigger.body["error"]["code"] == "orphaned"
    assert snapshot(admin.db) == before


def test_get_one_schedule_and_404_for_an_unknown_one(admin):
    assert admin.request("GET", "/admin/schedules/feed-refresh").body["schedule"]["id"] == "feed-refresh"
    missing = admin.request("GET", "/admin/schedules/nope")
    assert missing.status == 404 and missing.body == {"error": {"code": "not_found", "message": "no schedule 'nope'"}}


def test_enable_computes_the_next_occurrence_from_now_and_is_audited(admin):
    before = utcnow()
    response = admin.request("PATCH", "/admin/schedules/feed-refresh", {"enabled": True, "note": "launch day"})
    assert response.status == 200
    schedule = response.body["schedule"]
    next_run = parse_time(schedule["nextRunAt"])
    assert schedule["enabled"] is True and before < next_run <= before + timedelta(minutes=15)
    assert next_run.minute % 15 == 0 and next_run.second == 0
    [entry] = admin.request("GET", "/admin/audit").body["entries"]
    assert (entry["actor"], entry["action"], entry["scheduleId"], entry["note"]) == (
        "admin-token",
        "enable",
        "feed-refresh",
        "launch day",
    )
    assert entry["remoteAddress"] == "127.0.0.1"
    disabled = admin.request("PATCH", "/admin/schedules/feed-refresh", {"enabled": False}).body["schedule"]
    assert disabled["enabled"] is False and disabled["nextRunAt"] is None
    assert [e["action"] for e in admin.request("GET", "/admin/audit").body["entries"]] == ["disable", "enable"]


def test_enabling_an_enabled_schedule_changes_nothing(admin):
    first = admin.request("PATCH", "/admin/schedules/feed-refresh", {"enabled": True}).body["schedule"]
    second = admin.request("PATCH", "/admin/schedules/feed-refresh", {"enabled": True}).body["schedule"]
    assert first["nextRunAt"] == second["nextRunAt"]
    assert len(admin.request("GET", "/admin/audit").body["entries"]) == 1


def test_run_now_runs_inline_as_manual_without_moving_next_run_even_when_disabled(admin):
    response = admin.request("POST", "/admin/schedules/feed-refresh/trigger", {"note": "testing before enabling"})
    assert response.status == 200
    body = response.body
    assert body["message"] == "Schedule triggered"
    assert (body["jobsExecuted"], body["succeeded"], body["failed"]) == (3, 3, 0)
    assert [r["jobName"] for r in body["runs"]] == [
        "matching.refresh_candidate_pool",
        "matching.update_match_scores",
        "feed.refresh_feeds",
    ]
    assert all(r["trigger"] == "MANUAL" and r["status"] == "COMPLETED" for r in body["runs"])
    row = admin.db.fetch_one("get_schedule", id="feed-refresh")
    assert row["enabled"] in (0, False) and row["nextRunAt"] is None and row["lockedAt"] is None
    assert row["runCount"] == 1
    entry = admin.request("GET", "/admin/audit").body["entries"][0]
    assert (entry["action"], entry["note"]) == ("trigger", "testing before enabling")
    worker = admin.db.fetch_all("list_workers")[0]
    assert (worker["workerType"], worker["status"]) == ("admin_server", "STOPPED")


def test_run_now_is_refused_with_409_while_the_schedule_runs(admin):
    admin.db.execute("claim_schedule_now", id="feed-refresh", owner="daemon-42", now=utcnow())
    before = snapshot(admin.db)
    response = admin.request("POST", "/admin/schedules/feed-refresh/trigger")
    assert response.status == 409 and "daemon-42" in response.body["error"]["message"]
    assert snapshot(admin.db) == before
    listed = admin.request("GET", "/admin/schedules/feed-refresh").body["schedule"]
    assert listed["running"] is True and listed["lockedBy"] == "daemon-42"


# -- history, runs, workers, health --------------------------------------------------------------------


def test_history_is_newest_first_and_paginates(admin):
    for _ in range(2):
        admin.request("POST", "/admin/schedules/hourly-matching/trigger")
    page = admin.request("GET", "/admin/schedules/hourly-matching/history?limit=3").body
    assert [r["jobName"] for r in page["runs"]] == [
        "matching.update_match_scores",
        "matching.refresh_candidate_pool",
        "matching.update_match_scores",
    ]
    assert page["runs"][0]["id"] > page["runs"][1]["id"] > page["runs"][2]["id"]
    rest = admin.request("GET", f"/admin/schedules/hourly-matching/history?limit=3&before={page['nextBefore']}").body
    assert len(rest["runs"]) == 1 and rest["nextBefore"] is None
    assert admin.request("GET", "/admin/schedules/feed-refresh/history").body == {"runs": [], "nextBefore": None}
    assert admin.request("GET", "/admin/schedules/nope/history").status == 404


def test_jobs_filter_by_status_schedule_and_job_and_show_logs(admin):
    admin.request("POST", "/admin/schedules/hourly-matching/trigger")
    admin.request("POST", "/admin/schedules/feed-refresh/trigger")
    feed = admin.request("GET", "/admin/jobs?scheduleId=feed-refresh").body["runs"]
    assert len(feed) == 3 and {r["scheduleId"] for r in feed} == {"feed-refresh"}
    named = admin.request("GET", "/admin/jobs?jobName=feed.refresh_feeds&status=COMPLETED").body["runs"]
    assert [r["jobName"] for r in named] == ["feed.refresh_feeds"]
    assert admin.request("GET", "/admin/jobs?status=FAILED").body["runs"] == []
    detail = admin.request("GET", f"/admin/jobs/{named[0]['id']}").body
    assert detail["run"]["id"] == named[0]["id"] and [line["message"] for line in detail["logs"]] == ["feeds refreshed"]
    assert admin.request("GET", "/admin/jobs/999999").status == 404


def test_workers_show_heartbeat_age_and_flag_stale_ones(admin):
    now = utcnow()
    admin.db.insert("register_worker", id="fresh", worker_type="schedule_daemon", hostname="a", pid=1, now=now)
    admin.db.insert(
        "register_worker", id="stale", worker_type="job_worker", hostname="b", pid=2, now=now - timedelta(hours=1)
    )
    workers = {w["id"]: w for w in admin.request("GET", "/admin/workers").body["workers"]}
    assert workers["fresh"]["alive"] is True and workers["fresh"]["heartbeatAgeSeconds"] < 60
    assert workers["stale"]["alive"] is False and workers["stale"]["heartbeatAgeSeconds"] >= 3600


def test_healthz_needs_no_token(admin):
    response = admin.request("GET", "/healthz", token=None)
    assert (response.status, response.body) == (200, {"status": "ok"})


def test_connection_threads_end_once_idle_and_the_server_still_answers(database_url, monkeypatch):
    monkeypatch.setattr(admin_server, "WORKER_IDLE_S", 0.5)
    server = AdminServer(database_url)
    try:
        clients = [threading.Thread(target=server.request, args=("GET", "/healthz")) for _ in range(8)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=30)
        wait_for(lambda: not server.server.workers, 10, "the idle connection threads to end")
        assert server.request("GET", "/admin/schedules").status == 200
    finally:
        server.close()


def test_a_connection_killed_while_its_thread_idles_is_replaced_without_an_error(database_url):
    if not database_url.startswith("mysql"):
        pytest.skip("only a database server can end a connection behind the client's back")
    server = AdminServer(database_url)
    try:
        assert server.request("GET", "/admin/schedules").status == 200
        wait_for(lambda: len(server.server.idle_workers) == 1, 10, "the connection's thread to be idle")
        conn = operator_connection(server.db)
        try:
            cursor = conn.cursor()
            cursor.execute(
                "SELECT id FROM information_schema.PROCESSLIST WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
            killed = [row[0] for row in cursor.fetchall()]
            for connection_id in killed:
                cursor.execute(f"KILL {connection_id}")
        finally:
            conn.close()
        assert killed  # the idle thread's connection was among them
        response = server.request("GET", "/admin/schedules")
        assert response.status == 200 and len(response.body["schedules"]) == 3
    finally:
        server.close()


def test_list_requests_during_a_database_outage_all_get_503_and_the_list_returns_with_the_database(database_url):
    if not database_url.startswith("mysql"):
        pytest.skip("SQLite has no connection to lose")
    parts = urllib.parse.urlsplit(database_url)
    proxy = FaultProxy(parts.hostname, parts.port)
    server = AdminServer(proxy.url(parts.path.strip("/")))
    try:
        assert server.request("GET", "/admin/schedules").status == 200  # its thread keeps a connection
        proxy.down_for = 600
        proxy.go_down()  # every connection cut, new ones refused, until down_until is cleared below
        answers = []
        clients = [
            threading.Thread(target=lambda: answers.append(server.request("GET", "/admin/schedules")))
            for _ in range(10)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=60)
        assert [(a.status, a.body["error"]["code"]) for a in answers] == [(503, "database_unavailable")] * 10
        proxy.down_until = 0.0
        response = server.request("GET", "/admin/schedules")
        assert response.status == 200 and len(response.body["schedules"]) == 3
    finally:
        server.close()
        proxy.close()


def test_healthz_is_503_when_the_database_does_not_answer():
    unreachable = Database.from_url("mysql://u:p@127.0.0.1:1/none")
    api = AdminAPI(unreachable, load_app("definitions", "production"), Settings.from_env({}))
    server = bind("127.0.0.1", 0, api, Authenticator(ADMIN_TOKEN, None))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/healthz", timeout=30)
        assert error.value.code == 503 and b"database_unavailable" in error.value.read()
    finally:
        server.shutdown()
        server.server_close()


def test_page_is_served_without_a_token_and_holds_no_data(admin):
    response = admin.request("GET", "/admin", token=None)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")
    page = response.raw.decode()
    assert "Missed Run Policy (SKIP)" in page and "sessionStorage" in page
    assert "feed-refresh" not in page and "http://" not in page and "https://" not in page


def test_openapi_describes_every_route(admin):
    spec = admin.request("GET", "/admin/openapi.json").body
    assert spec["openapi"].startswith("3.")
    for method, pattern, _, _ in ROUTES:
        path = (
            pattern.replace(r"\.", ".").replace("(?P<id>[^/]+)", "{id}").replace("(?P<run_id>[0-9]{1,19})", "{runId}")
        )
        assert method.lower() in spec["paths"][path], (method, path)


# -- authentication ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token, status, fragment",
    [
        (None, 401, "send Authorization"),
        ("wrong-token", 401, "not valid"),
        (admin_jwt(expires_in=-60), 401, "expired"),
        (admin_jwt(role="USER"), 403, "role is not ADMIN"),
        (jwt.encode({"sub": "eve", "role": "ADMIN", "exp": 9999999999}, None, algorithm="none"), 401, "not valid"),
        (admin_jwt(algorithm="HS512"), 401, "not valid"),
        (admin_jwt(secret="another-secret-" + "x" * 64), 401, "not valid"),
        (jwt.encode({"sub": "bob", "role": "ADMIN"}, JWT_SECRET, algorithm="HS256"), 401, "not valid"),
    ],
)
def test_bad_credentials_are_refused(admin, token, status, fragment):
    before = snapshot(admin.db)
    for method, path, body in [
        ("GET", "/admin/schedules", None),
        ("PATCH", "/admin/schedules/feed-refresh", {"enabled": True}),
        ("POST", "/admin/schedules/feed-refresh/trigger", None),
        ("GET", "/admin/openapi.json", None),
    ]:
        response = admin.request(method, path, body, token=token)
        assert response.status == status and fragment in response.body["error"]["message"], (method, path)
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert snapshot(admin.db) == before


def test_admin_jwt_and_admin_token_are_accepted_and_audited_by_name(admin):
    assert admin.request("GET", "/admin/schedules", token=ADMIN_TOKEN).status == 200
    response = admin.request(
        "PATCH", "/admin/schedules/feed-refresh", {"enabled": True}, token=admin_jwt(sub="alice@example.com")
    )
    assert response.status == 200
    assert admin.request("GET", "/admin/audit").body["entries"][0]["actor"] == "alice@example.com"


def test_tokens_never_reach_the_log_and_each_request_is_one_line(admin, caplog):
    token = admin_jwt()
    with caplog.at_level(logging.INFO, logger="admin"):
        admin.request("GET", "/admin/schedules?limit=oops", token=token)
        admin.request("GET", "/admin/workers", token=ADMIN_TOKEN)
        admin.request("GET", "/admin/workers", token="a-wrong-token-guess")
    lines = [r.getMessage() for r in caplog.records if r.name == "admin"]
    assert (
        ADMIN_TOKEN not in "\n".join(lines)
        and token not in "\n".join(lines)
        and "a-wrong-token-guess" not in "\n".join(lines)
    )
    assert [line.split()[1:4] for line in lines] == [
        ["GET", "/admin/schedules", "400"],
        ["GET", "/admin/workers", "200"],
        ["GET", "/admin/workers", "401"],
    ]


def test_refuses_to_start_on_a_public_address_without_auth(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "admin_server.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "HOST": "0.0.0.0",
            "PORT": "0",
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        },
    )
    assert result.returncode == 1
    assert "set ADMIN_TOKEN" in result.stderr and "JWT_SECRET" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_on_loopback_without_auth_a_one_off_token_is_written_to_a_private_file(tmp_path, database_url):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        settings = Settings.from_env({"DATABASE_URL": database_url, "PORT": "0"})
        server = make_server(settings, Database.from_url(database_url), load_app("definitions", "development"))
        server.server_close()
    finally:
        os.chdir(cwd)
    token_file = tmp_path / ".admin-token"
    assert len(token_file.read_text().strip()) >= 30 and oct(token_file.stat().st_mode & 0o777) == "0o600"


# -- bad input: a JSON error, and nothing changes ------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, kwargs, status, fragment",
    [
        ("GET", "/nope", {}, 404, "no route /nope"),
        ("GET", "/admin/schedules/a/b/c", {}, 404, "no route"),
        ("DELETE", "/admin/schedules/feed-refresh", {}, 405, "DELETE is not allowed"),
        ("POST", "/admin/schedules", {}, 405, "POST is not allowed"),
        ("PATCH", "/admin/schedules/feed-refresh", {"raw": b"{not json"}, 400, "not valid JSON"),
        ("PATCH", "/admin/schedules/feed-refresh", {"raw": b""}, 400, "must be a JSON object"),
        ("PATCH", "/admin/schedules/feed-refresh", {"body": [True]}, 400, "must be a JSON object"),
        (
            "PATCH",
            "/admin/schedules/feed-refresh",
            {"body": {"enabled": "yes"}},
            400,
            "field 'enabled' must be a JSON boolean",
        ),
        (
            "PATCH",
            "/admin/schedules/feed-refresh",
            {"body": {"enabled": 1}},
            400,
            "field 'enabled' must be a JSON boolean",
        ),
        (
            "PATCH",
            "/admin/schedules/feed-refresh",
            {"body": {"enabled": True, "cron": "* * * * *"}},
            400,
            "schedules are defined in code",
        ),
        (
            "PATCH",
            "/admin/schedules/feed-refresh",
            {"body": {"enabled": True, "colour": "red"}},
            400,
            "field 'colour' cannot be set",
        ),
        ("PATCH", "/admin/schedules/feed-refresh", {"body": {"note": "x"}}, 400, "field 'enabled' is required"),
        ("PATCH", "/admin/schedules/feed-refresh", {"body": {"enabled": True, "note": "x" * 501}}, 400, "at most 500"),
        (
            "PATCH",
            "/admin/schedules/feed-refresh",
            {"raw": b'{"enabled": true, "note": "' + b"x" * 70_000 + b'"}'},
            413,
            "limit is 65536",
        ),
        ("PATCH", "/admin/schedules/unknown", {"body": {"enabled": True}}, 404, "no schedule 'unknown'"),
        (
            "POST",
            "/admin/schedules/feed-refresh/trigger",
            {"body": {"force": True}},
            400,
            "field 'force' cannot be set",
        ),
        ("POST", "/admin/schedules/unknown/trigger", {}, 404, "no schedule 'unknown'"),
        ("GET", "/admin/jobs?status=DONE", {}, 400, "query parameter 'status': must be one of"),
        ("GET", "/admin/jobs?limit=0", {}, 400, "query parameter 'limit'"),
        ("GET", "/admin/jobs?limit=abc", {}, 400, "query parameter 'limit'"),
        ("GET", "/admin/jobs?before=-1", {}, 400, "query parameter 'before'"),
        ("GET", "/admin/jobs?colour=red", {}, 400, "unknown query parameter 'colour'"),
        ("GET", "/admin/jobs?limit=1&limit=2", {}, 400, "more than once"),
        ("GET", "/admin/schedules?x=1", {}, 400, "unknown query parameter 'x'"),
        ("GET", "/admin/jobs/notanumber", {}, 404, "no route"),
    ],
)
def test_bad_input_is_a_json_error_and_changes_nothing(admin, method, path, kwargs, status, fragment):
    before = snapshot(admin.db)
    response = admin.request(method, path, **kwargs)
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.body) == {"error"} and set(response.body["error"]) == {"code", "message"}
    assert fragment in response.body["error"]["message"]
    if status == 405:
        assert "GET" in response.headers["Allow"]
    assert snapshot(admin.db) == before
