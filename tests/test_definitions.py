"""Definitions are validated at load, before the database is touched; the command line reports it."""

import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from errors import ConfigError, DefinitionError, quoted
from jobs import JobContext
from scheduling import load_app
from tests.conftest import ROOT


def run_daemon(*args, **env):
    return subprocess.run(
        [sys.executable, str(ROOT / "schedule_daemon.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def test_every_problem_is_reported_once_with_schedule_id_and_field():
    with pytest.raises(DefinitionError) as error:
        load_app("tests.apps.broken", "test")
    problems = error.value.problems
    expected = [
        ("work.a", "'depends_on'", "unknown job 'work.missing'"),
        ("bad-cron", "'cron'", "minute '61' is not valid (use 0-59"),
        ("bad-zone", "'timezone'", "not a known IANA time zone"),
        ("twice", "'id'", "defined twice"),
        ("no-group", "'job_group'", "required when execution_mode is 'GROUP'"),
        ("empty-group", "'job_group'", "no job belongs to group 'nobody'"),
        ("bad-env", "'environments'", "unknown environment 'prod'"),
        ("bad-policy", "'missed_run_policy'", "'CATCH_UP_ALL' is not one of SKIP, RUN_ONCE"),
    ]
    assert len(problems) == len(expected), problems
    for (where, field, what), problem in zip(expected, problems):
        assert where in problem and field in problem and what in problem, problem


def test_a_dependency_cycle_names_the_jobs():
    with pytest.raises(DefinitionError, match="cycle: (x -> y -> x|y -> x -> y)"):
        load_app("tests.apps.cycle", "test")


def test_environments_filter_the_seed_schedules():
    assert "dev-quick-test" in load_app("definitions", "development").schedules
    production = load_app("definitions", "production").schedules
    assert sorted(production) == ["daily-full-sync", "feed-refresh", "hourly-matching"]


def test_group_mode_pulls_in_transitive_dependencies_in_order():
    app = load_app("definitions", "production")
    names = [j.name for j in app.jobs_for(app.schedules["feed-refresh"])]
    assert names == ["matching.refresh_candidate_pool", "matching.update_match_scores", "feed.refresh_feeds"]


def test_unknown_module_and_environment_are_config_errors():
    with pytest.raises(ConfigError, match="SCHEDULES_MODULE 'nope' cannot be imported"):
        load_app("nope", "test")
    with pytest.raises(ConfigError, match="APP_ENV 'prod'"):
        load_app("definitions", "prod")


def test_check_prints_each_schedule_with_its_next_three_runs():
    result = run_daemon("--check", APP_ENV="production")
    assert result.returncode == 0, result.stderr
    assert "3 schedules valid for APP_ENV=production" in result.stdout
    for schedule_id in ("daily-full-sync", "hourly-matching", "feed-refresh"):
        assert f"- {schedule_id}:" in result.stdout
    assert result.stdout.count("next: ") == 3 and "dev-quick-test" not in result.stdout


def test_check_exits_1_listing_the_problems(tmp_path):
    result = run_daemon("--check", SCHEDULES_MODULE="tests.apps.broken", DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 1
    assert "schedule 'bad-cron': field 'cron'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists(), "nothing is written when the definitions are invalid"


@pytest.mark.parametrize("module", ["tests.apps.broken", "tests.apps.bad_crons"])
def test_daemon_refuses_invalid_definitions_before_touching_the_database(tmp_path, module):
    result = run_daemon(SCHEDULES_MODULE=module, DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 1 and "invalid schedule definitions" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


BAD_CRONS = [
    ("feb-31", "day of month '31' never occurs in month '2' (February)"),
    ("feb-30", "day of month '30' never occurs in month '2' (February)"),
    ("random", "minute 'R': R (random) and H (hashed) are not supported"),
    ("hashed", "hour 'H': R (random) and H (hashed) are not supported"),
    ("backwards", "hour '22-2': range 22-2 starts after it ends"),
    ("weekdays-backwards", "day of week 'fri-mon': range fri-mon starts after it ends"),
    ("second-61", "second '61' is not valid (use 0-59"),
    ("long", "day of week '9,9,9,9,"),
    ("nickname", "'@reboot' is not a known nickname"),
]


def test_each_bad_cron_is_one_line_naming_the_schedule_and_the_field():
    with pytest.raises(DefinitionError) as error:
        load_app("tests.apps.bad_crons", "test")
    problems = error.value.problems
    assert len(problems) == len(BAD_CRONS), problems
    for (schedule_id, what), problem in zip(BAD_CRONS, problems):
        assert problem.startswith(f"schedule '{schedule_id}': field 'cron': ") and what in problem, problem
        assert "\n" not in problem and len(problem) < 260, problem


def test_check_lists_bad_crons_one_line_each_without_a_traceback(tmp_path):
    result = run_daemon("--check", SCHEDULES_MODULE="tests.apps.bad_crons", DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line.strip() for line in result.stderr.splitlines()]
    for schedule_id, what in BAD_CRONS:
        [line] = [line for line in lines if line.startswith(f"schedule '{schedule_id}'")]
        assert what in line
    assert not (tmp_path / "x.db").exists()


def test_check_and_daemon_warn_about_a_six_field_cron_written_seconds_first(tmp_path):
    check = run_daemon("--check", SCHEDULES_MODULE="tests.apps.seconds_first")
    assert check.returncode == 0, check.stderr
    [warning] = check.stderr.splitlines()
    assert warning.startswith(
        "warning: schedule 'every-ten-seconds': field 'cron': 6 fields are read with seconds LAST"
    )
    assert "write '* * * * * */10'" in warning
    assert "- nightly: '@daily' in Europe/Paris" in check.stdout and "T23:00:00+00:00" in check.stdout
    daemon = run_daemon(
        "--once", SCHEDULES_MODULE="tests.apps.seconds_first", DATABASE_URL=f"sqlite:///{tmp_path}/x.db"
    )
    assert daemon.returncode == 0, daemon.stdout + daemon.stderr
    warnings = [line for line in daemon.stdout.splitlines() if "WARNING" in line and "seconds LAST" in line]
    assert len(warnings) == 1 and "schedule 'every-ten-seconds'" in warnings[0]


def test_a_mistake_in_the_definitions_module_is_one_line_naming_the_file_and_line():
    result = run_daemon("--check", SCHEDULES_MODULE="tests.apps.typo")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert "SCHEDULES_MODULE 'tests.apps.typo' fails to import: TypeError" in line
    assert "cronn" in line and "typo.py, line 6)" in line


def test_disabled_daemon_logs_why_and_exits_0(tmp_path):
    result = run_daemon(SCHEDULE_DAEMON_ENABLED="false", DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 0
    assert "SCHEDULE_DAEMON_ENABLED=false" in result.stdout
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DATABASE_URL": "postgres://u:secret@h/db"}, "DATABASE_URL 'postgres://u:***@h/db' is not understood"),
        ({"SCHEDULE_POLL_INTERVAL_MS": "soon"}, "SCHEDULE_POLL_INTERVAL_MS must be a positive whole number"),
        ({"SCHEDULE_DAEMON_ENABLED": "maybe"}, "SCHEDULE_DAEMON_ENABLED must be true or false"),
        ({"HEARTBEAT_INTERVAL_MS": "200000"}, "must be at most half of LOCK_TIMEOUT_MS"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL must be one of info, debug, warning, error, critical, got 'verbose'"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_1(env, message):
    result = run_daemon(**env)
    assert result.returncode == 1
    assert message in result.stderr and "secret" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_once_syncs_runs_nothing_due_and_exits(tmp_path):
    result = run_daemon("--once", DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Synced 4 schedule definitions from code (4 new" in result.stdout
    assert "stopped" in result.stdout


def test_names_longer_than_their_columns_are_one_line_each_naming_schedule_job_and_field():
    with pytest.raises(DefinitionError) as error:
        load_app("tests.apps.too_long", "test")
    assert error.value.problems == [
        f"job {quoted('g.' + 'j' * 99)}: field 'name': use 1 to 100 characters (this one has 101)",
        "schedule 'long-name': field 'name': use 1 to 200 characters (this one has 201)",
    ]


@pytest.mark.parametrize("args", [("--check",), ()])
def test_check_and_daemon_refuse_names_longer_than_their_columns(tmp_path, args):
    result = run_daemon(*args, SCHEDULES_MODULE="tests.apps.too_long", DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert sum("field 'name': use 1 to 100 characters" in line for line in lines) == 1, result.stderr
    assert sum(line.startswith("schedule 'long-name': field 'name'") for line in lines) == 1, result.stderr
    assert not (tmp_path / "x.db").exists()


def test_ctx_log_refuses_a_level_that_is_not_a_standard_name_naming_the_job():
    lines = []
    ctx = JobContext(
        1, "feed.refresh", "s", datetime.now(timezone.utc), "CRON", 1, None, lambda *line: lines.append(line)
    )
    ctx.log("fine", level="WARNING")
    with pytest.raises(
        ValueError, match="job 'feed.refresh': ctx.log level 'VERBOSE_DETAIL' is not one of DEBUG, INFO"
    ):
        ctx.log("too chatty", level="VERBOSE_DETAIL")  # longer than JobLog.level's 10 characters on MySQL
    assert lines == [("WARNING", "fine")]
