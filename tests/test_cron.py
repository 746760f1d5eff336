"""Cron arithmetic: classic-cron behaviour across daylight-saving changes, checked against an independent oracle.

The property tests compare cron.py with tests/cron_oracle.py from instants around every offset change
of one year (2026) and from seeded random ones, over zones of different shapes. CRON_SWEEP=N widens the
sweep to N years and N times the random instants and generated expressions (CRON_SWEEP=20: 7.5 minutes here).
"""

import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cron
from cron import cron_problem, latest_at_or_before, next_after, seconds_last_warning, upcoming, zone_problem
from tests.cron_oracle import Fires, offset_changes

NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc
SWEEP = int(os.environ.get("CRON_SWEEP", "1"))

ZONES = {
    "America/New_York": "northern hemisphere, changes at 02:00",
    "Australia/Sydney": "southern hemisphere",
    "Australia/Lord_Howe": "a 30-minute change",
    "America/Santiago": "changes at midnight",
    "America/Havana": "changes at midnight",
    "Pacific/Chatham": "offset +12:45, changes at 02:45",
    "Asia/Kolkata": "no daylight saving",
}
CRONS = (
    "* * * * * *",  # every second
    "* * * * * */7",  # every 7 seconds
    "* * * * *",  # every minute
    "*/7 * * * *",
    "0 * * * *",  # hourly
    "15 */2 * * *",  # every two hours
    "30 2 * * *",  # daily, inside New York's gap (spring) and beside its repeated hour
    "30 1 * * *",  # daily, inside New York's repeated hour (fall)
    "0 0 * * *",  # daily at midnight: inside Santiago's and Havana's gap
    "15 2 * * *",  # inside Lord Howe's 30-minute gap
    "0 3 * * *",  # inside Chatham's gap (02:45-03:45)
    "0,30 0-3 * * *",  # several per night, some inside every gap
    "0 12 */2 * 1",  # Vixie: odd days that are Mondays
)
AROUND = [timedelta(0), timedelta(microseconds=1), timedelta(seconds=1), timedelta(minutes=30)]


def window(expression):
    """How far the oracle enumerates around an instant: every answer lies well inside it."""
    fields = expression.split()
    if len(fields) == 6:
        return timedelta(hours=3)
    return timedelta(days=2) if fields[2] == fields[4] == "*" else timedelta(days=50)


def mismatches(expression, zone_name, fires, instants):
    """Where cron.py disagrees with the oracle, from each instant given in UTC and as local time (fold)."""
    zone, found = ZoneInfo(zone_name), []
    for t in instants:
        for asked in (t, t.astimezone(zone)):
            for name, got, want in (
                ("next_after", next_after(expression, zone_name, asked), fires.next_after(t)),
                (
                    "latest_at_or_before",
                    latest_at_or_before(expression, zone_name, asked),
                    fires.latest_at_or_before(t),
                ),
            ):
                assert want is not None, f"oracle window too small for {expression!r} at {t}"
                if got != want:
                    found.append(
                        f"{name}({expression!r}, {zone_name}, {asked.isoformat()}) = "
                        f"{got.astimezone(zone).isoformat()}, oracle {want.astimezone(zone).isoformat()}"
                    )
    return found


def changes_of(zone_name):
    years = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026 + SWEEP, 1, 1, tzinfo=UTC))
    return offset_changes(ZoneInfo(zone_name), *years)


@pytest.mark.parametrize("zone_name", ZONES)
def test_next_and_latest_match_the_oracle_around_every_offset_change(zone_name):
    found = []
    for change in changes_of(zone_name):
        size = abs(change.after - change.before)
        instants = {change.at + sign * d for d in AROUND + [size, size + AROUND[1]] for sign in (1, -1)}
        for expression in CRONS:
            fires = Fires(expression, zone_name, change.at - window(expression), change.at + window(expression))
            found += mismatches(expression, zone_name, fires, sorted(instants))
    assert not found, "\n".join(found[:20])


