"""The database layer shared by the daemon, the job worker and the admin server.

    db = Database.from_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    db.migrate()
    row = db.fetch_one("get_schedule", id="feed-refresh")
    with db.transaction():
        if db.execute("claim_occurrence", ...) == 1: ...

Every statement lives in queries.sql under a name; every table in schema.sql. Callers pass named
parameters and get dicts back, with times as timezone-aware UTC datetimes on both backends. The few
differences between SQLite and MySQL live in the two dialect objects below and nowhere else.

Connections are per thread. A connection that went stale between transactions (server restart,
wait_timeout, network blip) is replaced transparently when the next transaction begins; one that drops
mid-transaction raises DatabaseUnavailable and the caller retries its step later (after a drop at
COMMIT the caller cannot know whether it landed: it reads the row back). Driver errors are classified
here, once: DatabaseUnavailable (connection lost), DatabaseBusy (busy, lock wait timeout, deadlock:
transient), DatabaseCannotWrite (disk or table full, I/O error, read-only: transient), Conflict
(duplicate key), ValueRejected (too long or invalid: permanent).

Text the program writes without choosing its length (parameters named in COLUMN_LIMITS: a job's error,
a log line, an audit actor or note) is cut to fit its column here, with a visible marker, so that no
outcome is ever refused for its size. Leases, heartbeats and deadness are judged by the database
server's clock: now() is this process's clock, corrected by the offset measure_clock() last saw when
that is over CLOCK_TOLERANCE.
"""

from __future__ import annotations

import enum
import math
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from errors import ConfigError, Conflict, DatabaseBusy, DatabaseCannotWrite, DatabaseUnavailable, ValueRejected

DEFAULT_DATABASE_URL = "sqlite:///schedules.db"
HERE = Path(__file__).resolve().parent


