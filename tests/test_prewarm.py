"""Pre-warming on real processes and both backends: a daemon holds no child between the occurrences of a
sparse schedule, yet each occurrence runs in a child started before it was due (no cold start).

JOB_CHILD_IDLE_S=1 and an occurrence every 6 s stand for the default 300 s and an hourly schedule:
the child ends about 2 s after its run, and the next is started 0.5 s (PREWARM_LEAD_S, at most half
of JOB_CHILD_IDLE_S) before the next occurrence.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.test_processes import Daemons
from tests.test_supervised_processes import enable

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads process start times from /proc")

CRON = "* * * * * */6"


class PrewarmDaemons(Daemons):
    app = "tests.prewarm_app"


@pytest.fixture
def daemons(database_url, tmp_path):
    group = PrewarmDaemons(database_url, tmp_path)
    yield group
    group.stop_all()


def descendants(pid: int) -> list[int]:
    """The live (not zombie) processes below `pid`: fork server, resource tracker, job children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], list(children.get(pid, []))
    while pending:
        found.append(pending.pop())
        pending.extend(children.get(found[-1], []))
    return found


def test_a_child_is_started_just_before_each_occurrence_and_none_is_held_in_between(db, daemons):
    daemon = daemons.start(JOB_CHILD_IDLE_S="1", TEST_CRON=CRON, LOG_LEVEL="DEBUG")
    enable(db, "sparse", CRON)

    def runs() -> list[list[str]]:
        return [line.split() for line in daemons.marker.read_text().splitlines()]

    emptied_at = []  # when the daemon was seen alone, after run k and before run k + 1
    for k in range(1, 4):
        wait_for(lambda k=k: len(runs()) >= k, 30, f"run {k}")
        wait_for(lambda: not descendants(daemon.pid), 15, f"the daemon to hold no process after run {k}")
        emptied_at.append(time.time())
        assert len(runs()) == k, "the next run came before the daemon's tree was empty"
    wait_for(lambda: len(runs()) >= 4, 30, "run 4")
    for emptied, (scheduled_for, pid, process_started, job_started) in zip(emptied_at, runs()[1:]):
        due = datetime.fromisoformat(scheduled_for).timestamp()
        # Started after the tree was seen empty, and before its occurrence was due: pre-warmed.
        assert emptied < float(process_started) < due, (scheduled_for, pid, emptied, process_started)
        assert float(job_started) - due < 1.0, (
            f"the job of {scheduled_for} started {float(job_started) - due:.3f}s late"
        )
    assert len({run[1] for run in runs()}) == 4, "each occurrence ran in a child of its own"
    started = daemons.log_of(daemon).count("started job child")
    assert started == len(runs()), f"{started} children started for {len(runs())} occurrences: one each, none wasted"