@pytest.mark.parametrize("expression", ("30 2 * * *", "30 1 * * *", "*/7 * * * *", "* * * * * */7"))
def test_answers_remembered_between_two_occurrences_match_the_oracle_at_every_instant(expression):
    """cron.py keeps the occurrences either side of the last instant asked and answers from them until the
    next one passes: walking forward in small steps through both New York changes must never see it stale."""
    found = []
    for change in changes_of("America/New_York"):
        fires = Fires(expression, "America/New_York", change.at - timedelta(days=2), change.at + timedelta(days=2))
        steps = range(-3 * 3600, 3 * 3600, 97)  # seconds; 97 so that steps fall on and off every occurrence
        found += mismatches(expression, "America/New_York", fires, [change.at + timedelta(seconds=s) for s in steps])
    assert not found, "\n".join(found[:20])


@pytest.mark.parametrize("zone_name", ZONES)
def test_next_and_latest_match_the_oracle_from_random_instants(zone_name):
    rng, found = random.Random(zone_name), []
    changes = changes_of(zone_name)
    for _ in range(20 * SWEEP):
        expression = rng.choice(CRONS)
        if changes and rng.random() < 0.7:  # near a change, where the mistakes were
            center = rng.choice(changes).at + timedelta(seconds=rng.uniform(-7200, 7200))
        else:
            center = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, SWEEP * 365 * 86400))
        fires = Fires(expression, zone_name, center - window(expression), center + window(expression))
        instants = [center + timedelta(seconds=rng.uniform(-7200, 7200)) for _ in range(10)]
        found += mismatches(expression, zone_name, fires, instants)
    assert not found, "\n".join(found[:20])


def field(low, high, star_weight=1):
    """A cron field over low..high in the forms the oracle reads: *, */n, a, a-b, a-b/n, a,b."""
    number = st.integers(low, high)
    span = st.tuples(number, number).map(sorted)
    return st.one_of(
        *[st.just("*")] * star_weight,
        st.integers(1, (high - low) // 2 + 1).map(lambda n: f"*/{n}"),
        number.map(str),
        span.map(lambda ab: f"{ab[0]}-{ab[1]}"),
        st.tuples(span, st.integers(1, 7)).map(lambda x: f"{x[0][0]}-{x[0][1]}/{x[1]}"),
        st.lists(number, min_size=2, max_size=3, unique=True).map(lambda v: ",".join(map(str, sorted(v)))),
    )


expressions = st.tuples(
    field(0, 59), field(0, 23), field(1, 31, 4), field(1, 12, 4), field(0, 7, 4), st.one_of(st.none(), field(0, 59))
).map(lambda f: " ".join(x for x in f if x is not None))


def oracle_answers(expression, zone_name, t):
    """The oracle's next and latest occurrence, enumerating a wider window until both lie inside it.

    None when they lie further than the oracle can enumerate quickly (every second, but only in June).
    """
    seconds = len(expression.split()) == 6
    reach, limit = (timedelta(hours=2), timedelta(days=2)) if seconds else (timedelta(days=3), timedelta(days=110))
    while reach <= limit:
        fires = Fires(expression, zone_name, t - reach, t + reach)
        if fires.next_after(t) is not None and fires.latest_at_or_before(t) is not None:
            return fires.next_after(t), fires.latest_at_or_before(t)
        reach *= 6
    return None


@settings(max_examples=60 * SWEEP, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    expression=expressions,
    zone_name=st.sampled_from(sorted(ZONES)),
    near_change=st.booleans(),
    shift=st.floats(-3 * 3600, 3 * 3600),
    pick=st.integers(0, 10**6),
)
def test_any_expression_matches_the_oracle(expression, zone_name, near_change, shift, pick):
    assume(cron_problem(expression) is None)
    changes = changes_of(zone_name)
    center = (
        changes[pick % len(changes)].at
        if near_change and changes
        else datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=pick * 31.5)
    )
    t = center + timedelta(seconds=shift)
    answers = oracle_answers(expression, zone_name, t)
    assume(answers is not None)
    for asked in (t, t.astimezone(ZoneInfo(zone_name))):
        assert (next_after(expression, zone_name, asked), latest_at_or_before(expression, zone_name, asked)) == answers


