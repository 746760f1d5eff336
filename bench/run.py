"""Benchmarks: what this project costs and how punctual it is, beside APScheduler 3.11 (SQLAlchemy store on SQLite).

    python3 -m pip install -r bench/requirements.txt     # once; Debian's mariadb-server for the MySQL rows
    python3 bench/run.py [--quick] [--json FILE] [--only NAME ...]

Every figure is measured --repeats times (3; 1 with --quick), this project's run and the peer's
alternating, and reported as the median with the spread (min-max); compare by the ratio, because
this machine is shared and noisy. Prints one table; --json also writes the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import py_compile
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db import Database  # noqa: E402
from runner import sync_definitions  # noqa: E402
from scheduling import load_app  # noqa: E402
from tests.mariadb_server import MariaDBServer, mariadb_available  # noqa: E402

PYTHON = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")


# -- measuring processes -------------------------------------------------------------------------------


def proc_counters(pid: int) -> dict[str, float]:
    """Peak and current RSS (MiB), CPU seconds and voluntary context switches of all threads, from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                switches += int(line.split()[1])
    return {
        "peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024,
        "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
        "cpu_s": (int(fields[11]) + int(fields[12])) / TICKS,
        "switches": switches,
    }


def ours(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, str(ROOT / "schedule_daemon.py"), *args],
        cwd=ROOT,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def peer(*args: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, str(ROOT / "bench" / "peer.py"), *args], cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True
    )


