"""An upgrade as a Railway deploy does it: the previous release's daemon and this one side by side on one
database (SQLite file and MariaDB), on real processes.

The previous release is main just before supervised execution landed (PREVIOUS_RELEASE): it runs jobs
inline and its schema stops at migration 6 without 5. Its code is taken from this clone's history with
`git archive`; a clone without that commit (a shallow one) skips the test and says how to fetch it.
The old daemon starts first on an empty database; this release's daemon starts beside it and migrates
the schema in place while the old one runs; then the old one is stopped, as Railway drains it.
Every second's occurrence must run exactly once throughout: none twice, none lost.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest

from db import Database, load_migrations
from tests.conftest import ROOT, wait_for
from tests.test_processes import Daemons, enable_now, tick_schedule

PREVIOUS_RELEASE = "04145c3"  # README: the Railway checklist points at ALERT_WEBHOOK_URL and LOG_FORMAT


def previous_release(tmp_path: Path) -> Path:
    """The previous release's files, extracted from this clone's history; skips when the history lacks them."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the previous release's code comes from this clone's history")
    archive = subprocess.run(["git", "archive", PREVIOUS_RELEASE], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        pytest.skip(
            f"commit {PREVIOUS_RELEASE} (the previous release) is not in this clone's history, e.g. a shallow "
            f"clone: `git fetch --unshallow` brings it ({archive.stderr.decode(errors='replace').strip()})"
        )
    root = tmp_path / "previous-release"
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    return root


def start_in(daemons: Daemons, root: Path, name: str) -> subprocess.Popen:
    """A daemon of the code in `root` (its own tests/sample_app.py), in the group, so stop_all() ends it."""
    log = open(daemons.tmp_path / f"{name}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, str(root / "schedule_daemon.py")],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**daemons.env(), "PYTHONPATH": str(root)},
    )
    process.log_path = log.name
    daemons.processes.append(process)
    return process


def synced(db: Database) -> bool:
    """Has a daemon created the tables and synced the `tick` schedule yet?"""
    try:
        return db.fetch_one("get_schedule", id="tick") is not None
    except Exception:  # no tables yet
        return False


@pytest.fixture
def daemons(database_url, tmp_path):
    group = Daemons(database_url, tmp_path)
    yield group
    group.stop_all()


def test_the_previous_release_and_this_one_side_by_side_run_each_occurrence_once(database_url, daemons, tmp_path):
    old_root = previous_release(tmp_path)
    old = start_in(daemons, old_root, "old")
    db = Database.from_url(database_url)  # not migrated here: the old daemon creates its own schema
    try:
        wait_for(lambda: synced(db), 30, "the old daemon to create its schema and sync")
        assert {r["version"] for r in db.fetch_all("applied_schema_versions")} == {1, 2, 3, 6}
        enable_now(db, tick_schedule())
        wait_for(lambda: len(daemons.executions()) >= 2, 30, "the old daemon to run the schedule alone")

        new = daemons.start()
        wait_for(
            lambda: len(db.fetch_all("running_workers", worker_type="schedule_daemon")) == 2, 30, "both registered"
        )
        together = time.monotonic()
        wait_for(lambda: time.monotonic() - together > 8, 20, "8 s side by side", interval=0.5)
        old.terminate()  # Railway drains the old deployment once the new one is up
        assert old.wait(timeout=30) == 0, daemons.log_of(old)[-2000:]
        drained = len(daemons.executions())
        wait_for(lambda: len(daemons.executions()) >= drained + 3, 30, "the new daemon to go on alone")
        daemons.stop_all()
        assert new.returncode == 0, daemons.log_of(new)[-2000:]

        assert {r["version"] for r in db.fetch_all("applied_schema_versions")} == set(
            load_migrations((ROOT / "schema.sql").read_text())
        ), "this release's migrations were not all applied in place"
        executions = daemons.executions()
        per_occurrence = collections.Counter(occurrence for _, occurrence, _ in executions)
        assert {occ: n for occ, n in per_occurrence.items() if n > 1} == {}, "occurrences ran more than once"
        seconds = sorted(datetime.fromisoformat(occ) for occ in per_occurrence)
        skipped = {
            r["scheduledFor"]
            for r in db.fetch_all(
                "list_runs", status="SKIPPED", schedule_id="tick", job_name="*", before=None, limit=99
            )
        }
        lost = [
            seconds[0] + timedelta(seconds=i)
            for i in range(int((seconds[-1] - seconds[0]).total_seconds()))
            if seconds[0] + timedelta(seconds=i) not in set(seconds) | skipped
        ]
        assert lost == [], f"occurrences neither run nor recorded skipped: {lost}"
        # The old release runs jobs in its own process, this one in children: both ran some. (Which one
        # wins each contested second is a race; every claim was contested while both ran.)
        by_old = [pid for _, _, pid in executions if int(pid) == old.pid]
        assert 2 <= len(by_old) <= len(executions) - 3, "each release should have run occurrences"
        recorded = db.fetch_all(
            "list_runs", status=None, schedule_id="tick", job_name="tick.record", before=None, limit=999
        )
        assert sorted(r["scheduledFor"] for r in recorded) == seconds
        assert all(r["status"] == "COMPLETED" for r in recorded)
    finally:
        db.close()