def utc_ms(value: datetime) -> datetime:
    """`value` in UTC, cut to the millisecond the database keeps (DATETIME(3))."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: every time in this project is timezone-aware")
    value = value.astimezone(timezone.utc)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _sqlite_datetime(raw: bytes) -> datetime:
    """A stored time; also any ISO form an operator types by SQL ('T', no milliseconds, 'Z', an offset)."""
    value = datetime.fromisoformat(raw.decode())  # fromisoformat is C; strptime is not
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


sqlite3.register_converter("DATETIME", _sqlite_datetime)


class Unit(enum.Enum):
    CHARACTERS = "characters"  # VARCHAR(n) counts characters
    BYTES = "bytes"  # TEXT holds 65,535 bytes of UTF-8, up to 4 a character


@dataclass(frozen=True)
class ColumnLimit:
    size: int
    unit: Unit


# Parameters (by their name in queries.sql) whose text the program writes without choosing its length,
# and what the column they fill holds (schema.sql). MySQL refuses a longer value ("Data too long").
COLUMN_LIMITS = {
    "error": ColumnLimit(65_535, Unit.BYTES),  # JobRun.error TEXT
    "message": ColumnLimit(65_535, Unit.BYTES),  # JobLog.message TEXT
    "actor": ColumnLimit(200, Unit.CHARACTERS),  # AdminAudit.actor VARCHAR(200)
    "note": ColumnLimit(500, Unit.CHARACTERS),  # AdminAudit.note VARCHAR(500)
}
CUT_MARKER = "\n[... {cut} {unit} cut to fit the column ...]\n"
CLOCK_TOLERANCE = timedelta(seconds=1)  # how far our clock may differ from the database's before now() corrects it


def fit_column(value: str, limit: ColumnLimit) -> str:
    """`value` as valid UTF-8 within `limit`: its head and tail kept, the middle replaced by CUT_MARKER."""
    if value.isascii() and len(value) <= limit.size:  # the usual case, and isascii() reads a flag
        return value
    value = value.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate would fail the write
    encoded = value.encode("utf-8")
    size = len(value) if limit.unit is Unit.CHARACTERS else len(encoded)
    if size <= limit.size:
        return value
    # The marker names how much was cut; reserving it with the whole size as the count is always enough.
    room = limit.size - len(CUT_MARKER.format(cut=size, unit=limit.unit.value))
    head, tail = room // 2, room - room // 2  # the head says where it happened, the tail what (last line)
    marker = CUT_MARKER.format(cut=size - room, unit=limit.unit.value)
    if limit.unit is Unit.CHARACTERS:
        return value[:head] + marker + value[size - tail :]
    return (
        encoded[:head].decode("utf-8", "ignore")
        + marker  # "ignore": a character split by the cut goes
        + encoded[size - tail :].decode("utf-8", "ignore")
    )


@dataclass(frozen=True)
class SQLiteDialect:
    """The embedded default: one file, many processes, one writer at a time."""

    name: str = "sqlite"
    begin_write: str = "BEGIN IMMEDIATE"  # take the write lock up front: no upgrade deadlocks
    insert_ignore: str = "INSERT OR IGNORE"
    for_update_skip_locked: str = ""  # BEGIN IMMEDIATE already excludes every other writer
    for_update: str = ""  # likewise: the transaction already holds the only write lock
    db_now: str = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    stores_times_as_text: bool = True  # an operator's UPDATE may store any ISO form; see normalise_typed_times
    needs_skip_locked: bool = False  # queue claims: BEGIN IMMEDIATE serialises the writers instead
    due_batch: int = 2500  # due schedules a daemon pass reads and skips in one transaction: executemany runs in C
    converts_values: bool = False  # the DATETIME converter registered below already gives aware datetimes
    clock_is_ours: bool = True  # the library in this process reads this host's clock: measuring it tells nothing

    def to_db(self, value: Any) -> Any:
        if isinstance(value, datetime):  # isoformat cuts to the millisecond, as utc_ms() does, and is C
            return (value if value.tzinfo is timezone.utc else utc_ms(value)).isoformat(" ", "milliseconds")[:23]
        return value

    def from_db(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class MySQLDialect:
    """Production: MySQL 8 or MariaDB 10.6+ through PyMySQL, sessions in UTC at READ COMMITTED."""

    name: str = "mysql"
    begin_write: str = "START TRANSACTION"
    insert_ignore: str = "INSERT IGNORE"
    for_update_skip_locked: str = "FOR UPDATE SKIP LOCKED"
    for_update: str = "FOR UPDATE"
    db_now: str = "UTC_TIMESTAMP(3)"
    stores_times_as_text: bool = False  # DATETIME(3) normalises whatever is written
    needs_skip_locked: bool = True  # queue claims skip the rows other workers are claiming (8.0.1+, MariaDB 10.6+)
    due_batch: int = 1000  # PyMySQL sends an UPDATE executemany row by row, holding each row's lock to COMMIT
    converts_values: bool = True  # PyMySQL's datetimes are naive: from_db marks them UTC
    clock_is_ours: bool = False  # the server's host may keep another time: measured every heartbeat

    def to_db(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return utc_ms(value).replace(tzinfo=None)
        return value

    def from_db(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.replace(tzinfo=timezone.utc)
        return value


# MySQL error codes that mean "this connection is gone" (client side, or the server killed or is ending it).
MYSQL_CONNECTION_LOST = {2003, 2006, 2013, 2055, 1053, 1927}
# "Another transaction holds what you need": lock wait timeout, deadlock. Nothing was written; retry.
MYSQL_BUSY = {1205, 1213}
# A duplicate key: someone else wrote it first.
MYSQL_DUPLICATE = {1062}
# The server takes no writes for now: 1021 disk full, 1114 table full, 1290 read-only (--read-only, a
# replica after failover), 1792 read-only transaction, 1836 read-only replica. Retry until it does.
MYSQL_CANNOT_WRITE = {1021, 1114, 1290, 1792, 1836}
# The value itself is refused (too long, incorrect string/date/number): the same write fails again.
MYSQL_VALUE_REJECTED = {1048, 1264, 1265, 1292, 1366, 1406}


def load_queries(text: str) -> dict[str, str]:
    """Parse queries.sql: each statement follows a `-- name: x` line and a one-line description."""
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[name.strip()] = "\n".join(lines).strip().rstrip(";")
    return queries


def expand_tuples(sql: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A tuple parameter is a list of values, one placeholder each (drivers bind scalars only):

    IN :ids                  IN (:ids__0, :ids__1)
    {cases :ids :values}     WHEN :ids__0 THEN :values__0 WHEN :ids__1 THEN :values__1
    """

    def names(name: str) -> list[str]:
        return [f":{name}__{i}" for i in range(len(params[name]))]

    def cases(match: re.Match[str]) -> str:
        return " ".join(f"WHEN {k} THEN {v}" for k, v in zip(names(match[1]), names(match[2]), strict=True))

    if any(isinstance(v, tuple) and not v for v in params.values()):
        raise ValueError("a tuple parameter needs at least one value (`IN ()` is an error on MySQL)")
    sql = re.sub(r"\{cases :(\w+) :(\w+)\}", cases, sql)
    sql = re.sub(r"\bIN\s+:(\w+)\b", lambda m: f"IN ({', '.join(names(m[1]))})", sql, flags=re.IGNORECASE)
    expanded = {k: v for k, v in params.items() if not isinstance(v, tuple)}
    for name, values in params.items():
        if isinstance(values, tuple):
            expanded.update((f"{name}__{i}", value) for i, value in enumerate(values))
    return sql, expanded


