"""The admin server against odd clients: idle and slow connections, SIGTERM, and the new bad inputs.

The connection tests start admin_server.py as a real process and open hundreds of real sockets on
loopback; the timings they measure are printed (pytest -s shows them) and asserted with generous bounds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import jwt
import pytest

from admin_server import write_private_file
from db import Database, parse_database_url, redact_url
from errors import ScheduleJobsError
from settings import Settings
from tests.admin_client import ADMIN_TOKEN, JWT_SECRET, AdminServer, admin_jwt
from tests.conftest import ROOT, wait_for
from tests.mariadb_server import free_port
from tests.test_admin_api import snapshot

IDLE = 200  # connections that send nothing
SLOW = 100  # connections that send their request a little at a time, forever


class ServerProcess:
    """admin_server.py in its own process on a free port, serving tests/sample_app.py from a SQLite file."""

    def __init__(self, tmp_path: Path, **env: str):
        self.tmp_path = tmp_path
        self.database_url = f"sqlite:///{tmp_path / 'schedules.db'}"
        self.marker = tmp_path / "marker.txt"
        self.marker.touch()
        self.log_path = tmp_path / "admin.log"
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "admin_server.py")],
            cwd=tmp_path,
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
            env={
                "PATH": os.environ["PATH"],
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": self.database_url,
                "ADMIN_TOKEN": ADMIN_TOKEN,
                "HOST": "127.0.0.1",
                "PORT": "0",
                "APP_ENV": "test",
                "SCHEDULES_MODULE": "tests.sample_app",
                "TEST_MARKER_FILE": str(self.marker),
                **env,
            },
        )
        found = wait_for(
            lambda: re.search(r"listening on http://127\.0\.0\.1:(\d+)/", self.log()), 60, "the admin server to listen"
        )
        self.port = int(found.group(1))

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str, timeout: float = 30) -> tuple[int, float]:
        """(status, seconds) of one ordinary request."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status, time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def server_factory(tmp_path):
    servers: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        servers.append(ServerProcess(tmp_path, **env))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class Clients:
    """Raw sockets that idle, or trickle a request in one piece every 0.3 s, until the server closes them."""

    def __init__(self, port: int):
        self.port = port
        self.opened: dict[socket.socket, float] = {}
        self.trickles: dict[socket.socket, list[bytes]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)

    def idle(self, count: int) -> None:
        for _ in range(count):
            self._open()

    def slow(self, count: int) -> None:
        """Half of them send the request line a byte at a time, half send endless header lines."""
        for i in range(count):
            if i % 2:
                pieces = [bytes([b]) for b in b"GET /admin/schedules HTTP/1.0\r\n"]
            else:
                pieces = [b"GET /admin/schedules HTTP/1.0\r\n"] + [b"X-Drip: %d\r\n" % n for n in range(1000)]
            self.trickles[self._open()] = pieces
        if not self.thread.is_alive():
            self.thread.start()

    def send_now(self, data: bytes) -> socket.socket:
        connection = self._open()
        connection.sendall(data)
        return connection

    def _open(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.opened[connection] = time.monotonic()
        return connection

    def _trickle(self) -> None:
        while not self.stop.wait(0.3):
            for connection, pieces in list(self.trickles.items()):
                try:
                    connection.send(pieces.pop(0))
                except (OSError, IndexError):
                    del self.trickles[connection]

    def wait_all_closed(self, timeout: float) -> dict[socket.socket, float]:
        """Each connection's closing time (monotonic), once the server closed it without an answer."""
        closed: dict[socket.socket, float] = {}
        deadline = time.monotonic() + timeout
        for connection in self.opened:
            connection.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = connection.recv(65536)
            except ConnectionResetError:
                data = b""
            except TimeoutError:
                raise AssertionError(
                    f"{len(self.opened) - len(closed)} connections still open after {timeout}s"
                ) from None
            assert data == b"", f"the server answered a connection it should have closed: {data[:200]!r}"
            closed[connection] = time.monotonic()
        return closed

    def close(self) -> None:
        self.stop.set()
        for connection in self.opened:
            connection.close()


def test_idle_and_slow_connections_are_closed_after_the_idle_timeout_and_others_are_served(server_factory):
    server = server_factory(ADMIN_IDLE_TIMEOUT_S="2")
    clients = Clients(server.port)
    try:
        clients.idle(IDLE)
        clients.slow(SLOW)
        # Half a request that would trigger a run if a cut-off request were taken for a whole one.
        clients.send_now(
            f"POST /admin/schedules/tick/trigger HTTP/1.0\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n".encode()
        )
        clients.send_now(
            f"POST /admin/schedules/tick/trigger HTTP/1.0\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            'Content-Length: 40\r\n\r\n{"note":'.encode()
        )
        status, seconds = server.get("/healthz")
        print(f"\n{IDLE} idle + {SLOW} slow connections open: GET /healthz answered in {seconds * 1000:.0f} ms")
        assert status == 200 and seconds < 2.0
        assert server.get("/admin/schedules")[0] == 200

        closed = clients.wait_all_closed(timeout=15)
        lifetimes = sorted(closed[c] - clients.opened[c] for c in closed)
        print(f"closed after {lifetimes[0]:.2f}-{lifetimes[-1]:.2f} s (ADMIN_IDLE_TIMEOUT_S=2)")
        assert lifetimes[0] >= 1.9 and lifetimes[-1] < 2 + 3
        audit = Database.from_url(server.database_url).fetch_all("list_audit", before=None, limit=10)
        assert server.marker.read_text() == "" and audit == []  # the half-sent "Run now" requests did nothing
        assert server.get("/healthz")[0] == 200 and server.process.poll() is None
        assert "Traceback" not in server.log() and "connections that sent no complete request within 2s" in server.log()
    finally:
        clients.close()


def test_sigterm_stops_the_server_within_seconds_while_clients_idle_and_lets_a_manual_run_finish(server_factory):
    server = server_factory(ADMIN_IDLE_TIMEOUT_S="60", TEST_JOB_SECONDS="2")
    clients = Clients(server.port)
    answer: dict = {}

    def run_now() -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/admin/schedules/tick/trigger",
            method="POST",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer.update(status=response.status, body=json.load(response))

    try:
        clients.idle(IDLE)
        clients.slow(SLOW // 2)
        trigger = threading.Thread(target=run_now)
        trigger.start()
        wait_for(lambda: server.marker.read_text(), 30, "the manual run to start")
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        closed = clients.wait_all_closed(timeout=10)
        idle_closed = max(closed.values()) - signalled
        server.process.wait(timeout=30)
        stopped = time.monotonic() - signalled
        trigger.join(timeout=30)
        print(
            f"\nSIGTERM with {IDLE} idle + {SLOW // 2} slow connections and a 2 s manual run in flight: "
            f"idle connections closed in {idle_closed:.2f} s, process exited in {stopped:.2f} s"
        )
        assert idle_closed < 3 and stopped < 2 + 5
        assert server.process.returncode == 0 and "Admin server stopped" in server.log()
        assert answer["status"] == 200 and answer["body"]["succeeded"] == 1
        assert "Traceback" not in server.log()
    finally:
        clients.close()


# -- bad input ------------------------------------------------------------------------------------------


@pytest.fixture
def admin(database_url):
    server = AdminServer(database_url, JWT_AUDIENCE="schedule-admin")
    yield server
    server.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 60_000,
        b'{"enabled": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"enabled": true, "note": ' + b'{"a": ' * 3_000 + b"1" + b"}" * 3_000 + b"}",
    ],
    ids=["array", "in-a-field", "objects"],
)
def test_deeply_nested_json_is_a_400_and_changes_nothing(admin, raw):
    before = snapshot(admin.db)
    response = admin.request("PATCH", "/admin/schedules/feed-refresh", raw=raw)
    assert response.status == 400 and response.body["error"]["code"] == "bad_request", response.body
    assert snapshot(admin.db) == before


