"""Cron arithmetic in a schedule's time zone: pure functions, no clock, no I/O.

croniter enumerates wall-clock times; this module turns them into UTC instants the way classic cron
does across daylight-saving changes, because croniter's own time-zone handling has known DST bugs:

- every wall-clock time a cron expression names fires at most once;
- a wall time skipped by a spring-forward change (02:30 in New York on the second Sunday of March)
  fires once, at the same distance past the change (03:30 daylight time);
- a wall time repeated by a fall-back change (01:30 on the first Sunday of November) fires once, the
  first time it occurs, not again an hour later.

Expressions have 5 fields, or 6 with seconds last (croniter's form) for sub-minute schedules.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

UTC = timezone.utc
_TINY = timedelta(microseconds=1)


@lru_cache(maxsize=4096)
def cron_problem(expression: str) -> str | None:
    """None when `expression` is a valid 5- or 6-field cron expression, else what is wrong with it."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        return f"{expression!r} has {len(fields)} fields; use 5 (minute hour day month weekday) or 6 (... seconds)"
    try:
        croniter(expression)
    except (ValueError, KeyError) as exc:
        return f"{expression!r} is not a valid cron expression: {exc}"
    return None


@lru_cache(maxsize=1024)
def zone_problem(name: str) -> str | None:
    """None when `name` is an IANA time zone this machine knows, else what is wrong with it."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return f"{name!r} is not a known IANA time zone (e.g. 'UTC', 'Europe/Paris', 'America/New_York')"
    return None


_WALKER_LOCK = threading.Lock()  # walkers are stateful; the admin server calls in from many threads


@lru_cache(maxsize=4096)
def _walker(expression: str) -> croniter:
    """A parsed expression. Parsing is half of croniter's cost, so each is parsed once and re-aimed."""
    return croniter(expression)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time: the first one if it is repeated, shifted past a gap if skipped."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _wall_start(at: datetime, zone: ZoneInfo) -> datetime:
    """The wall time from which to enumerate for instant `at`.

    Inside the second pass of a repeated hour every wall time has already fired during the first
    pass, so enumeration resumes where the repetition ends.
    """
    local = at.astimezone(zone)
    wall = local.replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0)
    if local.fold == 0 or first.utcoffset() == local.utcoffset():
        return wall
    # Binary-search the change (to the millisecond) between the first pass of this wall time and now.
    low, high = first.astimezone(UTC), at
    while high - low > timedelta(milliseconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == first.utcoffset():
            low = middle
        else:
            high = middle
    return (high + first.utcoffset()).replace(tzinfo=None) - _TINY  # the change, on the old clock


@lru_cache(maxsize=16384)  # thousands of schedules share a few expressions and the same `now`
def next_after(expression: str, zone_name: str, after: datetime) -> datetime:
    """The first occurrence strictly after the instant `after`, in UTC."""
    zone = ZoneInfo(zone_name)
    with _WALKER_LOCK:
        walls = _walker(expression)
        walls.set_current(_wall_start(after, zone), force=True)
        while True:
            candidate = _instant(walls.get_next(datetime), zone)
            if candidate > after:  # wall times inside a gap can land on instants already passed
                return candidate


@lru_cache(maxsize=16384)
def latest_at_or_before(expression: str, zone_name: str, at: datetime) -> datetime:
    """The last occurrence at or before the instant `at`, in UTC."""
    zone = ZoneInfo(zone_name)
    with _WALKER_LOCK:
        walls = _walker(expression)
        walls.set_current(_wall_start(at, zone) + _TINY, force=True)
        while True:
            candidate = _instant(walls.get_prev(datetime), zone)
            if candidate <= at:
                return candidate


def upcoming(expression: str, zone_name: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` occurrences after `after`, in UTC."""
    times: list[datetime] = []
    for _ in range(count):
        after = next_after(expression, zone_name, after)
        times.append(after)
    return times
