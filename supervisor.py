"""Supervised job execution: a job's code runs in a long-lived child process, never in the process that claimed it.

    pool = ChildPool(db, settings, app_module="definitions", label="daemon")
    result = pool.run(job, JobCall(run_id, job.name, schedule_id, scheduled_for, "CRON", 1))
    pool.close()

The claiming process stays the supervisor: it holds the claim and the lease and records the run,
while the job runs in a child. A hung job is killed at its timeout (SIGTERM, then SIGKILL after
JOB_KILL_GRACE_S); a child that exits, dies of a signal or breaks its pipe fails only its run; memory
a job allocates is the child's. Children are reused (one run at a time each), recycled after
JOB_MAX_RUNS_PER_CHILD runs, and end by themselves after JOB_CHILD_IDLE_S without work. A daemon
calls expect() with the time to its next due occurrence: one child is started PREWARM_LEAD_S before
it, so an hourly job pays no cold start while the daemon holds no child in between.

Children come from a `forkserver`: a clean single-threaded process, started on first use, that has
imported this module, the application and the main script once, and forks each child from there.
Forking the supervisor itself is unsafe (its heartbeat and request threads may hold locks at the
moment of the fork), and `spawn` would pay a fresh interpreter and imports per child. `forkserver`
exists on Linux and macOS alike.

What a job writes to sys.stdout (INFO) or sys.stderr (WARNING), the `logging` records it emits (at
their level) and its ctx.log() lines travel in order over the child's pipe; the supervisor echoes
them to its log with the job name and run id and stores them as JobLog lines in batches, at most
JOB_LOG_MAX_BYTES per run, the last line saying how many bytes were dropped.
"""

from __future__ import annotations

import importlib
import io
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

import jobs
from db import Database
from errors import ScheduleJobsError
from jobs import Job, JobContext, JobRegistry
from records import JobCall, JobResult, LogLine, RunStatus
from settings import Settings

log = logging.getLogger("supervisor")

START_METHOD: Final = "forkserver"
FLUSH_EVERY_S = 1.0  # stored log lines lag their job by at most this much
FLUSH_LINES = 500  # ... or by this many lines
IDLE_MARGIN_S = 5.0  # a child outlives its idle time by this much, so the pool ends it first (no race)
# A cold start (fork server, then a child) measured 0.1-0.5 s on a busy 2-core machine: 2 s covers it
# several times over, and costs only 2 s of a child's life per occurrence. Never more than half of
# JOB_CHILD_IDLE_S, or the pre-warmed child would count as stale by the time its occurrence is due.
PREWARM_LEAD_S = 2.0
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


# The fork server and the resource tracker are one per process, shared by every pool in it (the admin
# server has one for "Run now" and its embedded worker another): they stop only when no pool has a
# child, and never while one of them is starting a child through them.
_POOLS: weakref.WeakSet[ChildPool] = weakref.WeakSet()
_STARTING = threading.Lock()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- the supervisor's side ------------------------------------------------------------------------


@dataclass(eq=False)  # identity: the pool keeps them in a set
class Child:
    """One child process, seen from the supervisor."""

    process: Any
    conn: Any
    runs: int = 0
    idle_since: float = 0.0