@settings(max_examples=300 * SWEEP, deadline=None, derandomize=True)
@given(expression=expressions, seconds=st.integers(0, 3 * 365 * 86400), micro=st.sampled_from([0, 1, 500_000]))
def test_the_direct_wall_walk_agrees_with_croniters_walk(expression, seconds, micro):
    """cron.py walks plain expressions itself (a tenth of croniter's cost) and hands rarer days to croniter;
    both walks must give the same wall times, rare dates on a weekday (e.g. `0 0 13 1 */7`) included."""
    assume(cron_problem(expression) is None)
    walls, walker = cron._walls(expression), cron._parse(expression)
    wall = datetime(2026, 1, 1) + timedelta(seconds=seconds, microseconds=micro)
    assert cron._first_after(walls, wall) == cron._first_after(walker, wall)
    assert cron._last_at_or_before(walls, wall) == cron._last_at_or_before(walker, wall)


@pytest.mark.parametrize("expression", ["0 0 * * 7/2", "0 0 * * 7/3", "30 6 * * 1,7/4", "0 0 1 * 7/2"])
def test_day_of_week_7_with_a_step_is_walked_as_croniter_walks_it(expression):
    walls, walker = cron._walls(expression), cron._parse(expression)
    assert isinstance(walls, cron._PlainWalls)
    wall = datetime(2026, 1, 1)
    for _ in range(40):
        assert cron._first_after(walls, wall) == (wall := cron._first_after(walker, wall)), expression


def test_plain_expressions_are_walked_directly_and_others_by_croniter():
    assert isinstance(cron._walls("0 12 */2 * 1"), cron._PlainWalls)
    assert isinstance(cron._walls("*/10 * * * * 30"), cron._PlainWalls)
    for expression in ("0 0 L * *", "0 0 * * 5#3", "0 0 * * L5"):  # last day, nth weekday, last weekday
        assert not isinstance(cron._walls(expression), cron._PlainWalls), expression


# -- the oracle, checked by hand on a few cases --------------------------------------------------------


def local_times(expression, zone_name, start, end):
    zone = ZoneInfo(zone_name)
    fires = Fires(expression, zone_name, start.astimezone(UTC), end.astimezone(UTC))
    return [t.astimezone(zone).strftime("%m-%d %H:%M:%S%z") for t in fires.times]


def test_oracle_new_york_spring_forward_and_fall_back():
    start, end = datetime(2026, 3, 7, 12, tzinfo=NEW_YORK), datetime(2026, 3, 9, 12, tzinfo=NEW_YORK)
    assert local_times("30 2 * * *", "America/New_York", start, end) == ["03-08 03:30:00-0400", "03-09 02:30:00-0400"]
    start, end = datetime(2026, 10, 31, 12, tzinfo=NEW_YORK), datetime(2026, 11, 2, 12, tzinfo=NEW_YORK)
    assert local_times("30 1 * * *", "America/New_York", start, end) == ["11-01 01:30:00-0400", "11-02 01:30:00-0500"]
    assert local_times(
        "0 * * * *",
        "America/New_York",
        datetime(2026, 11, 1, 0, 30, tzinfo=NEW_YORK),
        datetime(2026, 11, 1, 3, 30, tzinfo=NEW_YORK),
    ) == ["11-01 01:00:00-0400", "11-01 02:00:00-0500", "11-01 03:00:00-0500"]


def test_oracle_lord_howe_half_hour_gap():
    zone = ZoneInfo("Australia/Lord_Howe")  # 2026-10-04 02:00 +10:30 becomes 02:30 +11:00
    assert local_times(
        "15,45 2 * * *",
        "Australia/Lord_Howe",
        datetime(2026, 10, 4, 1, tzinfo=zone),
        datetime(2026, 10, 4, 4, tzinfo=zone),
    ) == ["10-04 02:45:00+1100"]