@pytest.mark.parametrize("header", ["Bearer {t}", "bearer {t}", "BEARER {t}", "bEaReR   {t}", "  Bearer {t}  "])
def test_the_bearer_scheme_is_matched_case_insensitively(admin, header):
    response = admin.request(
        "GET", "/admin/workers", token=None, headers={"Authorization": header.format(t=ADMIN_TOKEN)}
    )
    assert response.status == 200


@pytest.mark.parametrize("header", ["Basic {t}", "Bearer", "Bearer{t}", "Token {t}", "{t}"])
def test_other_schemes_are_refused(admin, header):
    response = admin.request(
        "GET", "/admin/workers", token=None, headers={"Authorization": header.format(t=ADMIN_TOKEN)}
    )
    assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


def jwt_with(**claims) -> str:
    return jwt.encode(
        {"sub": "carol", "role": "ADMIN", "exp": int(time.time()) + 600, **claims}, JWT_SECRET, algorithm="HS256"
    )


@pytest.mark.parametrize(
    "claims, status, fragment",
    [
        ({"aud": "schedule-admin"}, 200, None),
        ({"aud": ["billing", "schedule-admin"]}, 200, None),
        ({"aud": "billing"}, 401, "audience is not accepted"),
        ({}, 401, "audience is not accepted"),
    ],
)
def test_a_jwt_audience_is_checked_when_jwt_audience_is_set(admin, claims, status, fragment):
    response = admin.request("GET", "/admin/workers", token=jwt_with(**claims))
    assert response.status == status, response.body
    if fragment:
        assert fragment in response.body["error"]["message"] and "schedule-admin" in response.body["error"]["message"]


