"""A test application (SCHEDULES_MODULE=tests.supervised_app) whose jobs misbehave on purpose.

Children inherit the environment of the forkserver, which starts once per supervisor process: the
`sv.*` jobs therefore take no TEST_* variables (in-process tests change them later), only fixed values.

Each job does one thing a supervised child must survive or capture: print, log, hang past its
timeout, ignore SIGTERM, exit, segfault, be SIGKILLed as the OOM killer would, allocate 300 MB.
`steer.*` jobs read TEST_* variables so the process tests can steer one schedule.
"""

import ctypes
import logging
import os
import signal
import sys
import time

from jobs import JobRegistry
from scheduling import ScheduleDefinition

registry = JobRegistry()
job = registry.job


@job(group="sv", name="sv.noop")
def noop(ctx):
    pass


@job(group="sv", name="sv.pid")
def pid(ctx):
    ctx.log(f"pid {os.getpid()}")


@job(group="sv", name="sv.talk")
def talk(ctx):
    print("to stdout")
    ctx.log("from ctx.log")
    print("to stderr", file=sys.stderr)
    logging.getLogger("talk").warning("a warning record")
    logging.getLogger("talk").info("an info record")
    sys.stdout.write("no newline at the end")


def flood(lines):
    def run(ctx):
        for i in range(lines):
            print(f"line {i:05d} " + "x" * 89)  # 100 bytes a line

    return run


job(group="sv", name="sv.flood50")(flood(50))
job(group="sv", name="sv.flood2000")(flood(2000))


@job(group="sv", name="sv.hang", timeout=1)
def hang(ctx):
    ctx.log("hanging")
    time.sleep(600)


@job(group="retry", name="retry.hang", timeout=1, retries=1, retry_backoff_s=0.1)
def hang_then_retry(ctx):
    time.sleep(600)


@job(group="sv", name="sv.stubborn", timeout=1)
def stubborn(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)


@job(group="sv", name="sv.sleep", timeout=0)
def sleep(ctx):
    time.sleep(1.5)


@job(group="sv", name="sv.sleep_long", timeout=0)
def sleep_long(ctx):
    time.sleep(600)


@job(group="sv", name="sv.os_exit")
def os_exit(ctx):
    os._exit(3)


@job(group="sv", name="sv.sys_exit")
def sys_exit(ctx):
    sys.exit(4)


@job(group="sv", name="sv.segfault")
def segfault(ctx):
    ctypes.string_at(0)


@job(group="sv", name="sv.oom_killed")
def oom_killed(ctx):
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer sends


@job(group="sv", name="sv.allocate")
def allocate(ctx):
    block = bytearray(300 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so it is really resident
    ctx.log(f"allocated {len(block)} bytes")


@job(group="sv", name="sv.raise")
def fail(ctx):
    raise ValueError("bad input in row 7")


@job(group="sv", name="sv.own_db")
def own_db(ctx):
    ctx.log(f"my run is {ctx.db.fetch_one('get_run', id=ctx.run_id)['status']} ({ctx.trigger}, attempt {ctx.attempt})")


def mark(ctx, what):
    with open(os.environ["TEST_MARKER_FILE"], "a") as marker:
        marker.write(f"{ctx.schedule_id} {ctx.scheduled_for.isoformat()} {os.getpid()} {what} {time.time()}\n")


@job(group="steer", name="steer.run")
def steer(ctx):
    """TEST_STEER: sleep (TEST_JOB_SECONDS, the default), segfault or raise."""
    mark(ctx, "start")
    print(f"steer {ctx.schedule_id} printing")
    behaviour = os.environ.get("TEST_STEER", "sleep")
    if behaviour == "segfault":
        ctypes.string_at(0)
    if behaviour == "raise":
        raise RuntimeError("steer was told to fail")
    time.sleep(float(os.environ.get("TEST_JOB_SECONDS", "0")))
    mark(ctx, "done")


@job(group="beat", name="beat.run")
def beat(ctx):
    mark(ctx, "start")


schedules = [
    ScheduleDefinition(
        "steer",
        "Steer",
        "Steered by TEST_* variables",
        os.environ.get("TEST_CRON", "* * * * * *"),
        execution_mode="GROUP",
        job_group="steer",
        overlap_policy=os.environ.get("TEST_OVERLAP", "BUFFER_ONE"),
    ),
    ScheduleDefinition("beat", "Beat", "Every second, quick", "* * * * * *", execution_mode="GROUP", job_group="beat"),
    ScheduleDefinition(
        "retry", "Retry", "A hung job with a retry", "0 0 1 1 *", execution_mode="GROUP", job_group="retry"
    ),
]