def load_migrations(text: str) -> dict[int, list[str]]:
    """Parse schema.sql into {version: [statement, ...]}."""
    migrations: dict[int, list[str]] = {}
    for block in re.split(r"^-- migration: ", text, flags=re.M)[1:]:
        version, _, body = block.partition("\n")
        body = "\n".join(re.sub(r"\s*--.*$", "", line) for line in body.splitlines())
        migrations[int(version)] = [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]
    return migrations


def sqlite_ddl(statement: str) -> str:
    """schema.sql is MySQL's dialect; these are the only two spellings SQLite does not accept."""
    statement = re.sub(
        r"BIGINT\s+NOT NULL\s+AUTO_INCREMENT\s+PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT", statement
    )
    return re.sub(r"\)\s*ENGINE=.*$", ")", statement, flags=re.S)


def parse_database_url(url: str) -> tuple[str, dict[str, Any]]:
    """('sqlite', {path}) or ('mysql', {host, port, user, password, database}); ConfigError otherwise."""
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        # sqlite:///relative.db has path '/relative.db'; sqlite:////abs.db has '//abs.db'.
        try:
            path = urllib.parse.urlsplit(url).path
        except ValueError:  # e.g. an unmatched '[': reported below like any other bad URL
            path = ""
        if path not in ("", "/"):
            return "sqlite", {"path": path[1:]}
    if scheme in ("mysql", "mysql+pymysql"):
        userinfo, location = _split_userinfo(url)
        user, _, password = userinfo.partition(":")
        try:  # the password is split off first: urlsplit() would read '/' or '[' in it as structure
            where = urllib.parse.urlsplit(f"{scheme}://{location}")
            port = where.port or 3306
        except ValueError:
            where = None
        if where is not None and where.hostname and where.path.strip("/"):
            return "mysql", {
                "host": where.hostname,
                "port": port,
                "user": urllib.parse.unquote(user or "root"),
                "password": urllib.parse.unquote(password),
                "database": where.path.strip("/"),
            }
    raise ConfigError(
        f"DATABASE_URL {redact_url(url)!r} is not understood: use sqlite:///relative.db, "
        "sqlite:////absolute/path.db or mysql://user:password@host:3306/dbname"
    )


def _split_userinfo(url: str) -> tuple[str, str]:
    """('user:password', 'host:port/db') of scheme://user:password@host:port/db; ('', rest) without an '@'.

    The last '@' ends the user information: a password may hold '@', '/', '?', '#' or '%' unencoded
    (host names and database names hold no '@'), so a password is never mistaken for a host or a path.
    """
    rest = url.partition("://")[2]
    userinfo, at, location = rest.rpartition("@")
    return (userinfo, location) if at else ("", rest)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, fit for a log line or an error, whatever the password holds."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return "***" if "@" in url else url  # not a URL at all; it may still hold a password
    userinfo, location = _split_userinfo(url)
    if userinfo:
        user = userinfo.partition(":")[0]
        return f"{scheme}://{user}:***@{location}" if ":" in userinfo else url
    # No '@': "user:secret/db" (the host forgotten) would pass the secret off as a port.
    host, colon, port = location.partition("/")[0].partition(":")
    if colon and not port.isdigit():
        return f"{scheme}://{host}:***{location[len(host) + 1 + len(port) :]}"
    return url