def test_without_jwt_audience_a_jwt_with_an_audience_is_refused_with_the_fix(tmp_path):
    server = AdminServer(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert server.request("GET", "/admin/workers", token=admin_jwt()).status == 200
        response = server.request("GET", "/admin/workers", token=jwt_with(aud="schedule-admin"))
        assert response.status == 401 and "set JWT_AUDIENCE" in response.body["error"]["message"]
    finally:
        server.close()


def test_a_body_shorter_than_its_content_length_is_never_acted_on(admin):
    before = snapshot(admin.db)
    port = int(admin.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(
            f"PATCH /admin/schedules/feed-refresh HTTP/1.0\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"enabled": true}'.encode()
        )
        connection.shutdown(socket.SHUT_WR)  # the client gives up: the server sees the end of the stream
        assert connection.recv(65536) == b""
    assert snapshot(admin.db) == before


def test_admin_idle_timeout_must_be_a_positive_whole_number():
    for raw in ("0", "-1", "1.5", "soon"):
        expected = f"ADMIN_IDLE_TIMEOUT_S must be a positive whole number of seconds, got '{raw}'"
        with pytest.raises(ScheduleJobsError, match=re.escape(expected)):
            Settings.from_env({"ADMIN_IDLE_TIMEOUT_S": raw})
    assert Settings.from_env({}).admin_idle_timeout_s == 5


# -- the one-off token file --------------------------------------------------------------------------------


def test_the_token_file_is_private_from_its_first_byte_whatever_the_umask(tmp_path):
    path = tmp_path / ".admin-token"
    path.write_text("old token\n")
    path.chmod(0o644)
    os.link(path, tmp_path / "old-token")  # shows whether the old file was rewritten in place
    previous = os.umask(0)
    try:
        write_private_file(path, "new token\n")
    finally:
        os.umask(previous)
    assert path.read_text() == "new token\n" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "old-token").read_text() == "old token\n"  # replaced by a new file, never opened at 644


@pytest.mark.parametrize("dangling", [False, True])
def test_the_token_is_never_written_through_a_symbolic_link(tmp_path, dangling):
    target = tmp_path / "somebody-elses-file"
    if not dangling:
        target.write_text("precious\n")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    (workdir / ".admin-token").symlink_to(target)
    result = subprocess.run(
        [sys.executable, str(ROOT / "admin_server.py")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "HOST": "127.0.0.1",
            "PORT": "0",
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        },
    )
    assert result.returncode == 1 and "not a regular file" in result.stderr and "Traceback" not in result.stderr
    assert (target.read_text() == "precious\n") if not dangling else not target.exists()


# -- database passwords ---------------------------------------------------------------------------------

# Each holds characters a URL gives meaning to; the last two are not Latin-1 (PyMySQL used to fail on them).
PASSWORDS = ["Pw@inside9", "Pw/slash/9", "Pw%25pct%zz", "Q@/%:#?[x]7", "Sé€kr1t@P/a%ss"]


def mysql_url(password: str, host_port: str, database: str, encode: bool, user: str = "pwtest") -> str:
    return f"mysql://{user}:{urllib.parse.quote(password, safe='') if encode else password}@{host_port}/{database}"


def leaks(text: str, password: str) -> list[str]:
    """The forms of `password` that appear in `text`: as typed, percent-encoded, or decoded from the URL."""
    forms = {password, urllib.parse.quote(password, safe=""), urllib.parse.unquote(password)}
    return [form for form in forms if form in text]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("encode", [True, False], ids=["encoded", "as-typed"])
def test_passwords_with_url_characters_are_parsed_and_never_shown(password, encode):
    url = mysql_url(password, "db.internal:3307", "railway", encode)
    kind, params = parse_database_url(url)
    expected = password if encode else urllib.parse.unquote(password)  # as typed, %xx is still decoded
    assert (kind, params["host"], params["port"], params["password"], params["database"]) == (
        "mysql",
        "db.internal",
        3307,
        expected,
        "railway",
    )
    assert redact_url(url) == "mysql://pwtest:***@db.internal:3307/railway"
    for broken in (url.replace("/railway", ""), url.replace(":3307", ":port"), url.replace("mysql:", "mysq1:")):
        with pytest.raises(ScheduleJobsError) as error:
            parse_database_url(broken)
        assert leaks(str(error.value), password) == [], broken


def start(args: list[str], database_url: str) -> subprocess.Popen:
    """One of the programs, its stdout and stderr captured together."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "PORT": "0",
            "SCHEDULES_MODULE": "tests.sample_app",
            "TEST_MARKER_FILE": os.devnull,
            "APP_ENV": "test",
        },
    )


def finish(process: subprocess.Popen, stop: bool = False) -> tuple[int, str]:
    """(exit code, output); with `stop`, SIGTERM it first."""
    if stop:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


def output_until(process: subprocess.Popen, text: str, timeout: float = 60) -> str:
    """What `process` printed up to and including the first line holding `text` (or until it ends)."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline and (line := process.stdout.readline()):
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def run_quietly(args: list[str], database_url: str) -> tuple[int, str]:
    return finish(start(args, database_url))


def test_no_program_shows_the_password_when_the_database_is_unreachable():
    closed_port = f"127.0.0.1:{free_port()}"
    urls = [
        (password, mysql_url(password, closed_port, "jobs", encode))
        for password in PASSWORDS
        for encode in (True, False)
    ]
    # All at once, to keep the test short: the daemons keep retrying the start-up, one line per attempt.
    started = [
        (
            password,
            start(["schedule_daemon.py", "--health"], url),
            start(["admin_server.py"], url),
            start(["schedule_daemon.py"], url),
        )
        for password, url in urls
    ]
    results = [(password, finish(health), finish(admin), daemon) for password, health, admin, daemon in started]
    for password, health, admin, daemon in results:
        first_attempt = output_until(daemon, "cannot connect to MySQL")
        code, rest = finish(daemon, stop=True)
        outputs = [health, admin, (code, first_attempt + rest)]
        assert outputs[0][0] == 1 and "does not answer" in outputs[0][1]
        assert outputs[1][0] == 1 and "cannot connect to MySQL at 127.0.0.1" in outputs[1][1]
        assert "mysql://pwtest:***@" in outputs[2][1] and "cannot connect to MySQL" in outputs[2][1]
        assert "Traceback" not in "".join(output for _, output in outputs)
        for _, output in outputs:
            assert leaks(output, password) == [], (password, output)


def test_a_password_with_url_characters_connects_to_mariadb_and_stays_out_of_the_log(mariadb_server, mysql_server_url):
    if mariadb_server is None:
        pytest.skip("needs the suite's own MariaDB server (root over its socket) to create a user")
    import pymysql

    password = PASSWORDS[-1]
    root = pymysql.connect(unix_socket=str(mariadb_server.dir / "sock"), user="root", autocommit=True)
    with root.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS pwtest")
        cur.execute("CREATE USER IF NOT EXISTS 'pwtest'@'%%' IDENTIFIED BY %s", (password,))
        cur.execute("GRANT ALL ON pwtest.* TO 'pwtest'@'%'")
    root.close()
    host_port = mysql_server_url.split("@")[1].rstrip("/")
    for encode in (True, False):
        code, output = run_quietly(["schedule_daemon.py", "--once"], mysql_url(password, host_port, "pwtest", encode))
        assert code == 0 and "Synced 1 schedule definitions" in output, output
        assert "mysql://pwtest:***@" in output and leaks(output, password) == []
    code, output = run_quietly(
        ["schedule_daemon.py", "--health"], mysql_url(password + "-wrong", host_port, "pwtest", True)
    )
    assert code == 1 and "Access denied" in output and leaks(output, password) == []
