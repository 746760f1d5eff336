"""The database layer on both backends: URLs, migrations, UTC datetimes, reconnects, the seeds' SQL."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from db import ColumnLimit, Database, Unit, fit_column, load_migrations, parse_database_url, redact_url, utc_ms
from errors import ConfigError, Conflict, DatabaseBusy, DatabaseUnavailable, ValueRejected
from tests.conftest import operator_connection, operator_sql

NOW = datetime(2026, 1, 10, 2, 0, 0, 123456, tzinfo=timezone.utc)


def test_sqlite_urls_relative_and_absolute():
    assert parse_database_url("sqlite:///schedules.db") == ("sqlite", {"path": "schedules.db"})
    assert parse_database_url("sqlite:////var/data/s.db") == ("sqlite", {"path": "/var/data/s.db"})


def test_mysql_url_with_escaped_password():
    kind, params = parse_database_url("mysql://root:p%40ss@db.internal:3307/railway")
    assert kind == "mysql"
    assert params == {"host": "db.internal", "port": 3307, "user": "root", "password": "p@ss", "database": "railway"}


@pytest.mark.parametrize(
    "url", ["postgres://x@h/db", "sqlite://", "mysql://host-without-db", "mysql://u:pw@h:notaport/db", "nonsense"]
)
def test_malformed_url_is_one_clear_error_without_the_password(url):
    with pytest.raises(ConfigError) as error:
        parse_database_url(url)
    assert "DATABASE_URL" in str(error.value) and "pw@" not in str(error.value)


def test_redacted_url_hides_password():
    assert redact_url("mysql://root:secret@host:3306/db") == "mysql://root:***@host:3306/db"


def test_migrations_are_recorded_and_idempotent(db):
    version = max(load_migrations(open("schema.sql").read()))
    assert db.migrate() == version  # the fixture migrated already: nothing more to do
    assert db.fetch_one("get_schema_version")["version"] == version
    db.execute("insert_schedule", id="a", name="A", cron="* * * * *", timezone="UTC", now=NOW)
    assert db.migrate() == version
    assert db.fetch_one("get_schedule", id="a")["name"] == "A"


def test_times_round_trip_as_aware_utc_to_the_millisecond(db):
    db.execute("insert_schedule", id="a", name="A", cron="* * * * *", timezone="UTC", now=NOW)
    row = db.fetch_one("get_schedule", id="a")
    assert row["createdAt"] == NOW.replace(microsecond=123000)
    assert row["createdAt"].tzinfo is not None and row["createdAt"].utcoffset() == timedelta(0)
    assert row["enabled"] in (0, False)


def test_a_batch_stores_each_time_as_its_own_instant_even_where_wall_times_compare_equal(db):
    # 1 November 2026, 01:30 in New York happens twice (EDT, then EST): the two compare equal (PEP 495),
    # and the batch converts each distinct time once; 05:30 UTC is the first of them in another zone.
    new_york = ZoneInfo("America/New_York")
    first, second = datetime(2026, 11, 1, 1, 30, tzinfo=new_york), datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=new_york)
    assert first == second
    times = {"edt": first, "est": second, "utc": datetime(2026, 11, 1, 5, 30, tzinfo=timezone.utc), "edt-again": first}
    db.execute_many(
        "insert_schedule",
        [{"id": k, "name": k, "cron": "* * * * *", "timezone": "UTC", "now": v} for k, v in times.items()],
    )
    stored = {k: db.fetch_one("get_schedule", id=k)["createdAt"] for k in times}
    assert stored == {k: v.astimezone(timezone.utc) for k, v in times.items()}
    assert stored["est"] - stored["edt"] == timedelta(hours=1)


def test_naive_datetimes_are_refused(db):
    with pytest.raises(ValueError, match="naive"):
        db.execute("insert_schedule", id="a", name="A", cron="* * * * *", timezone="UTC", now=datetime(2026, 1, 1))


def test_transaction_rolls_back_on_error(db):
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.execute("insert_schedule", id="a", name="A", cron="* * * * *", timezone="UTC", now=NOW)
            raise RuntimeError("boom")
    assert db.fetch_one("get_schedule", id="a") is None


def test_unreachable_mysql_is_database_unavailable():
    db = Database.from_url("mysql://u:p@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        db.fetch_one("ping")


def test_killed_mysql_connection_is_replaced(db):
    if db.kind != "mysql":
        pytest.skip("connection loss is a MySQL matter")
    db.fetch_one("ping")  # open the connection we are about to lose
    operator = operator_connection(db)
    with operator.cursor() as cur:
        cur.execute("SELECT id FROM information_schema.PROCESSLIST WHERE db = DATABASE() AND id <> CONNECTION_ID()")
        victims = [row[0] for row in cur.fetchall()]
        assert victims
        for victim in victims:
            cur.execute(f"KILL CONNECTION {victim}")
    operator.close()
    # The next transaction finds the dead connection at BEGIN, reconnects and carries on.
    with db.transaction():
        db.execute("insert_schedule", id="a", name="A", cron="* * * * *", timezone="UTC", now=NOW)
    assert db.fetch_one("get_schedule", id="a") is not None


SEED_MONITORING_SQL = [
    """SELECT workerType, status, lastHeartbeatAt,
         TIMESTAMPDIFF(SECOND, lastHeartbeatAt, NOW()) as seconds_since_heartbeat
       FROM WorkerInstance WHERE status = 'RUNNING'""",
    """SELECT id, name, enabled, lastRunAt, nextRunAt, runCount, failureCount,
         TIMESTAMPDIFF(MINUTE, lastRunAt, NOW()) as minutes_since_last
       FROM JobSchedule WHERE enabled = true""",
    """SELECT scheduleId, COUNT(*) as total,
         SUM(CASE WHEN status = 'COMPLETED' THEN 1 ELSE 0 END) as succeeded,
         SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) as failed,
         ROUND(SUM(CASE WHEN status = 'COMPLETED' THEN 1 ELSE 0 END) / COUNT(*) * 100, 2) as success_rate
       FROM JobRun WHERE scheduleId IS NOT NULL AND createdAt > NOW() - INTERVAL 7 DAY GROUP BY scheduleId""",
    "SELECT COUNT(*) FROM JobSchedule",
    "SELECT COUNT(*) FROM WorkerInstance WHERE workerType = 'schedule_daemon' AND status = 'RUNNING'",
    "SELECT COUNT(*) FROM JobSchedule WHERE lockedAt < NOW() - INTERVAL 10 MINUTE",
    """SELECT id, workerType, lastHeartbeatAt, TIMESTAMPDIFF(SECOND, lastHeartbeatAt, NOW()) as seconds_ago
       FROM WorkerInstance WHERE status = 'RUNNING' ORDER BY lastHeartbeatAt DESC""",
    """SELECT id, name, lastRunAt, nextRunAt, TIMESTAMPDIFF(MINUTE, lastRunAt, NOW()) as minutes_since_last
       FROM JobSchedule WHERE enabled = true ORDER BY lastRunAt DESC""",
    "SELECT COUNT(*) as queued_jobs, MAX(queuedAt) as oldest_queued FROM JobRun WHERE status = 'QUEUED'",
    "SELECT * FROM WorkerInstance WHERE workerType = 'job_worker'",
    "SELECT * FROM WorkerInstance WHERE workerType = 'schedule_daemon'",
    "SELECT workerType, COUNT(*) FROM WorkerInstance WHERE status = 'RUNNING' GROUP BY workerType",
    "UPDATE JobSchedule SET enabled = true, nextRunAt = NULL WHERE id = 'feed-refresh'",
]


@pytest.mark.parametrize("sql", SEED_MONITORING_SQL)
def test_design_documents_operator_sql_runs_verbatim_on_mysql(db, sql):
    if db.kind != "mysql":
        pytest.skip("the design documents' SQL is MySQL's dialect")
    db.insert("register_worker", id="w1", worker_type="schedule_daemon", hostname="h", pid=1, now=NOW)
    db.execute("insert_schedule", id="feed-refresh", name="Feed", cron="* * * * *", timezone="UTC", now=NOW)
    operator_sql(db, sql)


def test_an_existing_version_1_database_upgrades_without_losing_rows(database_url):
    old = Database.from_url(database_url)
    assert old.migrate(up_to=1) == 1
    old.execute("insert_schedule", id="kept", name="Kept", cron="* * * * *", timezone="UTC", now=NOW)
    old.close()
    new = Database.from_url(database_url)
    assert new.migrate() >= 2
    assert new.fetch_one("get_schedule", id="kept")["name"] == "Kept"
    new.execute(
        "insert_audit",
        now=NOW,
        actor="admin-token",
        action="enable",
        schedule_id="kept",
        note=None,
        remote_address="127.0.0.1",
    )
    assert [a["action"] for a in new.fetch_all("list_audit", before=None, limit=10)] == ["enable"]


# -- error classes, column limits, typed times, the server's clock (issue 8) -------------------------------


def test_a_lock_held_by_another_connection_past_the_wait_is_busy_not_lost(database_url, db):
    impatient = Database.from_url(database_url, lock_wait_timeout_ms=100)
    db.execute("insert_schedule", id="a", name="A", cron="* * * * *", timezone="UTC", now=NOW)
    holder = operator_connection(db)
    cur = holder.cursor()
    if db.kind == "sqlite":
        cur.execute("BEGIN IMMEDIATE")
    else:
        holder.autocommit(False)
        cur.execute("START TRANSACTION")
        cur.execute("SELECT id FROM JobSchedule WHERE id = 'a' FOR UPDATE")
    try:
        with pytest.raises(DatabaseBusy):
            impatient.execute("unschedule", id="a", now=NOW)
    finally:
        holder.rollback()
        holder.close()
    impatient.execute("enable_schedule", id="a", next_run_at=NOW, now=NOW)  # the same connection goes on
    assert impatient.fetch_one("get_schedule", id="a")["enabled"]
    impatient.close()


def test_a_duplicate_is_a_conflict_but_not_busy(db):
    db.execute("register_worker", id="w", worker_type="schedule_daemon", hostname="h", pid=1, now=NOW)
    with pytest.raises(Conflict) as error:
        db.execute("register_worker", id="w", worker_type="schedule_daemon", hostname="h", pid=1, now=NOW)
    assert not isinstance(error.value, DatabaseBusy)


def test_a_value_too_long_for_its_column_is_rejected_on_mysql(db):
    if db.kind != "mysql":
        pytest.skip("SQLite stores any length")
    db.execute("insert_schedule", id="a", name="A", cron="* * * * *", timezone="UTC", now=NOW)
    with pytest.raises(ValueRejected, match="1406"):
        db.execute(
            "update_schedule_definition",
            id="a",
            name="N" * 201,
            cron="* * * * *",
            timezone="UTC",
            next_run_at=NOW,
            now=NOW,
        )


def test_text_the_program_writes_is_cut_to_its_column_on_both_backends(db):
    db.execute(
        "insert_audit",
        now=NOW,
        actor="x" * 250 + "-end",
        action="enable",
        schedule_id=None,
        note=None,
        remote_address=None,
    )
    [entry] = db.fetch_all("list_audit", before=None, limit=10)
    assert 195 <= len(entry["actor"]) <= 200 and entry["actor"].startswith("x" * 60) and entry["actor"].endswith("-end")
    assert "cut to fit the column" in entry["actor"]


def test_a_tuple_parameter_is_a_list_of_values_one_per_run_on_both_backends(db):
    ids = []
    for name in ("a", "b", "c"):
        ids.append(
            db.insert(
                "insert_queued_run",
                job_name=name,
                trigger="MANUAL",
                schedule_id=None,
                scheduled_for=NOW,
                batch_id="batch",
                attempt=1,
                now=NOW,
                available_at=NOW,
                blocked_by=0,
            )
        )
    with db.transaction():
        assert db.fetch_all("next_queued_runs", now=NOW, limit=10)  # claimed, as a worker does
        assert db.execute("claim_queued_runs", ids=tuple(ids), worker_id="w", now=NOW) == 3
    later = utc_ms(NOW + timedelta(seconds=5))  # stored to the millisecond
    changed = db.execute(
        "finish_queued_runs",
        ids=(ids[2], ids[0]),  # any order: each value goes with the id in the same position
        statuses=("FAILED", "COMPLETED"),
        completed_at=(later, later + timedelta(seconds=1)),
        duration_ms=(None, 1000),
        error=("E" * 70_000, None),
        started_at=(None, later - timedelta(seconds=1)),
    )
    assert changed == 2
    runs = {r["jobName"]: r for r in db.fetch_all("runs_by_id", ids=tuple(ids))}
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert (a["status"], a["durationMs"], a["error"]) == ("COMPLETED", 1000, None)
    assert (a["completedAt"], a["startedAt"]) == (later + timedelta(seconds=1), later - timedelta(seconds=1))
    assert (c["status"], c["durationMs"], c["completedAt"], c["startedAt"]) == ("FAILED", None, later, utc_ms(NOW))
    assert "cut to fit the column" in c["error"] and len(c["error"].encode()) <= 65_535
    assert (b["status"], b["completedAt"]) == ("RUNNING", None)
    again = dict(statuses=("COMPLETED",), completed_at=(later,), duration_ms=(1,), error=(None,), started_at=(later,))
    assert db.execute("finish_queued_runs", ids=(ids[0],), **again) == 0, "a finished run is not finished twice"


@pytest.mark.parametrize("unit", list(Unit))
def test_fit_column_against_a_brute_force_oracle(unit):
    limit = ColumnLimit(100, unit)

    def size(text: str) -> int:
        return len(text) if unit is Unit.CHARACTERS else len(text.encode())

    for alphabet in ("a", "é", "€", "😀", "aé😀"):
        for length in range(0, 160):
            value = (alphabet * length)[:length]
            fitted = fit_column(value, limit)
            if size(value) <= 100:
                assert fitted == value
                continue
            assert size(fitted) <= 100 and "cut to fit the column" in fitted
            head, marker_and_tail = fitted.split("\n[... ", 1)
            tail = marker_and_tail.split(" ...]\n", 1)[1]
            assert value.startswith(head) and value.endswith(tail) and len(head) + len(tail) > 0
    assert fit_column("bad \udcff surrogate", limit) == "bad ? surrogate"


def test_times_typed_by_sql_in_any_iso_form_read_as_the_same_instant(db):
    if db.kind != "sqlite":
        pytest.skip("MySQL's DATETIME(3) normalises whatever is written")
    db.execute("insert_schedule", id="a", name="A", cron="* * * * *", timezone="UTC", now=NOW)
    for typed in (
        "2026-01-10 02:00:00",
        "2026-01-10T02:00:00Z",
        "2026-01-10T04:00:00+02:00",
        "2026-01-10 02:00:00.000",
    ):
        operator_sql(db, f"UPDATE JobSchedule SET enabled = true, nextRunAt = '{typed}' WHERE id = 'a'")
        due = db.fetch_one("get_schedule", id="a")["nextRunAt"]
        assert due == datetime(2026, 1, 10, 2, tzinfo=timezone.utc), typed
        db.normalise_typed_times()
        assert db.execute("skip_occurrences", id="a", due=due, next_run_at=NOW, now=NOW) == 1, typed


def test_the_database_clock_is_measured_and_used(db):
    offset = db.measure_clock()
    assert abs(offset.total_seconds()) < 1  # one host: the test's clock is the database's
    assert abs((db.now() - datetime.now(timezone.utc)).total_seconds()) < 1
