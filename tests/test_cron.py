"""Cron arithmetic: classic-cron behaviour across daylight-saving changes, checked rather than trusted."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cron import cron_problem, latest_at_or_before, next_after, upcoming, zone_problem

NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc


def fire_times_on(expression, day, zone="America/New_York"):
    """Every occurrence during the local calendar day `day`, as local wall times."""
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    end = (datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(days=1)).astimezone(UTC)
    times, t = [], start - timedelta(microseconds=1)
    while (t := next_after(expression, zone, t)) < end:
        times.append(t.astimezone(tz))
    return times


SPRING_FORWARD = datetime(2026, 3, 8)  # 02:00 EST -> 03:00 EDT
FALL_BACK = datetime(2026, 11, 1)      # 02:00 EDT -> 01:00 EST


def test_job_in_the_skipped_spring_forward_hour_runs_once():
    [run] = fire_times_on("30 2 * * *", SPRING_FORWARD)
    assert run.strftime("%H:%M %Z") == "03:30 EDT"


def test_job_in_the_repeated_fall_back_hour_runs_once_the_first_time():
    [run] = fire_times_on("30 1 * * *", FALL_BACK)
    assert run.strftime("%H:%M %Z") == "01:30 EDT"


def test_jobs_outside_the_change_keep_their_wall_time():
    assert [t.strftime("%H:%M %Z") for t in fire_times_on("0 4 * * *", SPRING_FORWARD)] == ["04:00 EDT"]
    assert [t.strftime("%H:%M %Z") for t in fire_times_on("0 4 * * *", FALL_BACK)] == ["04:00 EST"]


def test_hourly_job_on_change_days_fires_each_wall_hour_once():
    spring = fire_times_on("0 * * * *", SPRING_FORWARD)
    fall = fire_times_on("0 * * * *", FALL_BACK)
    assert len(spring) == 23 and len(set(spring)) == 23
    assert len(fall) == 24 and [t.hour for t in fall] == list(range(24))
    assert all(b > a for a, b in zip(fall, fall[1:]))


def test_every_second_through_the_repeated_hour_never_goes_back_in_time():
    # From inside the second pass of 01:xx, the next occurrence is 02:00 EST, not a repeat of 01:xx.
    second_pass = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK).replace(fold=1).astimezone(UTC)
    assert next_after("* * * * * *", "America/New_York", second_pass).astimezone(NEW_YORK).strftime("%H:%M:%S %Z") == "02:00:00 EST"
    assert latest_at_or_before("* * * * * *", "America/New_York", second_pass).astimezone(NEW_YORK).strftime("%H:%M:%S %Z") == "01:59:59 EDT"


@pytest.mark.parametrize("expression, after, expected", [
    ("0 2 * * *", datetime(2026, 1, 10, 2, 0, tzinfo=UTC), datetime(2026, 1, 11, 2, 0, tzinfo=UTC)),
    ("*/15 * * * *", datetime(2026, 1, 10, 2, 7, 30, tzinfo=UTC), datetime(2026, 1, 10, 2, 15, tzinfo=UTC)),
    ("* * * * * */10", datetime(2026, 1, 10, 2, 0, 0, 500000, tzinfo=UTC), datetime(2026, 1, 10, 2, 0, 10, tzinfo=UTC)),
    ("0 9 * * 1", datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 12, 9, 0, tzinfo=UTC)),
])
def test_next_after_is_strictly_after(expression, after, expected):
    assert next_after(expression, "UTC", after) == expected


def test_latest_at_or_before_includes_the_instant_itself():
    at = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)
    assert latest_at_or_before("0 2 * * *", "UTC", at) == at
    assert latest_at_or_before("0 2 * * *", "UTC", at - timedelta(milliseconds=1)) == at - timedelta(days=1)


def test_time_zone_shifts_the_occurrence():
    assert next_after("0 2 * * *", "Europe/Paris", datetime(2026, 1, 10, tzinfo=UTC)) == datetime(2026, 1, 10, 1, 0, tzinfo=UTC)


def test_upcoming_lists_consecutive_occurrences():
    assert upcoming("0 * * * *", "UTC", datetime(2026, 1, 10, 0, 30, tzinfo=UTC), 3) == [
        datetime(2026, 1, 10, h, 0, tzinfo=UTC) for h in (1, 2, 3)]


@pytest.mark.parametrize("expression, fragment", [
    ("* * * *", "has 4 fields"),
    ("* * * * * * *", "has 7 fields"),
    ("61 * * * *", "not a valid cron expression"),
    ("*/0 * * * *", "not a valid cron expression"),
    ("a b c d e", "not a valid cron expression"),
])
def test_bad_cron_is_explained(expression, fragment):
    assert fragment in cron_problem(expression)


def test_good_cron_and_zone_have_no_problem():
    assert cron_problem("*/15 * * * *") is None and cron_problem("* * * * * */5") is None
    assert zone_problem("America/New_York") is None
    assert "not a known IANA time zone" in zone_problem("Mars/Olympus")