def test_oracle_santiago_midnight_changes():
    # 2026-09-06 00:00 -04 becomes 01:00 -03; 2026-04-05 00:00 -03 becomes 04-04 23:00 -04
    zone = ZoneInfo("America/Santiago")
    assert local_times(
        "0 0 * * *", "America/Santiago", datetime(2026, 9, 5, 12, tzinfo=zone), datetime(2026, 9, 7, 12, tzinfo=zone)
    ) == ["09-06 01:00:00-0300", "09-07 00:00:00-0300"]
    assert local_times(
        "30 23 * * *", "America/Santiago", datetime(2026, 4, 4, 12, tzinfo=zone), datetime(2026, 4, 5, 12, tzinfo=zone)
    ) == ["04-04 23:30:00-0300"]


# -- the cases from the issue, and classic cron on change days -----------------------------------------


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
FALL_BACK = datetime(2026, 11, 1)  # 02:00 EDT -> 01:00 EST


def test_job_in_the_skipped_spring_forward_hour_runs_once():
    [run] = fire_times_on("30 2 * * *", SPRING_FORWARD)
    assert run.strftime("%H:%M %Z") == "03:30 EDT"


def test_job_in_the_repeated_fall_back_hour_runs_once_the_first_time():
    [run] = fire_times_on("30 1 * * *", FALL_BACK)
    assert run.strftime("%H:%M %Z") == "01:30 EDT"


def test_hourly_job_on_change_days_fires_each_wall_hour_once():
    spring = fire_times_on("0 * * * *", SPRING_FORWARD)
    fall = fire_times_on("0 * * * *", FALL_BACK)
    assert len(spring) == 23 and len(set(spring)) == 23
    assert len(fall) == 24 and [t.hour for t in fall] == list(range(24))


def test_skipped_wall_time_still_runs_when_asked_from_just_after_the_change():
    just_after = datetime(2026, 3, 8, 3, 10, tzinfo=NEW_YORK)  # the 02:30 run is due at 03:30 EDT, not tomorrow
    assert next_after("30 2 * * *", "America/New_York", just_after) == datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK)
    later = datetime(2026, 3, 8, 3, 45, tzinfo=NEW_YORK)
    assert latest_at_or_before("30 2 * * *", "America/New_York", later) == datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK)


def test_midnight_job_keeps_its_day_from_inside_a_repeated_hour_ending_at_midnight():
    santiago = ZoneInfo("America/Santiago")  # 2026-04-04 24:00 -03 becomes 23:00 -04: 23:xx is repeated
    second_pass = datetime(2026, 4, 4, 23, 30, tzinfo=santiago, fold=1)
    assert next_after("0 0 * * *", "America/Santiago", second_pass) == datetime(2026, 4, 5, 0, 0, tzinfo=santiago)


def test_every_second_through_the_repeated_hour_never_goes_back_in_time():
    second_pass = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1)
    assert (
        next_after("* * * * * *", "America/New_York", second_pass).astimezone(NEW_YORK).strftime("%H:%M:%S %Z")
        == "02:00:00 EST"
    )
    assert (
        latest_at_or_before("* * * * * *", "America/New_York", second_pass).astimezone(NEW_YORK).strftime("%H:%M:%S %Z")
        == "01:59:59 EDT"
    )


