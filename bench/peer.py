"""The peer a Python user would pick instead: APScheduler 3.11 with its SQLAlchemy job store on SQLite.

    python bench/peer.py MODE --db PATH [options]      prints one JSON object on stdout

Modes mirror bench/run.py's measurements of this project:
  coldstart      start a scheduler with the design documents' four cron jobs, then exit
  idle           the four jobs, none due, for --seconds; prints SQL statements issued
  punctuality    --jobs jobs firing on --cron for --seconds; prints lateness of each submission
  sync           add --jobs cron jobs to an empty store; prints seconds
  restart        start on a store of --jobs jobs and finish the first pass (--overdue: all overdue, from sync --overdue)
  shared         one every-second job in a store shared with other processes; appends runs to --marker
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import event

SEED_CRONS = {
    "daily-full-sync": "0 2 * * *",
    "hourly-matching": "0 * * * *",
    "feed-refresh": "*/15 * * * *",
    "dev-quick-test": "*/5 * * * *",
}


def noop() -> None:
    pass


def record_run(marker: str) -> None:
    with open(marker, "a") as f:
        f.write(f"{int(time.time())} {os.getpid()}\n")


def own_peak_rss_mib() -> float:
    """VmHWM: this process's peak RSS since exec (ru_maxrss would include the forking parent's)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scheduler(db: str, statements: list[int] | None = None) -> BackgroundScheduler:
    store = SQLAlchemyJobStore(url=f"sqlite:///{db}")
    if statements is not None:
        event.listen(store.engine, "before_cursor_execute", lambda *args: statements.__setitem__(0, statements[0] + 1))
    return BackgroundScheduler(jobstores={"default": store}, timezone="UTC")


def cron(expression: str) -> CronTrigger:
    """A 5-field cron, or 6 with seconds last (this project's form), as an APScheduler trigger."""
    fields = expression.split()
    if len(fields) == 6:
        return CronTrigger(
            second=fields[5],
            minute=fields[0],
            hour=fields[1],
            day=fields[2],
            month=fields[3],
            day_of_week=fields[4],
            timezone="UTC",
        )
    return CronTrigger.from_crontab(expression, timezone="UTC")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--db", required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--cron", default="* * * * * *")
    parser.add_argument("--overdue", action="store_true")
    parser.add_argument("--marker")
    args = parser.parse_args()
    result: dict = {}

    if args.mode == "coldstart":
        s = scheduler(args.db)
        for job_id, expression in SEED_CRONS.items():
            s.add_job(noop, cron(expression), id=job_id, replace_existing=True)
        s.start()
        s.shutdown(wait=False)

    elif args.mode == "idle":
        statements = [0]
        s = scheduler(args.db, statements)
        far = datetime.now(timezone.utc) + timedelta(days=1)
        for job_id, expression in SEED_CRONS.items():
            s.add_job(noop, cron(expression), id=job_id, replace_existing=True, next_run_time=far)
        s.start()
        print("ready", flush=True)
        before = statements[0]
        time.sleep(args.seconds)
        result["statements"] = statements[0] - before
        s.shutdown(wait=False)

    elif args.mode == "punctuality":
        lateness: list[float] = []
        missed = [0]
        s = scheduler(args.db)

        def submitted(ev) -> None:
            now = datetime.now(timezone.utc)
            lateness.extend((now - t).total_seconds() for t in ev.scheduled_run_times)

        def on_missed(ev) -> None:
            missed[0] += 1

        s.add_listener(submitted, EVENT_JOB_SUBMITTED)
        s.add_listener(on_missed, EVENT_JOB_MISSED)
        for i in range(args.jobs):
            s.add_job(noop, cron(args.cron), id=f"job-{i}", replace_existing=True)
        s.start()
        started = time.time()
        time.sleep(args.seconds)
        s.shutdown(wait=False)
        result = {"lateness": lateness, "missed": missed[0], "seconds": time.time() - started}

    elif args.mode == "sync":
        s = scheduler(args.db)
        s.start(paused=True)
        # --overdue: store the jobs as a scheduler that went down a day ago would have left them, each
        # waiting for its first fire time after that moment
        stopped = datetime.now(timezone.utc) - timedelta(days=1)
        started = time.perf_counter()
        for i in range(args.jobs):
            trigger = cron(f"{i % 60} {i // 60 % 24} * * *")
            overdue = {"next_run_time": trigger.get_next_fire_time(None, stopped)} if args.overdue else {}
            s.add_job(noop, trigger, id=f"job-{i}", replace_existing=True, **overdue)
        result["seconds"] = time.perf_counter() - started
        if args.overdue:  # leave the store as a crashed process would: shutdown() would process the overdue jobs
            print(json.dumps(result), flush=True)
            os._exit(0)
        s.shutdown(wait=False)

    elif args.mode == "restart":
        started = time.perf_counter()
        s = scheduler(args.db)
        if args.overdue:
            s.start()
            deadline = time.time() + 300
            while time.time() < deadline:  # the pass is over when no job is overdue any more
                with sqlite3.connect(args.db) as conn:
                    left = conn.execute(
                        "SELECT COUNT(*) FROM apscheduler_jobs WHERE next_run_time < ?", (time.time() - 60,)
                    ).fetchone()[0]
                if left == 0:
                    break
                time.sleep(0.05)
            result["left"] = left
        else:
            s.start(paused=True)
            s._process_jobs()  # one pass over a store with nothing due
        result["seconds"] = time.perf_counter() - started
        result["peak_rss_mib"] = own_peak_rss_mib()
        s.shutdown(wait=False)

    elif args.mode == "shared":
        s = scheduler(args.db)
        s.add_job(record_run, cron("* * * * * *"), id="tick", args=[args.marker], replace_existing=True)
        s.start()
        print("ready", flush=True)
        stop = threading.Event()
        stop.wait(args.seconds)
        s.shutdown(wait=False)
    else:
        sys.exit(f"unknown mode {args.mode!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