def peer_result(process: subprocess.Popen) -> dict[str, Any]:
    errors: list[str] = []
    reader = threading.Thread(
        target=lambda: errors.append(process.stderr.read())
    )  # a full stderr pipe would block the peer
    reader.start()
    out = process.stdout.read()  # not communicate(): a readline() before may hold the rest in its buffer
    reader.join()
    process.wait()
    err = errors[0] if errors else ""
    if process.returncode != 0:
        raise RuntimeError(f"peer failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def wait_for_line(path: Path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines() if path.exists() else []:
            if text in line:
                return line
        time.sleep(0.02)
    raise RuntimeError(f"{path} never logged {text!r}:\n{path.read_text()[-2000:] if path.exists() else ''}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


# -- the workbench: a temp directory, databases, results -----------------------------------------------


class Bench:
    def __init__(self, quick: bool, repeats: int):
        self.quick = quick
        self.repeats = repeats
        self.dir = Path(tempfile.mkdtemp(prefix="schedule-bench-"))
        self.mariadb = MariaDBServer() if mariadb_available() else None
        self.results: dict[str, dict[str, Any]] = {}
        self.counter = 0

    def seconds(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def path(self, name: str) -> Path:
        self.counter += 1
        return self.dir / f"{self.counter}-{name}"

    def database(self, kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{self.path('schedules.db')}"
        import pymysql

        name = f"bench_{self.counter}_{int(time.time() * 1000) % 10**8}"
        self.counter += 1
        conn = pymysql.connect(host="127.0.0.1", port=self.mariadb.port, user="test", password="test")
        conn.cursor().execute(f"CREATE DATABASE {name}")
        conn.close()
        return self.mariadb.url + name

    def record(
        self, name: str, unit: str, value: float, side: str = "ours", target: str = "", better: str = "lower"
    ) -> None:
        entry = self.results.setdefault(
            name, {"unit": unit, "ours": [], "peer": [], "target": target, "better": better}
        )
        entry[side].append(value)
        print(f"  {name} [{side}] = {value:.4g} {unit}", flush=True)

    def close(self) -> None:
        if self.mariadb:
            self.mariadb.close()


def application(env: dict[str, str]) -> Any:
    """The App the daemon will load with `env` (bench_app reads its size from the environment at import)."""
    module = env.get("SCHEDULES_MODULE", "definitions")
    before = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("BENCH_")})
    try:
        if module in sys.modules:
            importlib.reload(sys.modules[module])
        return load_app(module, env.get("APP_ENV", "development"))
    finally:  # one benchmark's BENCH_CRON or BENCH_WIDE_JOBS must not reach the next one's daemons
        os.environ.clear()
        os.environ.update(before)


def synced_database(bench: Bench, kind: str, env: dict[str, str]) -> str:
    """A migrated database with the application's schedules synced (what a deployed daemon finds)."""
    url = bench.database(kind)
    db = Database.from_url(url)
    db.migrate()
    app = application(env)
    sync_definitions(db, app, datetime.now(timezone.utc))
    db.close()
    return url


def enable_all(url: str, next_run_at: datetime | None = None) -> None:
    db = Database.from_url(url)
    now = datetime.now(timezone.utc)
    with db.transaction():
        for row in db.fetch_all("list_schedules"):
            db.execute("enable_schedule", id=row["id"], next_run_at=next_run_at or now, now=now)
    db.close()


# -- 1. cold start ---------------------------------------------------------------------------------------


def cold_start(bench: Bench) -> None:
    env = {"APP_ENV": "development"}
    url = synced_database(bench, "sqlite", env)
    peer_db = bench.path("peer.db")
    peer_result(peer("coldstart", "--db", str(peer_db)))  # create the peer's tables once, as ours are
    for _ in range(bench.repeats):
        started = time.perf_counter()
        process = ours("--once", env={**env, "DATABASE_URL": url}, log=bench.path("coldstart.log"))
        process.wait()
        bench.record(
            "cold start: process start to first pass done", "s", time.perf_counter() - started, target="<= 0.4x peer"
        )
        started = time.perf_counter()
        peer_result(peer("coldstart", "--db", str(peer_db)))
        bench.record("cold start: process start to first pass done", "s", time.perf_counter() - started, "peer")


# -- 2. idle cost ----------------------------------------------------------------------------------------


def idle(bench: Bench) -> None:
    seconds = bench.seconds(60, 10)
    for _ in range(bench.repeats):
        env = {"APP_ENV": "development"}
        url = synced_database(bench, "sqlite", env)
        enable_all(url, datetime.now(timezone.utc) + timedelta(days=1))  # four enabled schedules, none due
        log = bench.path("idle.log")
        daemon = ours(env={**env, "DATABASE_URL": url, "LOG_LEVEL": "DEBUG"}, log=log)
        other = peer("idle", "--db", str(bench.path("peer.db")), "--seconds", str(seconds))
        first = wait_for_line(log, "pass done")  # the window opens after the first pass
        other.stdout.readline()  # "ready"
        before, peer_before = proc_counters(daemon.pid), proc_counters(other.pid)
        time.sleep(seconds)
        after, peer_after = proc_counters(daemon.pid), proc_counters(other.pid)
        stop(daemon)
        # Statements issued in the window: at stop, less the one that marks the row STOPPED, less those at its start.
        statements = (
            int(wait_for_line(log, "stopped (").split("stopped (")[1].split()[0])
            - 1
            - int(first.split("(")[1].split()[0])
        )
        result = peer_result(other)
        for side, b, a, n in (
            ("ours", before, after, statements),
            ("peer", peer_before, peer_after, result["statements"]),
        ):
            bench.record("idle: peak RSS", "MiB", a["peak_rss_mib"], side, "<= 0.5x peer")
            bench.record(f"idle: CPU seconds in {seconds:.0f} s", "s", a["cpu_s"] - b["cpu_s"], side, "0")
            bench.record(
                f"idle: voluntary context switches in {seconds:.0f} s",
                "",
                a["switches"] - b["switches"],
                side,
                "heartbeats only",
            )
            bench.record(f"idle: database statements in {seconds:.0f} s", "", n, side)
    for kind in ("sqlite", "mysql") if bench.mariadb else ("sqlite",):
        for _ in range(bench.repeats):
            bench.record(
                f"idle, {kind}: database statements per hour, one-hour poll, heartbeat 60 s",
                "",
                statements_per_hour(bench, kind),
                target="heartbeats and one pass",
            )


def statements_per_hour(bench: Bench, kind: str) -> int:
    """Statements of one idle hour at the design documents' settings (SCHEDULE_POLL_INTERVAL_MS=3600000,
    HEARTBEAT_INTERVAL_MS=60000, LOCK_TIMEOUT_MS=300000), the hour compressed: every interval divided by
    `compress`. Counted from one pass to the next, so the window holds one pass and its hour of heartbeats."""
    compress = 360 if bench.quick else 60
    env = {
        "APP_ENV": "development",
        "SCHEDULE_POLL_INTERVAL_MS": str(3_600_000 // compress),
        "HEARTBEAT_INTERVAL_MS": str(60_000 // compress),
        "LOCK_TIMEOUT_MS": str(300_000 // compress),
    }
    url = synced_database(bench, kind, env)
    enable_all(url, datetime.now(timezone.utc) + timedelta(days=1))  # four enabled schedules, none due
    log = bench.path("idle-hour.log")
    daemon = ours(env={**env, "DATABASE_URL": url, "LOG_LEVEL": "DEBUG"}, log=log)
    try:
        deadline = time.monotonic() + 3600 / compress + 60
        while len(counts := [int(line.split("(")[1].split()[0]) for line in lines_with(log, "pass done")]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{log} logged {len(counts)} passes in an hour:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
    finally:
        stop(daemon)
    return counts[1] - counts[0]


def lines_with(path: Path, text: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if text in line] if path.exists() else []


# -- 3. punctuality --------------------------------------------------------------------------------------


def punctuality_ours(bench: Bench, count: int, cron: str, seconds: float) -> tuple[list[float], int]:
    env = {"SCHEDULES_MODULE": "bench.bench_app", "BENCH_SCHEDULES": str(count), "BENCH_CRON": cron, "APP_ENV": "test"}
    url = synced_database(bench, "sqlite", env)
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
    enable_all(url, start)  # before the daemon starts: it reads nextRunAt and sleeps until then
    log = bench.path("punctuality.log")
    daemon = ours(env={**env, "DATABASE_URL": url}, log=log)
    time.sleep((start - datetime.now(timezone.utc)).total_seconds() + seconds)
    end = datetime.now(timezone.utc)
    stop(daemon)
    db = Database.from_url(url)
    runs = db.fetch_all("list_runs", status=None, schedule_id=None, job_name="bench.noop", before=None, limit=10**6)
    db.close()
    lateness = [
        (r["startedAt"] - r["scheduledFor"]).total_seconds()
        for r in runs
        if r["scheduledFor"] < end - timedelta(seconds=1)
    ]
    from cron import next_after

    expected = 0
    t = start - timedelta(milliseconds=1)
    while (t := next_after(cron, "UTC", t)) < end - timedelta(seconds=1):
        expected += count
    return lateness, max(0, expected - len(lateness))


def punctuality(bench: Bench) -> None:
    seconds = bench.seconds(60, 10)
    for count, cron, label in (
        (20, "* * * * * *", "20 every-second schedules"),
        (200, "* * * * * */5", "200 due in the same second"),
    ):
        for _ in range(bench.repeats):
            lateness, missed = punctuality_ours(bench, count, cron, seconds)
            result = peer_result(
                peer(
                    "punctuality",
                    "--db",
                    str(bench.path("peer.db")),
                    "--jobs",
                    str(count),
                    "--cron",
                    cron,
                    "--seconds",
                    str(seconds + 2),
                )
            )
            for side, values, miss in (("ours", lateness, missed), ("peer", result["lateness"], result["missed"])):
                values_ms = [v * 1000 for v in values]
                if count == 20:
                    for q in (50, 95, 99):
                        bench.record(
                            f"punctuality, {label}: lateness p{q}",
                            "ms",
                            percentile(values_ms, q),
                            side,
                            "<= 0.5x peer" if q == 99 else "",
                        )
                bench.record(
                    f"punctuality, {label}: lateness max",
                    "ms",
                    max(values_ms or [float("nan")]),
                    side,
                    "< 1000" if count == 200 else "",
                )
                bench.record(f"punctuality, {label}: missed occurrences", "", miss, side, "0")


# -- 4. scale: 10,000 schedules ---------------------------------------------------------------------------


def many_schedules(bench: Bench) -> tuple[int, dict[str, str]]:
    """10,000 schedules (2,000 with --quick) of 1,440 distinct daily crons: how many, and the app's env."""
    count = 10_000 if not bench.quick else 2_000
    return count, {
        "SCHEDULES_MODULE": "bench.bench_app",
        "BENCH_SCHEDULES": str(count),
        "BENCH_CRON": "spread",
        "APP_ENV": "test",
    }


def scale(bench: Bench) -> None:
    count, env = many_schedules(bench)
    app = application(env)
    label = f"scale, {count} schedules"
    for _ in range(bench.repeats):
        url = bench.database("sqlite")
        db = Database.from_url(url)
        db.migrate()
        started = time.perf_counter()
        sync_definitions(db, app, datetime.now(timezone.utc))
        bench.record(f"{label}: first sync", "s", time.perf_counter() - started, target="< 1 s, 10x faster than peer")
        peer_db = bench.path("peer.db")
        bench.record(
            f"{label}: first sync",
            "s",
            peer_result(peer("sync", "--db", str(peer_db), "--jobs", str(count)))["seconds"],
            "peer",
        )

        enable_all(url, datetime.now(timezone.utc) + timedelta(days=1))
        started = time.perf_counter()
        ours("--once", env={**env, "DATABASE_URL": url}, log=bench.path("restart.log")).wait()
        bench.record(f"{label}: restart, nothing due", "s", time.perf_counter() - started)
        started = time.perf_counter()
        restarted = peer_result(peer("restart", "--db", str(peer_db), "--jobs", str(count)))
        bench.record(f"{label}: restart, nothing due", "s", time.perf_counter() - started, "peer")
        # Peak RSS from VmHWM after the first pass (ru_maxrss would include this big parent's, copied at fork).
        log = bench.path("rss.log")
        daemon = ours(env={**env, "DATABASE_URL": url, "LOG_LEVEL": "DEBUG"}, log=log)
        wait_for_line(log, "pass done")
        bench.record(f"{label}: daemon peak RSS after its first pass", "MiB", proc_counters(daemon.pid)["peak_rss_mib"])
        stop(daemon)
        bench.record(f"{label}: daemon peak RSS after its first pass", "MiB", restarted["peak_rss_mib"], "peer")

        timings = []
        for _ in range(50):
            started = time.perf_counter()
            db.fetch_all("due_schedules", now=datetime.now(timezone.utc), limit=100)
            timings.append(time.perf_counter() - started)
        bench.record(f"{label}: due-check query", "ms", statistics.median(timings) * 1000)
        db.close()
        bench.record(f"{label}: GET /admin/schedules", "s", admin_latency(bench, url, env, "/admin/schedules", 3))


def restart(bench: Bench) -> None:
    """`--once` after 24 h down (every schedule overdue, no daemon alive since): process start to exit."""
    count, env = many_schedules(bench)
    template = synced_database(bench, "sqlite", env)
    # The daemon stopped a day ago: each schedule still waits for its first occurrence after that moment.
    stopped = datetime.now(timezone.utc) - timedelta(days=1)
    db = Database.from_url(template)
    with db.transaction():
        db.execute_many(
            "enable_schedule",
            [
                {"id": s.id, "next_run_at": s.next_after(stopped), "now": stopped}
                for s in application(env).schedules.values()
            ],
        )
    db.close()
    label = f"restart after 24 h down, {count} schedules all overdue: process start to exit"
    for _ in range(bench.repeats):
        url = bench.database("sqlite")  # a fresh copy of the overdue database for each run
        Path(url.removeprefix("sqlite:///")).write_bytes(Path(template.removeprefix("sqlite:///")).read_bytes())
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        daemon = ours("--once", env={**env, "DATABASE_URL": url}, log=bench.path("downtime.log"))
        daemon.wait()
        bench.record(label, "s", time.perf_counter() - started, target="< 0.5 s, 10x faster than peer")
        # CPU of the daemon and the children it reaped: what a busy shared machine does not inflate.
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        bench.record(
            f"restart after 24 h down, {count} schedules: CPU seconds (user + system)",
            "s",
            after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime,
        )
        # Each schedule caught up once: one skip record (no daemon was alive when it fell due) or, for the
        # few due within the liveness margin of the start (3 minutes of a day's 1,440), one run, with a
        # coalesced skip record if it also fell due since the template was built; none still overdue.
        db = Database.from_url(url)
        runs = db.fetch_all("list_runs", status=None, schedule_id=None, job_name=None, before=None, limit=10**6)
        skips = Counter(r["scheduleId"] for r in runs if r["jobName"] == "*")
        ran = Counter(r["scheduleId"] for r in runs if r["jobName"] != "*")
        late = [r["id"] for r in db.fetch_all("list_schedules") if r["nextRunAt"] <= datetime.now(timezone.utc)]
        db.close()
        assert daemon.returncode == 0 and len(set(skips) | set(ran)) == count, (len(skips), len(ran))
        assert 0 < len(ran) <= count // 100, len(ran)
        assert set(skips.values()) <= {1} and set(ran.values()) <= {1} and not late, (skips.most_common(3), late[:3])

        overdue_db = bench.path("peer-overdue.db")
        peer_result(peer("sync", "--db", str(overdue_db), "--jobs", str(count), "--overdue"))
        started = time.perf_counter()
        peer_result(peer("restart", "--db", str(overdue_db), "--jobs", str(count), "--overdue"))
        bench.record(label, "s", time.perf_counter() - started, "peer")


def admin_latency(bench: Bench, url: str, env: dict[str, str], path: str, requests: int) -> float:
    server, port = start_admin(bench, url, env)
    try:
        timings = []
        for _ in range(requests):
            started = time.perf_counter()
            status, _ = asyncio.run(http_get(port, path))
            assert status == 200, status
            timings.append(time.perf_counter() - started)
        return statistics.median(timings)
    finally:
        stop(server)


def start_admin(bench: Bench, url: str, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = bench.path("admin.log")
    server = subprocess.Popen(
        [PYTHON, str(ROOT / "admin_server.py")],
        cwd=ROOT,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            **env,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": url,
            "PORT": str(port),
            "ADMIN_TOKEN": "bench-token",
            "LOG_LEVEL": "WARNING",
        },
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if asyncio.run(http_get(port, "/healthz"))[0] == 200:
                return server, port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def http_get(port: int, path: str) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer bench-token\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1]), len(data)


# -- 5. several daemons ----------------------------------------------------------------------------------


def several_daemons(bench: Bench) -> None:
    seconds = bench.seconds(60, 10)
    for _ in range(bench.repeats):
        for kind in ("sqlite", "mysql") if bench.mariadb else ("sqlite",):
            marker = bench.path("marker.txt")
            marker.touch()
            env = {
                "SCHEDULES_MODULE": "bench.bench_app",
                "BENCH_SCHEDULES": "1",
                "BENCH_CRON": "* * * * * *",
                "APP_ENV": "test",
                "BENCH_MARKER": str(marker),
                "HEARTBEAT_INTERVAL_MS": "1000",
                "LOCK_TIMEOUT_MS": "5000",
            }
            url = synced_database(bench, kind, env)
            start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
            enable_all(url, start)
            logs = [bench.path(f"daemon{i}.log") for i in range(3)]
            daemons = [ours(env={**env, "DATABASE_URL": url}, log=log) for log in logs]
            time.sleep((start - datetime.now(timezone.utc)).total_seconds() + seconds)
            for daemon in daemons:
                stop(daemon)
            lines = [line.split() for line in marker.read_text().splitlines()]
            window = {(start + timedelta(seconds=i)).isoformat() for i in range(int(seconds))}
            per_occurrence = Counter(line[2] for line in lines if line[2] in window)
            db = Database.from_url(url)
            runs = db.fetch_all(
                "list_runs", status=None, schedule_id=None, job_name="bench.noop", before=None, limit=10**6
            )
            db.close()
            # Runs skipped at the SIGTERM that ends the benchmark never started: no lateness.
            lateness = [(r["startedAt"] - r["scheduledFor"]).total_seconds() * 1000 for r in runs if r["startedAt"]]
            label = f"3 daemons, every-second schedule, {kind}"
            bench.record(f"{label}: duplicate runs", "", sum(n - 1 for n in per_occurrence.values()), target="0")
            bench.record(f"{label}: coverage", "%", 100 * len(per_occurrence) / seconds, better="higher")
            bench.record(f"{label}: lateness p50", "ms", percentile(lateness, 50))
            bench.record(f"{label}: lateness p99", "ms", percentile(lateness, 99))
        shared = bench.path("peer-shared.db")
        marker = bench.path("peer-marker.txt")
        marker.touch()
        peer_result(peer("coldstart", "--db", str(shared)))
        others = [
            peer("shared", "--db", str(shared), "--marker", str(marker), "--seconds", str(seconds)) for _ in range(2)
        ]
        for other in others:
            other.stdout.readline()
            peer_result(other)
        stamps = [int(line.split()[0]) for line in marker.read_text().splitlines()]
        first = min(stamps) if stamps else 0
        per_second = Counter(t for t in stamps if first < t <= first + seconds)
        duplicates = sum(n - 1 for n in per_second.values())
        bench.record("2 schedulers sharing one store (peer): duplicate runs", "", duplicates, "peer")
        bench.record(
            "2 schedulers sharing one store (peer): coverage",
            "%",
            100 * len(per_second) / seconds,
            "peer",
            better="higher",
        )


# -- 6. queue --------------------------------------------------------------------------------------------


QUEUE_SHAPES = {  # name: (schedule, occurrences, jobs each)
    "one-job occurrences": ("bench-0", 3000, 1),
    "1,000-job occurrences": ("bench-wide", 3, 1000),
}


def queue(bench: Bench) -> None:
    """No-op runs through the queue, from the moment they are queued to the last completed. MariaDB also
    counts the workers' round trips per run."""
    for _ in range(bench.repeats):
        for kind in ("sqlite", "mysql") if bench.mariadb else ("sqlite",):
            for shape, (schedule_id, occurrences, width) in QUEUE_SHAPES.items():
                for workers in (1, 4) if bench.quick else (1, 2, 4):
                    queue_run(
                        bench,
                        kind,
                        shape,
                        schedule_id,
                        max(1, occurrences // (5 if bench.quick else 1)),
                        width,
                        workers,
                    )


def queue_run(
    bench: Bench, kind: str, shape: str, schedule_id: str, occurrences: int, width: int, workers: int
) -> None:
    from occurrence import enqueue_occurrence

    marker = bench.path("queue-marker.txt")
    marker.touch()
    env = {
        "SCHEDULES_MODULE": "bench.bench_app",
        "BENCH_SCHEDULES": "1",
        "BENCH_WIDE_JOBS": "1000",
        "APP_ENV": "test",
        "EXECUTION_MODE": "queue",
        "JOB_WORKER_POLL_INTERVAL_MS": "100",
        "BENCH_MARKER": str(marker),
        "LOG_LEVEL": "WARNING",
    }
    url = synced_database(bench, kind, env)
    processes = [
        ours("--worker", env={**env, "DATABASE_URL": url}, log=bench.path("worker.log")) for _ in range(workers)
    ]
    db = Database.from_url(url)
    while len(db.fetch_all("running_workers", worker_type="job_worker")) < workers:
        time.sleep(0.05)
    app = application(env)
    schedule = app.schedules[schedule_id]
    runs = occurrences * width
    # Enqueued in one transaction (a burst, as after a deploy or an outage); the clock starts when it
    # commits, the moment the runs are queued for the workers, and stops when the last one completed.
    base = datetime.now(timezone.utc).replace(microsecond=0)
    with db.transaction():
        for i in range(occurrences):
            enqueue_occurrence(db, app, schedule, base + timedelta(seconds=i), "MANUAL", base)
    started = time.perf_counter()
    questions = server_questions(db)
    ours_before = db.statements_issued
    while db.fetch_one("queue_depth")["queued"] or db.fetch_all(
        "list_runs", status="RUNNING", schedule_id=None, job_name=None, before=None, limit=1
    ):
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    # Every statement the server answered since, less the benchmark's own polling.
    worker_statements = server_questions(db) - questions - (db.statements_issued - ours_before)

    latency = stream_latency(db, app, app.schedules["bench-0"], 50) if workers == 1 and width == 1 else None
    for process in processes:
        stop(process)
    executed = Counter(line.split()[0] for line in marker.read_text().splitlines())
    marker.unlink()
    label = f"queue, {kind}, {shape}, {workers} worker{'s' if workers > 1 else ''}"
    target = ">= 2000 (MariaDB, 4 workers)" if workers == 4 and kind == "mysql" else ""
    bench.record(f"{label}: no-op jobs per second", "jobs/s", runs / elapsed, target=target, better="higher")
    if kind == "mysql":
        bench.record(f"{label}: workers' database round trips per run", "", worker_statements / runs)
    bench.record(f"{label}: duplicate executions", "", sum(n - 1 for n in executed.values()), target="0")
    bench.record(f"{label}: runs lost", "", runs + (50 if latency is not None else 0) - len(executed), target="0")
    if latency is not None:
        bench.record(f"queue, {kind}: enqueue to start, idle worker polling every 100 ms, p50", "ms", latency)
    db.close()


def server_questions(db: Database) -> int:
    """MariaDB: statements the server has answered so far, from every client (0 on SQLite)."""
    return int(db.fetch_value("server_questions", "Value")) if db.kind == "mysql" else 0


def stream_latency(db: Database, app: Any, schedule: Any, count: int) -> float:
    """Enqueue one run every 50 ms into an idle worker's queue; the median wait until it started."""
    from occurrence import enqueue_occurrence

    base = datetime.now(timezone.utc) + timedelta(days=1)
    batches = []
    for i in range(count):
        with db.transaction():
            batches.append(
                enqueue_occurrence(db, app, schedule, base + timedelta(seconds=i), "MANUAL", datetime.now(timezone.utc))
            )
        time.sleep(0.05)
    time.sleep(0.5)
    result = []
    for batch in batches:
        [run] = db.fetch_all("batch_runs", batch_id=batch)
        if run["startedAt"] is not None:
            result.append((run["startedAt"] - run["queuedAt"]).total_seconds() * 1000)
    return statistics.median(result) if result else float("nan")


# -- 7. admin API ----------------------------------------------------------------------------------------


def admin_api(bench: Bench) -> None:
    """50 clients, each opening a new connection per request (HTTP/1.0, no If-None-Match), as fast as they can.

    The load generator is this process, on the same 2 cores as the server: its CPU per request is
    recorded beside the server's so that a reader can tell which one was the limit.
    """
    seconds = bench.seconds(20, 5)
    env = {"SCHEDULES_MODULE": "bench.bench_app", "BENCH_SCHEDULES": "200", "BENCH_CRON": "spread", "APP_ENV": "test"}
    for _ in range(bench.repeats):
        for kind in ("sqlite", "mysql") if bench.mariadb else ("sqlite",):
            url = synced_database(bench, kind, env)
            server, port = start_admin(bench, url, env)
            try:
                for path in ("/admin/schedules", "/healthz"):
                    server_before, started = proc_counters(server.pid)["cpu_s"], time.process_time()
                    done, errors, latencies = asyncio.run(load(port, path, 50, seconds))
                    load_cpu, server_cpu = time.process_time() - started, proc_counters(server.pid)["cpu_s"]
                    label = f"admin API, {kind}, 50 clients connecting anew, GET {path}"
                    listing = path == "/admin/schedules"
                    bench.record(f"{label}: requests per second", "req/s", done / seconds, better="higher")
                    bench.record(f"{label}: latency p50", "ms", percentile(latencies, 50))
                    bench.record(
                        f"{label}: latency p99", "ms", percentile(latencies, 99), target="<= 150" if listing else ""
                    )
                    bench.record(f"{label}: errors", "", errors, target="0")
                    bench.record(
                        f"{label}: server CPU per request", "ms", (server_cpu - server_before) / max(done, 1) * 1000
                    )
                    bench.record(f"{label}: load generator CPU per request", "ms", load_cpu / max(done, 1) * 1000)
            finally:
                stop(server)


async def load(port: int, path: str, connections: int, seconds: float) -> tuple[int, int, list[float]]:
    """`connections` clients in a loop until `seconds` pass; any answer but a 200, or none, is an error."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                status, _ = await http_get(port, path)
            except (OSError, ValueError, IndexError):  # refused, reset, or an answer without a status line
                status = 0
            if status == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1

    await asyncio.gather(*(client() for _ in range(connections)))
    return len(latencies), errors, latencies


# -- the table -------------------------------------------------------------------------------------------


# -- 8. supervision -----------------------------------------------------------------------------------


def tree_pss_mib(pid: int) -> float:
    """PSS of `pid` and all its descendants (fork server, job children), from smaps_rollup: shared pages count once."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending.extend(children.get(current, []))
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return total / 1024


def supervision(bench: Bench) -> None:
    """Per-job cost of supervision (a no-op job in a warm child against a call in-process, as before), and the
    idle tree's memory right after a run (daemon, fork server and one child) beside the peer's."""
    from jobs import JobContext
    from records import JobCall
    from settings import Settings
    from supervisor import ChildPool

    env = {"SCHEDULES_MODULE": "bench.bench_app", "BENCH_SCHEDULES": "1", "APP_ENV": "test"}
    calls = int(bench.seconds(3000, 300))
    for _ in range(bench.repeats):
        url = synced_database(bench, "sqlite", env)
        db = Database.from_url(url)
        app = application(env)
        job = app.registry.jobs["bench.noop"]
        pool = ChildPool(db, Settings.from_env({**env, "DATABASE_URL": url}), "bench.bench_app", label="bench")
        now = datetime.now(timezone.utc)
        inline, supervised = [], []
        for i in range(calls + 20):
            call = JobCall(i + 1, job.name, None, now, "MANUAL", 1)
            started = time.perf_counter()
            job.fn(JobContext(call.run_id, job.name, None, now, "MANUAL", 1, db, lambda level, message: None))
            inline.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            pool.run(job, call)
            supervised.append((time.perf_counter() - started) * 1000)
        pool.close()
        db.close()
        inline, supervised = inline[20:], supervised[20:]  # the first calls start the fork server and a child
        for q in (50, 99):
            bench.record(f"no-op job, before (in-process call): p{q}", "ms", percentile(inline, q))
            bench.record(
                f"no-op job, supervised (warm child): p{q}",
                "ms",
                percentile(supervised, q),
                target="<= 5 ms" if q == 50 else "",
            )

    # JOB_CHILD_IDLE_S=3 stands for the default 300 s: the tree is measured once right after the runs
    # (daemon, fork server, one child) and once idle (the child ended, the fork server stopped).
    for _ in range(bench.repeats):
        env = {"APP_ENV": "development"}
        url = synced_database(bench, "sqlite", env)
        enable_all(url)  # the four schedules run once now, then nothing is due for a while
        log = bench.path("idle-tree.log")
        daemon = ours(env={**env, "DATABASE_URL": url, "LOG_LEVEL": "DEBUG", "JOB_CHILD_IDLE_S": "3"}, log=log)
        other = peer("idle", "--db", str(bench.path("peer.db")), "--seconds", "10")
        wait_for_line(log, "pass done")
        other.stdout.readline()  # "ready"
        time.sleep(1)
        peer_pss = tree_pss_mib(other.pid)
        bench.record(
            "process tree PSS right after a run (daemon, fork server, a child)", "MiB", tree_pss_mib(daemon.pid)
        )
        bench.record("process tree PSS right after a run (daemon, fork server, a child)", "MiB", peer_pss, "peer")
        wait_for_line(log, "fork server stopped")
        bench.record(
            "idle process tree PSS (after JOB_CHILD_IDLE_S)", "MiB", tree_pss_mib(daemon.pid), target="<= 0.75x peer"
        )
        bench.record("idle process tree PSS (after JOB_CHILD_IDLE_S)", "MiB", tree_pss_mib(other.pid), "peer")
        stop(daemon)
        peer_result(other)


BENCHMARKS: dict[str, Callable[[Bench], None]] = {
    "cold_start": cold_start,
    "idle": idle,
    "punctuality": punctuality,
    "scale": scale,
    "restart": restart,
    "several_daemons": several_daemons,
    "queue": queue,
    "admin_api": admin_api,
    "supervision": supervision,
}


def number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    text = number(statistics.median(values))
    if len(values) > 1:
        text += f" ({number(min(values))}-{number(max(values))})"
    return text


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| figure | unit | this project | APScheduler 3.11 | ratio | target |", "|---|---|---|---|---|---|"]
    for name, entry in results.items():
        ours_v, peer_v = entry["ours"], entry["peer"]
        ratio = "-"
        if ours_v and peer_v and statistics.median(peer_v):
            ratio = f"{statistics.median(ours_v) / statistics.median(peer_v):.2f}x"
        lines.append(f"| {name} | {entry['unit']} | {fmt(ours_v)} | {fmt(peer_v)} | {ratio} | {entry['target']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat: for development")
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures to FILE")
    parser.add_argument("--repeats", type=int, help="repeats per figure (default 3, or 1 with --quick)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    args = parser.parse_args()
    bench = Bench(args.quick, args.repeats or (1 if args.quick else 3))
    # Start-up is measured as a deployed process starts: from bytecode, as pip left the dependencies'
    # (the peer's too). A machine with PYTHONDONTWRITEBYTECODE set never writes the project's own, and
    # every start would compile it again (about 35 ms).
    for source in [*ROOT.glob("*.py"), *ROOT.glob("jobs/*.py"), *ROOT.glob("bench/*.py")]:
        py_compile.compile(str(source), doraise=True)
    print(
        f"benchmarks in {bench.dir}; MariaDB: {'yes' if bench.mariadb else 'not installed (SQLite only)'}", flush=True
    )
    try:
        for name in args.only or BENCHMARKS:
            print(f"== {name}", flush=True)
            try:
                BENCHMARKS[name](bench)
            except Exception:  # report what was measured; say what failed
                print(f"!! {name} failed:\n{traceback.format_exc()}", flush=True)
                bench.results.setdefault(
                    f"{name}: FAILED (see output)",
                    {"unit": "", "ours": [], "peer": [], "target": "", "better": "lower"},
                )
    finally:
        bench.close()
    print()
    print(f"Median (min-max) of {bench.repeats} run(s) each, {os.cpu_count()} cores; ratio = this project / peer.")
    print(table(bench.results))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"repeats": bench.repeats, "quick": bench.quick, "results": bench.results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