def test_instants_that_compare_equal_but_differ_in_fold_are_not_confused():
    first = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK)
    second = first.replace(fold=1)  # an hour later, yet == first (same tzinfo compares wall times)
    assert first == second
    assert next_after("* * * * *", "America/New_York", first) == datetime(2026, 11, 1, 5, 31, tzinfo=UTC)
    assert next_after("* * * * *", "America/New_York", second) == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    assert latest_at_or_before("* * * * *", "America/New_York", second) == datetime(2026, 11, 1, 5, 59, tzinfo=UTC)
    assert latest_at_or_before("* * * * *", "America/New_York", first) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="no time zone"):
        next_after("* * * * *", "UTC", datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "expression, after, expected",
    [
        ("0 2 * * *", datetime(2026, 1, 10, 2, 0, tzinfo=UTC), datetime(2026, 1, 11, 2, 0, tzinfo=UTC)),
        ("*/15 * * * *", datetime(2026, 1, 10, 2, 7, 30, tzinfo=UTC), datetime(2026, 1, 10, 2, 15, tzinfo=UTC)),
        (
            "* * * * * */10",
            datetime(2026, 1, 10, 2, 0, 0, 500000, tzinfo=UTC),
            datetime(2026, 1, 10, 2, 0, 10, tzinfo=UTC),
        ),
        ("0 9 * * 1", datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 12, 9, 0, tzinfo=UTC)),
        ("@weekly", datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)),  # Sunday 00:00
        ("@monthly", datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
        ("@yearly", datetime(2026, 1, 10, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("@annually", datetime(2026, 1, 10, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("@daily", datetime(2026, 1, 10, 5, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)),
        ("@midnight", datetime(2026, 1, 10, 5, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)),
        ("@hourly", datetime(2026, 1, 10, 5, 1, tzinfo=UTC), datetime(2026, 1, 10, 6, tzinfo=UTC)),
    ],
)
def test_next_after_is_strictly_after(expression, after, expected):
    assert next_after(expression, "UTC", after) == expected


def test_latest_at_or_before_includes_the_instant_itself():
    at = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)
    assert latest_at_or_before("0 2 * * *", "UTC", at) == at
    assert latest_at_or_before("0 2 * * *", "UTC", at - timedelta(milliseconds=1)) == at - timedelta(days=1)


def test_day_of_month_and_day_of_week_follow_vixie_cron():
    after = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
    both_restricted = [t.date().isoformat() for t in upcoming("0 12 1,15 * 1", "UTC", after, 4)]
    assert both_restricted == ["2026-01-01", "2026-01-05", "2026-01-12", "2026-01-15"]  # the 1st, the 15th or Mondays
    star_day = [t.date().isoformat() for t in upcoming("0 12 */2 * 1", "UTC", after, 3)]
    assert star_day == ["2026-01-05", "2026-01-19", "2026-02-09"]  # odd days that are Mondays


def test_time_zone_shifts_the_occurrence():
    assert next_after("0 2 * * *", "Europe/Paris", datetime(2026, 1, 10, tzinfo=UTC)) == datetime(
        2026, 1, 10, 1, 0, tzinfo=UTC
    )


# -- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression, message",
    [
        ("* * * *", "'* * * *' has 4 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("61 * * * *", "minute '61' is not valid (use 0-59"),
        ("* 24 * * *", "hour '24' is not valid (use 0-23"),
        ("* * 0 * *", "day of month '0' is not valid"),
        ("* * * 13 *", "month '13' is not valid"),
        ("* * * * 8", "day of week '8' is not valid"),
        ("* * * * * 60", "second '60' is not valid"),
        ("*/0 * * * *", "minute '*/0' is not valid"),
        ("a b c d e", "minute 'a' is not valid"),
        ("R * * * *", "minute 'R': R (random) and H (hashed) are not supported"),
        ("0 H(0-5) * * *", "hour 'H(0-5)': R (random) and H (hashed) are not supported"),
        ("50-10 * * * *", "minute '50-10': range 50-10 starts after it ends"),
        ("0 9 * * fri-mon", "day of week 'fri-mon': range fri-mon starts after it ends"),
        ("0 0 1 dec-jan *", "month 'dec-jan': range dec-jan starts after it ends"),
        ("0 0 31 2 *", "'0 0 31 2 *' can never fire: day of month '31' never occurs in month '2' (February)"),
        ("0 0 30 2 *", "can never fire: day of month '30' never occurs in month '2' (February)"),
        ("0 0 31 4,6,9,11 *", "never occurs in month '4,6,9,11' (April, June, September, November)"),
        ("0 0 31 2 */7", "can never fire"),  # day of week starts with '*': both must match
        ("@reboot", "'@reboot' is not a known nickname (use @yearly, @annually"),
    ],
)
def test_bad_cron_is_one_line_naming_the_field(expression, message):
    problem = cron_problem(expression)
    assert problem is not None and message in problem, problem
    assert "\n" not in problem


def test_problems_quote_at_most_about_60_characters_of_the_input():
    problem = cron_problem("0 0 1 1 " + "9," * 500 + "9")
    assert problem.startswith("day of week '9,9,9,") and "...'" in problem and len(problem) < 200
    assert len(zone_problem("Mars/" + "x" * 500)) < 150


@pytest.mark.parametrize(
    "expression",
    [
        "*/15 * * * *",
        "* * * * * */5",
        "0 0 29 2 *",
        "0 0 31 2 1",
        "0 9 * * mon-fri",
        "0 0 L * *",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        " @daily ",
    ],
)
def test_good_cron_has_no_problem(expression):
    assert cron_problem(expression) is None


_numbers = st.integers(-1, 65).map(str) | st.sampled_from(["00", "007", "²", "٣", "", "x"])
_spans = st.one_of(st.just("*"), _numbers, st.tuples(_numbers, _numbers).map("-".join))
_items = st.tuples(_spans, st.none() | _numbers).map(lambda i: i[0] if i[1] is None else f"{i[0]}/{i[1]}")


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(position=st.integers(0, 5), items=st.lists(_items, min_size=1, max_size=3))
def test_a_field_decided_without_croniter_is_one_croniter_accepts(position, items):
    from croniter import croniter

    field = ",".join(items)
    if cron._plain_field(field, position):
        probe = ["*"] * 6
        probe[position] = field
        croniter(" ".join(probe))  # raises if the shortcut accepted what croniter refuses


def test_plain_crons_are_validated_and_walked_without_importing_croniter():
    code = (
        "import sys, cron; from datetime import datetime, timezone\n"
        "for e in ('*/15 * * * *', '0 9-17/2 1,15 * 1-5', '30 0 * * 7', '* * * * * */10', '@daily'):\n"
        "    assert cron.cron_problem(e) is None, e\n"
        "    cron.seconds_last_warning(e)\n"  # what the daemon asks of every schedule at start-up
        "    cron.next_after(e, 'Europe/Paris', datetime.now(timezone.utc))\n"
        "print('croniter' in sys.modules)\n"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "False"
    assert cron_problem("0 0 L * *") is None and "croniter" in sys.modules  # the others still go to croniter


@pytest.mark.parametrize("expression", ["1-² * * * *", "0 ٣ * * *", "0 0 1-١٢ * *"])
def test_digits_of_other_scripts_are_a_clear_problem_not_a_crash(expression):
    problem = cron_problem(expression)
    assert problem is not None and "is not valid" in problem


def test_zone_problem():
    assert zone_problem("America/New_York") is None
    assert "not a known IANA time zone" in zone_problem("Mars/Olympus")


@pytest.mark.parametrize(
    "expression, warned",
    [
        (
            "*/10 * * * * *",
            (
                "fires every second (60 times) during minutes 0,10,20,30,40,50 of each matching hour; "
                "if the first field was meant as seconds, write '* * * * * */10'"
            ),
        ),
        ("0 * * * * *", "during minute 0 of each matching hour"),
        ("* * * * * *", None),
        ("* * * * * */10", None),
        ("*/10 * * * *", None),
    ],
)
def test_seconds_first_six_field_crons_are_explained(expression, warned):
    warning = seconds_last_warning(expression)
    assert warning == warned if warned is None else warned in warning