class ChildPool:
    """Runs jobs in reused children; any number of threads may call run() at once (one child each)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        app_module: str,
        label: str = "daemon",
        hard_stop: threading.Event | None = None,
    ):
        self.db = db
        self.settings = settings
        self.app_module = app_module
        self.label = label
        # Set when the shutdown grace has run out: runs still going are ended "interrupted: shutting down".
        self.hard_stop = hard_stop or threading.Event()
        self._context = multiprocessing.get_context(START_METHOD)
        self._context.set_forkserver_preload(["__main__", "supervisor", app_module])
        self._lock = threading.Lock()
        self._idle: list[Child] = []
        self._all: set[Child] = set()
        self._trim_timer: threading.Timer | None = None
        self._prewarm_timer: threading.Timer | None = None
        self._prewarm_at = 0.0  # time.monotonic() at which the armed pre-warm fires
        self._prewarm_due = 0.0  # ... and at which its occurrence is due
        self._closed = False
        _POOLS.add(self)
        # Children watch this pipe's read end: when the supervisor dies, it hits EOF and they exit.
        self._alive_r, self._alive_w = self._context.Pipe(duplex=False)
        # Idle children end when the supervisor exits, even without close(), so exit never waits on them.
        self._finalizer = weakref.finalize(self, _end_children, self._all, self._alive_w)

    def run(self, job: Job, call: JobCall) -> JobResult:
        """Run `job` in a child and wait for its end; never raises for anything the job does."""
        timeout = float(job.timeout if job.timeout is not None else self.settings.job_timeout_s)
        sink = LogSink(self.db, call, self.settings.job_log_max_bytes, self.label)
        started = time.monotonic()
        child = self._send(call)
        deadline = started + timeout if timeout > 0 else None
        status, error, healthy = RunStatus.FAILED, "", False
        while True:
            # Checked before every message too: a job flooding its output must not outrun its timeout.
            if deadline is not None and time.monotonic() >= deadline:
                self._kill(child)
                error = f"timed out after {timeout:g} s (the job's process was killed)"
                break
            if self.hard_stop.is_set():
                self._kill(child)
                error = "interrupted: shutting down (the job ran past SHUTDOWN_GRACE_S and was killed)"
                break
            sink.flush_if_due()
            wait = FLUSH_EVERY_S if deadline is None else max(0.0, min(FLUSH_EVERY_S, deadline - time.monotonic()))
            ready = multiprocessing.connection.wait([child.conn, child.process.sentinel], wait)
            if child.conn in ready:
                try:
                    message = child.conn.recv()
                except (EOFError, OSError):
                    error = self._death(child)
                    break
                if message[0] == "line":
                    sink.add(LogLine(message[1], message[2], message[3]))
                    continue
                status, error, healthy = RunStatus(message[1]), message[2], True
                break
            if ready:  # the child ended without closing its pipe (a grandchild may hold it)
                error = self._death(child)
                break
        sink.close()
        if healthy:
            self._release(child)
        else:
            self._discard(child)
        return JobResult(status, error or None, int((time.monotonic() - started) * 1000))

    def warm(self) -> None:
        """Start one idle child now unless one is idle (a job worker at start: work may come at any time)."""
        with self._lock:
            if self._idle:
                return
        self._park(self._start())

    def expect(self, due_in: float) -> None:
        """The next occurrence is due in `due_in` seconds: have an idle child ready for it, started
        PREWARM_LEAD_S before it is due (at once if it is due sooner), unless one will still be idle then."""
        lead = min(PREWARM_LEAD_S, self.settings.job_child_idle_s / 2)
        if lead <= 0:  # JOB_CHILD_IDLE_S=0: no child is ever reused, so none is started ahead
            return
        now = time.monotonic()
        at = now + max(0.0, due_in - lead)
        with self._lock:
            if self._closed or self._ready_at(now + due_in):
                return
            if self._prewarm_timer is not None:
                if abs(self._prewarm_at - at) < 0.5:  # armed for this occurrence on an earlier pass
                    return
                self._prewarm_timer.cancel()
            self._prewarm_at, self._prewarm_due = at, now + due_in
            self._prewarm_timer = threading.Timer(at - now, self._prewarm)
            self._prewarm_timer.daemon = True
            self._prewarm_timer.start()

    def _prewarm(self) -> None:
        with self._lock:
            needed = not self._closed and not self._ready_at(self._prewarm_due)
        try:
            if needed:
                child = self._start()
                log.debug("[%s] job child %s pre-warmed for the next occurrence", self.label, child.process.pid)
                self._park(child)
        except Exception:  # the job's own start will try again, and report what fails
            log.exception("[%s] could not pre-warm a job child", self.label)
        finally:
            with self._lock:  # only now: a pass meanwhile must not start a second child for the same occurrence
                if self._prewarm_timer is threading.current_thread():
                    self._prewarm_timer = None

    def _ready_at(self, at: float) -> bool:
        """Is some idle child alive that will still be idle (not ended) at monotonic time `at`? (lock held)"""
        return any(c.process.is_alive() and at - c.idle_since < self.settings.job_child_idle_s for c in self._idle)

    def end_runs_after_grace(self) -> None:
        """At shutdown (the caller stops claiming): runs still going after SHUTDOWN_GRACE_S are killed."""
        timer = threading.Timer(self.settings.shutdown_grace_s, self.hard_stop.set)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        """End every child (idle ones at once; a busy one when its run ends, or now if this process exits)."""
        with self._lock:
            self._closed = True
            if self._prewarm_timer is not None:
                self._prewarm_timer.cancel()
        self._finalizer()

    def pids(self) -> list[int]:
        """The children alive now (tests and the benchmark count them)."""
        with self._lock:
            return sorted(c.process.pid for c in self._all if c.process.is_alive())

    # -- children --------------------------------------------------------------------------------

    def _send(self, call: JobCall) -> Child:
        """Hand the call to an idle child, or to a new one if the idle one turns out to be gone."""
        child = self._acquire()
        try:
            child.conn.send(call)
            return child
        except OSError:
            self._discard(child)
        child = self._start()
        child.conn.send(call)
        return child

    def _acquire(self) -> Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()  # the most recently used: the others are left to go idle and end
                if child.process.is_alive() and time.monotonic() - child.idle_since < self.settings.job_child_idle_s:
                    return child
                self._forget(child)
        return self._start()

    def _start(self) -> Child:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=child_main,
            name="job-child",
            args=(
                child_conn,
                self._alive_r,
                self.app_module,
                self.settings.database_url,
                self.settings.job_child_idle_s + IDLE_MARGIN_S,
                logging.getLogger().level,
                dict(os.environ),
            ),
        )
        with _STARTING:  # counted among the children before the fork server may be stopped again
            process.start()
            child = Child(process, parent_conn)
            with self._lock:
                self._all.add(child)
        child_conn.close()  # only the child's copy stays open, so its death reads as EOF here
        log.debug("[%s] started job child %s", self.label, process.pid)
        return child

    def _release(self, child: Child) -> None:
        child.runs += 1
        if child.runs >= self.settings.job_max_runs_per_child:
            log.info(
                "[%s] job child %s recycled after %d runs (JOB_MAX_RUNS_PER_CHILD)",
                self.label,
                child.process.pid,
                child.runs,
            )
            self._discard(child)
            return
        self._park(child)

    def _park(self, child: Child) -> None:
        """Put a child with the idle ones; when none is busy, trim() later ends what stayed idle."""
        child.idle_since = time.monotonic()
        with self._lock:
            self._idle.append(child)
            # Nothing running: end what stays idle, then the fork server. One timer at a time (a thread
            # per job would cost a queue worker a fifth of its throughput); trim() arms the next one.
            if len(self._idle) == len(self._all) and self._trim_timer is None:
                self._arm_trim(self.settings.job_child_idle_s + 1)

    def _arm_trim(self, delay: float) -> None:
        """Call trim() in `delay` seconds (caller holds the lock)."""
        self._trim_timer = threading.Timer(delay, self.trim)
        self._trim_timer.daemon = True
        self._trim_timer.start()

    def trim(self) -> None:
        """End children idle for JOB_CHILD_IDLE_S; with none left in any pool, stop the fork server and the
        resource tracker too (an idle daemon then holds no process it does not need; the next job starts them again)."""
        with self._lock:
            now = time.monotonic()
            for child in [c for c in self._idle if now - c.idle_since >= self.settings.job_child_idle_s]:
                self._idle.remove(child)
                self._forget(child)
            empty = not self._all
            self._trim_timer = None
            if self._idle and len(self._idle) == len(
                self._all
            ):  # parked since the timer was armed: not idle long enough yet
                self._arm_trim(min(c.idle_since for c in self._idle) + self.settings.job_child_idle_s + 1 - now)
        if empty and _stop_fork_server():
            log.debug("[%s] no job children left: fork server stopped", self.label)

    def _discard(self, child: Child) -> None:
        with self._lock:
            self._forget(child)
            if not self._all and self._trim_timer is None:  # the last child died or timed out: trim the rest later
                self._arm_trim(self.settings.job_child_idle_s + 1)

    def _forget(self, child: Child) -> None:
        """End a child that will not be used again (caller holds the lock): closing its pipe makes it exit."""
        self._all.discard(child)
        child.conn.close()
        child.process.join(timeout=0)  # reap it if it is already gone; otherwise the next start() does

    def _kill(self, child: Child) -> None:
        """SIGTERM, then SIGKILL after JOB_KILL_GRACE_S: the job may clean up, but cannot refuse."""
        child.process.terminate()
        child.process.join(self.settings.job_kill_grace_s)
        if child.process.is_alive():
            log.warning(
                "[%s] job child %s ignored SIGTERM for %ds: SIGKILL",
                self.label,
                child.process.pid,
                self.settings.job_kill_grace_s,
            )
            child.process.kill()
            child.process.join()

    def _death(self, child: Child) -> str:
        """Why the child's pipe closed before it reported the job's end."""
        child.process.join(self.settings.job_kill_grace_s)
        if child.process.is_alive():  # it closed the pipe but lives on: end it
            self._kill(child)
            return "the job's process broke its pipe to the supervisor (it was killed)"
        return describe_exit(child.process.exitcode)


def _stop_fork_server() -> bool:
    """Stop the fork server and the resource tracker (the fork server starts it: a third interpreter,
    7 MiB) if no pool of this process has a child; True if stopped. No public API: CPython's own tests
    stop both this way."""
    with _STARTING:  # not while a child is being started through them
        if any(pool._all for pool in list(_POOLS)):
            return False
        multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
        multiprocessing.resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]
    return True


def describe_exit(code: int | None) -> str:
    """A child's exit code in words: the code, or the signal's name."""
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory, or killed by an operator)" if -code == signal.SIGKILL else ""
        return f"the job's process died of signal {name}{hint}"
    return f"the job's process exited with code {code} before the job ended"


def _end_children(children: set[Child], alive_w: Any) -> None:
    for child in list(children):
        child.conn.close()
    children.clear()
    alive_w.close()


class LogSink:
    """A run's captured lines: echoed to the supervisor's log, stored in batches, capped in bytes."""

    def __init__(self, db: Database, call: JobCall, max_bytes: int, label: str):
        self.db = db
        self.call = call
        self.max_bytes = max_bytes
        self.label = label
        self.kept = 0
        self.dropped = 0
        self.pending: list[dict[str, Any]] = []
        self.first_pending = 0.0

    def add(self, line: LogLine) -> None:
        message = line.message  # a line longer than its column is cut by db.py, with a marker
        size = len(message.encode("utf-8", "replace"))
        if self.dropped or self.kept + size > self.max_bytes:
            self.dropped += size
            return
        self.kept += size
        level = line.level.upper() if line.level.upper() in LEVELS else "INFO"
        log.log(logging.getLevelName(level), "[job] %s (run %s): %s", self.call.job_name, self.call.run_id, message)
        if not self.pending:
            self.first_pending = time.monotonic()
        self.pending.append(
            {"run_id": self.call.run_id, "created_at": line.created_at, "level": level, "message": message}
        )
        if len(self.pending) >= FLUSH_LINES:
            self.flush()

    def flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self.first_pending >= FLUSH_EVERY_S:
            self.flush()

    def close(self) -> None:
        if self.dropped:
            note = (
                f"... {self.dropped} more bytes of output dropped: a run keeps at most "
                f"{self.max_bytes} bytes of log lines (JOB_LOG_MAX_BYTES)"
            )
            log.warning("[job] %s (run %s): %s", self.call.job_name, self.call.run_id, note)
            self.pending.append(
                {"run_id": self.call.run_id, "created_at": utcnow(), "level": "WARNING", "message": note}
            )
        self.flush()

    def flush(self) -> None:
        rows, self.pending = self.pending, []
        try:
            self.db.execute_many("insert_log", rows)
        except ScheduleJobsError as exc:  # the lines were echoed above; the run's outcome is stored apart
            log.error("[%s] could not store %d log lines of run %s: %s", self.label, len(rows), self.call.run_id, exc)


# -- the child's side -----------------------------------------------------------------------------


def child_main(
    conn: Any, alive: Any, app_module: str, database_url: str, idle_s: float, log_level: int, environ: dict[str, str]
) -> None:
    """A child's life: run the calls the supervisor sends, one at a time, until idle, orphaned or told to end."""
    # The supervisor's environment now, not the fork server's (a copy from when the first job started).
    os.environ.clear()
    os.environ.update(environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the supervisor decides
    signal.signal(signal.SIGTERM, _exit_at_sigterm)
    threading.Thread(target=_exit_with_supervisor, args=(alive,), name="supervisor-watch", daemon=True).start()
    registry = load_registry(app_module)
    db = Database.from_url(database_url)
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(log_level)
    try:
        while conn.poll(idle_s):
            call = conn.recv()
            conn.send(execute_in_child(conn, registry, db, call))
    except (EOFError, OSError):  # the supervisor closed the pipe: it ended this child, or died
        pass


def execute_in_child(conn: Any, registry: JobRegistry, db: Database, call: JobCall) -> tuple[Any, ...]:
    """Run one call with its output captured; returns the ("done", status, error) message."""

    def emit(level: str, message: str) -> None:
        conn.send(("line", utcnow(), level, message))

    job = registry.jobs.get(call.job_name)
    if job is None:
        return ("done", RunStatus.FAILED.value, f"no job {call.job_name!r} in this process's code")
    ctx = JobContext(
        call.run_id, call.job_name, call.schedule_id, call.scheduled_for, call.trigger, call.attempt, db, emit
    )
    stdout, stderr = LineWriter(emit, "INFO"), LineWriter(emit, "WARNING")
    handler = EmitHandler(emit)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    logging.getLogger().addHandler(handler)
    try:
        job.fn(ctx)
        status, error = RunStatus.COMPLETED, None
    except Exception:
        status, error = RunStatus.FAILED, traceback.format_exc()
    finally:
        stdout.flush()
        stderr.flush()
        sys.stdout, sys.stderr = saved
        logging.getLogger().removeHandler(handler)
    return ("done", status.value, error)


def load_registry(app_module: str) -> JobRegistry:
    """The job registry of SCHEDULES_MODULE (its `registry`, or the `jobs` package's)."""
    registry: JobRegistry | None = getattr(importlib.import_module(app_module), "registry", None)
    return registry if registry is not None else jobs.registry


class LineWriter(io.TextIOBase):
    """sys.stdout or sys.stderr inside a child: each complete line becomes one log line."""

    def __init__(self, emit: Callable[[str, str], None], level: str):
        self.emit = emit
        self.level = level
        self.partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.emit(self.level, line)
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.emit(self.level, self.partial)
            self.partial = ""


class EmitHandler(logging.Handler):
    """The root logging handler inside a child: each record becomes one log line at its level."""

    def __init__(self, emit: Callable[[str, str], None]):
        super().__init__()
        self.emit_line = emit
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.emit_line(record.levelname, self.format(record))
        except Exception:
            self.handleError(record)


def _exit_at_sigterm(_signum: int, _frame: Any) -> None:
    # An exception rather than the default action, so the job's `finally` blocks and context managers
    # run before the grace period ends with SIGKILL.
    raise SystemExit(128 + signal.SIGTERM)


def _exit_with_supervisor(alive: Any) -> None:
    """The supervisor never writes to `alive`: EOF means it died, and a job must not outlive it."""
    try:
        alive.poll(None)
    finally:
        os._exit(70)
