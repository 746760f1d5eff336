"""Healthchecks-style pings: `ScheduleDefinition(ping_url=...)` is told when each cron occurrence starts and ends.

    GET <ping_url>/start   the occurrence started
    GET <ping_url>         it succeeded
    GET <ping_url>/fail    it failed (a job failed or was skipped)

This is the protocol of healthchecks.io, which Cronitor, Uptime Kuma and others understand too: the
monitor alerts when a ping is late or says fail, so it notices a daemon that stopped altogether.
Pings go through one background thread per process, in the order they were asked for, with a short
timeout: a slow or dead monitor never fails or delays a run. Manual runs ("Run now") do not ping.
Logged URLs keep only their scheme and host (the path of a ping URL is its secret).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.parse

log = logging.getLogger("pings")

PING_TIMEOUT_S = 5.0
MAX_WAITING = 1000  # beyond this a dead monitor would only cost memory: pings are dropped, and logged


class Pinger:
    """A FIFO of URLs to GET, drained by one daemon thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue[str] = queue.Queue(maxsize=MAX_WAITING)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ping(self, url: str) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="pings", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(url)
        except queue.Full:
            log.error("[pings] %d pings waiting: dropped one to %s", MAX_WAITING, origin(url))

    def _drain(self) -> None:
        import urllib.request  # on the first ping, not at start: a daemon without ping URLs never needs its 6 MiB

        while True:
            url = self._queue.get()
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "schedule-jobs-pings"})
                with urllib.request.urlopen(request, timeout=PING_TIMEOUT_S) as response:
                    response.read(1024)
            except Exception as exc:  # whatever went wrong, the run is not concerned
                reason = getattr(exc, "reason", None) or getattr(exc, "code", None) or type(exc).__name__
                log.warning("[pings] ping to %s failed: %s", origin(url), reason)
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the pings asked for so far (at exit, so --once's pings go out)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)


def origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def ping_url(base: str, kind: str) -> str:
    """<base>/start, <base> or <base>/fail, keeping any query string (e.g. ?rid=) after the path."""
    parts = urllib.parse.urlsplit(base)
    path = parts.path.rstrip("/") + ("" if kind == "success" else "/" + kind)
    return urllib.parse.urlunsplit(parts._replace(path=path))


_pinger = Pinger()


def started(ping_base: str | None, trigger: str) -> None:
    """A cron occurrence of a schedule with a ping_url started."""
    if ping_base and trigger == "CRON":
        _pinger.ping(ping_url(ping_base, "start"))


def finished(ping_base: str | None, trigger: str, ok: bool) -> None:
    """A cron occurrence of a schedule with a ping_url ended: success, or fail."""
    if ping_base and trigger == "CRON":
        _pinger.ping(ping_url(ping_base, "success" if ok else "fail"))


def flush() -> None:
    """At shutdown: let the pings asked for go out, waiting at most one timeout."""
    _pinger.flush(PING_TIMEOUT_S)