class Database:
    """A handful of names (execute, insert, fetch_one, fetch_all, transaction); nothing else touches a cursor."""

    def __init__(self, kind: str, params: dict[str, Any], url: str, lock_wait_timeout_ms: int = 30_000):
        self.kind = kind
        self.lock_wait_timeout_ms = lock_wait_timeout_ms
        self.clock_offset = timedelta(0)  # the database server's clock minus this process's, see measure_clock
        self.params = params
        self.url = redact_url(url)
        self.dialect = SQLiteDialect() if kind == "sqlite" else MySQLDialect()
        self.source_queries = load_queries((HERE / "queries.sql").read_text())
        self.queries = {name: self._render(sql) for name, sql in self.source_queries.items()}
        self.statements_issued = 0  # read by bench/ to count database round trips
        self._local = threading.local()
        if kind == "mysql":
            try:
                import pymysql  # noqa: F401  (imported here so SQLite users never need it)
            except ImportError:
                raise ConfigError(
                    "DATABASE_URL is a mysql:// URL but PyMySQL is missing: run pip install -r requirements.txt"
                ) from None

    @classmethod
    def from_url(cls, url: str, lock_wait_timeout_ms: int = 30_000) -> Database:
        """lock_wait_timeout_ms: how long a statement waits for another transaction's lock before DatabaseBusy."""
        kind, params = parse_database_url(url)
        return cls(kind, params, url, lock_wait_timeout_ms)

    # -- the interface -------------------------------------------------------------------------------

    def execute(self, query: str, /, **params: Any) -> int:
        """Run a named statement; returns the number of rows it changed."""
        rowcount: int = self._run(query, params, lambda cur: cur.rowcount)
        return rowcount

    def insert(self, query: str, /, **params: Any) -> int:
        """Run a named INSERT; returns the new row's id."""
        row_id: int = self._run(query, params, lambda cur: cur.lastrowid)
        return row_id

    def execute_many(self, query: str, rows: list[dict[str, Any]]) -> int:
        """Run a named statement once per parameter dict, in one round trip where the driver can.

        Every dict names the same parameters, and a parameter holds a time (or None) in every row or in
        none: the rows are converted by column (_to_db). Returns the rows changed, summed over them all
        (both drivers sum executemany's row counts)."""
        if not rows:
            return 0
        rowcount: int = self._run(query, rows, lambda cur: cur.rowcount, many=True)
        return rowcount

    def fetch_one(self, query: str, /, **params: Any) -> dict[str, Any] | None:
        rows = self._run(query, params, self._rows)
        return rows[0] if rows else None

    def fetch_value(self, query: str, column: str, /, **params: Any) -> Any:
        """One column of a statement that always returns one row (a count, VERSION())."""
        row = self.fetch_one(query, **params)
        if row is None:
            raise LookupError(f"query {query!r} returned no row")
        return row[column]

    def fetch_all(self, query: str, /, **params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._run(query, params, self._rows)
        return rows

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction: commits on success, rolls back and re-raises on error. Not re-entrant."""
        if getattr(self._local, "in_transaction", False):
            raise RuntimeError("transaction() is not re-entrant")
        self._begin()
        self._local.in_transaction = True
        try:
            yield self
            self._translate(lambda: self._connection().commit())
        except BaseException:
            self._rollback_quietly()
            raise
        finally:
            self._local.in_transaction = False

    def measure_clock(self) -> timedelta:
        """Read the database server's clock and remember its offset from ours (the round trip halved)."""
        if self.dialect.clock_is_ours:
            self.clock_offset = timedelta(0)
            return self.clock_offset
        before = datetime.now(timezone.utc)
        raw = self._run("server_now", {}, self._rows)[0]["now"]
        after = datetime.now(timezone.utc)
        server = raw.replace(tzinfo=timezone.utc) if isinstance(raw, datetime) else _sqlite_datetime(raw.encode())
        self.clock_offset = server - (before + (after - before) / 2)
        return self.clock_offset

    def now(self) -> datetime:
        """The database server's time, from our clock and the last measured offset: no round trip.

        A clock within CLOCK_TOLERANCE of the database's is taken as it is: a measurement's error (half
        a round trip, more on a loaded host) would only make processes of one host disagree.
        """
        offset = self.clock_offset if abs(self.clock_offset) > CLOCK_TOLERANCE else timedelta(0)
        return datetime.now(timezone.utc) + offset

    def normalise_typed_times(self) -> int:
        """SQLite: rewrite the times an operator typed by SQL in the stored form, so that claims match them."""
        return self.execute("normalise_typed_times") if self.dialect.stores_times_as_text else 0

    def close(self) -> None:
        """Close this thread's connection (other threads close their own when they end)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def migrate(self, up_to: int | None = None) -> int:
        """Apply the schema.sql migrations this database has not seen; returns the schema version."""
        migrations = load_migrations((HERE / "schema.sql").read_text())
        if up_to is not None:  # tests build an old database to upgrade
            migrations = {v: m for v, m in migrations.items() if v <= up_to}
        if self.kind == "sqlite":
            # SQLite's DDL is transactional: one BEGIN IMMEDIATE makes the whole upgrade atomic.
            with self.transaction():
                return self._apply_migrations(migrations)
        # MySQL commits DDL implicitly, so processes starting together serialise on a named lock.
        self._run("acquire_schema_lock", {}, self._rows)
        try:
            return self._apply_migrations(migrations)
        finally:
            self._run("release_schema_lock", {}, self._rows)

    # -- the machinery -------------------------------------------------------------------------------

    def _apply_migrations(self, migrations: dict[int, list[str]]) -> int:
        self.execute("create_schema_version_table")
        applied = {row["version"] for row in self.fetch_all("applied_schema_versions")}
        # Every block not applied yet, not only those above the newest: branches land their numbered
        # blocks out of order (the previous release recorded 6 without 5), and each block stands alone.
        for version in sorted(set(migrations) - applied):
            for statement in migrations[version]:
                ddl = sqlite_ddl(statement) if self.kind == "sqlite" else statement
                self._run_sql(ddl, {}, lambda cur: None)
            self.execute("record_schema_version", version=version, applied_at=datetime.now(timezone.utc))
            applied.add(version)
        return max(applied, default=0)

    def _render(self, sql: str) -> str:
        """A statement of queries.sql in this backend's words and parameter style."""
        for token in ("insert_ignore", "for_update_skip_locked", "for_update", "db_now"):
            sql = sql.replace("{" + token + "}", getattr(self.dialect, token))
        if self.kind == "mysql":
            sql = re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", sql.replace("%", "%%"))
        return sql

    def _rows(self, cur: Any) -> list[dict[str, Any]]:
        if cur.description is None:
            return []
        names = [d[0] for d in cur.description]
        if not self.dialect.converts_values:
            return [dict(zip(names, row)) for row in cur.fetchall()]
        from_db = self.dialect.from_db
        return [{n: from_db(v) for n, v in zip(names, row)} for row in cur.fetchall()]

    def _run(self, name: str, params: Any, result: Any, many: bool = False) -> Any:
        try:
            sql = self.queries[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} in queries.sql") from None
        if not many and any(isinstance(v, tuple) for v in params.values()):
            sql, params = expand_tuples(self.source_queries[name], params)
            sql = self._render(sql)
        return self._run_sql(sql, params, result, many)

    def _run_sql(self, sql: str, params: Any, result: Any, many: bool = False) -> Any:
        params = self._to_db(params if many else [params])
        if not many:
            params = params[0]

        def attempt() -> Any:
            cur = self._connection().cursor()
            try:
                self.statements_issued += 1
                (cur.executemany if many else cur.execute)(sql, params)
                return result(cur)
            finally:
                cur.close()

        if getattr(self._local, "in_transaction", False):
            return self._translate(attempt)
        # Outside a transaction each statement commits on its own; a stale connection gets one retry.
        try:
            return self._translate(attempt)
        except DatabaseUnavailable:
            return self._translate(attempt)

    def _to_db(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Parameter rows as the driver takes them: times in the dialect's form, limited texts cut to fit.

        Built for batches (after 24 h down a restart binds 20,000 rows of 14 parameters): the first row
        tells which parameters hold times and limited texts (see execute_many); only those are looked
        at, and each distinct time is converted once.
        """
        first = rows[0]
        # error__3, the fourth value of a tuple parameter (expand_tuples), is limited as `error` is.
        limited = {k: COLUMN_LIMITS[k.partition("__")[0]] for k in first if k.partition("__")[0] in COLUMN_LIMITS}
        times = [k for k, v in first.items() if v is None or isinstance(v, datetime)]
        # By value and fold: equal instants have one stored form whatever their zone, and the two wall
        # times of a repeated hour in one zone compare equal (PEP 495) but are not the same instant.
        texts: dict[tuple[datetime, int], Any] = {}
        to_db = self.dialect.to_db
        converted = []
        for row in rows:
            row = dict(row)
            for k in times:
                if isinstance(value := row[k], datetime):
                    if (text := texts.get((value, value.fold))) is None:
                        text = texts[value, value.fold] = to_db(value)
                    row[k] = text
            for k, limit in limited.items():
                if isinstance(value := row[k], str):
                    row[k] = fit_column(value, limit)
            converted.append(row)
        return converted

    def _begin(self) -> None:
        def begin() -> None:
            self.statements_issued += 1
            self._connection().cursor().execute(self.dialect.begin_write)

        try:
            self._translate(begin)
        except DatabaseUnavailable:
            self._translate(begin)  # nothing was written yet, so a fresh connection may simply retry

    def _rollback_quietly(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        try:
            conn.rollback()
        except Exception:
            self.close()

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect_sqlite() if self.kind == "sqlite" else self._connect_mysql()
            self._local.conn = conn
        return conn

    def _connect_sqlite(self) -> sqlite3.Connection:
        path = self.params["path"]
        try:
            conn = sqlite3.connect(
                path,
                timeout=self.lock_wait_timeout_ms / 1000,
                isolation_level=None,
                detect_types=sqlite3.PARSE_DECLTYPES,
            )
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, across processes
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"cannot open SQLite database {path!r}: {exc}") from exc
        return conn

    def _connect_mysql(self) -> Any:
        import pymysql

        p = self.params
        try:
            conn = pymysql.connect(
                # As bytes: PyMySQL would encode a str password as Latin-1 and fail on any other character
                # with an error quoting it; UTF-8 is what the server hashed if the password was set over utf8mb4.
                host=p["host"],
                port=p["port"],
                user=p["user"],
                password=p["password"].encode(),
                database=p["database"],
                autocommit=True,
                charset="utf8mb4",
                connect_timeout=10,
                read_timeout=60,
                write_timeout=60,
            )
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                cur.execute(
                    f"SET SESSION innodb_lock_wait_timeout = {max(1, math.ceil(self.lock_wait_timeout_ms / 1000))}"
                )
        except pymysql.err.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to MySQL at {p['host']}:{p['port']}: {exc.args[-1]}") from exc
        return conn

    def _translate(self, fn: Any) -> Any:
        """Call fn, turning driver errors into the project's classes (see the module docstring)."""
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise DatabaseBusy(
                    f"SQLite is busy (another process held its write lock for longer than "
                    f"{self.lock_wait_timeout_ms} ms): {exc}"
                ) from exc
            if "too big" in str(exc):
                raise ValueRejected(f"SQLite refused a value: {exc}") from exc
            if "disk is full" in str(exc) or "disk I/O error" in str(exc) or "readonly" in str(exc):
                raise DatabaseCannotWrite(f"SQLite cannot write for now: {exc}") from exc
            raise
        except sqlite3.DataError as exc:
            raise ValueRejected(f"SQLite refused a value: {exc}") from exc
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"SQLite refused a duplicate: {exc}") from exc
        except Exception as exc:
            if self.kind != "mysql":
                raise
            import pymysql

            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            if isinstance(exc, pymysql.err.InterfaceError) or code in MYSQL_CONNECTION_LOST:
                self.close()
                raise DatabaseUnavailable(f"lost the MySQL connection: {exc}") from exc
            if code in MYSQL_BUSY:
                raise DatabaseBusy(f"MySQL error {code}: {exc.args[-1]}") from exc
            if code in MYSQL_DUPLICATE:
                raise Conflict(f"MySQL error {code}: {exc.args[-1]}") from exc
            if code in MYSQL_CANNOT_WRITE:
                raise DatabaseCannotWrite(f"MySQL error {code}: {exc.args[-1]}") from exc
            if code in MYSQL_VALUE_REJECTED:
                raise ValueRejected(f"MySQL error {code}: {exc.args[-1]}") from exc
            raise
