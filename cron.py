"""Cron arithmetic in a schedule's time zone: pure functions, no clock, no I/O.

croniter enumerates wall-clock times; this module turns them into UTC instants the way classic cron
does across daylight-saving changes, because croniter's own time-zone handling has known DST bugs:

- every wall-clock time a cron expression names fires at most once;
- a wall time skipped by a spring-forward change (02:30 in New York on the second Sunday of March)
  fires once, at the same distance past the change (03:30 daylight time);
- a wall time repeated by a fall-back change (01:30 on the first Sunday of November) fires once, the
  first time it occurs, not again an hour later.

So a wall time maps to an instant with the offset in force before any change it is caught in
(`_instant`). That map is increasing except across a spring-forward change, where the skipped wall
times fire in the same span of instants as the first wall times after the gap; `next_after` and
`latest_at_or_before` look at both sides there. Every tzdata zone changes offset at most once in
any two days (checked for 1970-2037), so one change is looked for near an instant.

Expressions have 5 fields, or 6 with seconds LAST (croniter's form), or are one of the nicknames
@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly. Day of month and day of week
follow Vixie cron: when both are restricted a day matching either fires; a field that starts with
`*` is unrestricted, so `*/2` in day of month with `1` in day of week means odd days that are Mondays.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from croniter import croniter

from errors import quoted

UTC = timezone.utc
_TINY = timedelta(microseconds=1)
_HOUR = 3600
_NEVER_FIRES_FROM = datetime(2000, 1, 1)  # any fixed date: the Gregorian calendar repeats every 400 years

NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = ("minute", "hour", "day of month", "month", "day of week", "second")  # croniter's order: seconds last
_ALLOWED = {
    "minute": "0-59",
    "hour": "0-23",
    "day of month": "1-31 or L",
    "month": "1-12 or jan-dec",
    "day of week": "0-7 or sun-sat",
    "second": "0-59",
}
_NAMES = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
_NAMES.update({name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))})
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def fields_of(expression: str) -> list[str]:
    """The fields of `expression`, a nickname replaced by the 5 fields it stands for."""
    return [_single_value_ranges(f) for f in NICKNAMES.get(expression.strip().lower(), expression).split()]


@lru_cache(maxsize=4096)  # this and _plain_values: per field, which thousands of expressions share
def _single_value_ranges(field: str) -> str:
    """`5-5` and `5-5/2` written as `5`: croniter 7 reads a range whose ends are equal as `*`."""
    items = []
    for item in field.split(","):
        start, dash, rest = item.partition("-")
        end = rest.split("/")[0]
        items.append(start if dash and start.lower() == end.lower() else item)
    return ",".join(items)


def _days_either(fields: list[str]) -> bool:
    """Vixie cron: a day matching either day field fires when both are restricted; a field starting with
    `*` (or croniter's `?`) is unrestricted, and then both must match."""
    return not fields[2].startswith(("*", "?")) and not fields[4].startswith(("*", "?"))


_WALKER_LOCK = threading.Lock()  # croniter objects are stateful; the admin server calls in from many threads


@lru_cache(maxsize=4096)
def _parse(expression: str) -> croniter:
    """A parsed expression, days combined the Vixie way. Parsing is half of croniter's cost, so once each."""
    from croniter import croniter  # here, not at the top: plain expressions never need it (_plain_field)

    fields = fields_of(expression)
    return croniter(" ".join(fields), day_or=_days_either(fields))


@lru_cache(maxsize=4096)  # thousands of schedules share a few dozen distinct fields
def _field_problem(name: str, text: str, position: int, count: int) -> str | None:
    """What is wrong with one field on its own, naming it in words, or None."""
    where = f"{name} {quoted(text)}"
    for item in text.split(","):
        base = item.split("/")[0].strip().lower()
        if base in ("r", "h") or base.startswith(("r(", "h(")):
            return (
                f"{where}: R (random) and H (hashed) are not supported: each process would pick a different "
                "time; write the value you want"
            )
        start, dash, end = base.partition("-")
        if dash and (_digits(start) or start in _NAMES) and (_digits(end) or end in _NAMES):
            first, last = (int(v) if _digits(v) else _NAMES[v] for v in (start, end))
            if first > last:
                return f"{where}: range {start}-{end} starts after it ends; write it as two ranges joined by a comma"
    if _plain_field(text, position):
        return None
    from croniter import CroniterError, croniter

    probe = ["*"] * count
    probe[position] = text
    try:
        croniter(" ".join(probe))
    except (CroniterError, ValueError, KeyError, IndexError):
        return f"{where} is not valid (use {_ALLOWED[name]}, '*', lists a,b, ranges a-b and steps */n)"
    return None


def _digits(text: str) -> bool:
    """ASCII digits only: int() also reads other scripts' digits, and "²".isdigit() is True but int() fails."""
    return text.isascii() and text.isdigit()


def _plain_field(text: str, position: int) -> bool:
    """True for a field of numbers within its range, `*`, ascending ranges and steps of at least 1.

    croniter accepts every such field (tests/test_cron.py checks it against croniter); deciding them
    here keeps croniter, and the 15 ms of importing it, out of a start whose crons are all plain.
    """
    low, high = _RANGES[position]
    for item in text.split(","):
        span, slash, step = item.partition("/")
        if slash and not (_digits(step) and int(step) >= 1):
            return False
        if span == "*":
            continue
        start, dash, end = span.partition("-")
        last = end if dash else start
        if not (_digits(start) and _digits(last) and low <= int(start) <= int(last) <= high):
            return False
    return True


def _never_fires_reason(fields: list[str]) -> str:
    """Why croniter finds no date: the usual case is a day of month that none of the months has."""
    days = [int(d) for d in fields[2].split(",") if d.isdigit()]
    months = [int(m) if m.isdigit() else _NAMES.get(m.lower(), 0) for m in fields[3].split(",")]
    if days and len(days) == len(fields[2].split(",")) and all(1 <= m <= 12 for m in months):
        names = ", ".join(_MONTHS[m - 1] for m in months)
        return f"day of month {quoted(fields[2])} never occurs in month {quoted(fields[3])} ({names})"
    return "no date matches its day of month, month and day of week together"


@lru_cache(maxsize=4096)
def cron_problem(expression: str) -> str | None:
    """None when `expression` can be scheduled, else one line saying which field is wrong and why."""
    fields = fields_of(expression)
    if expression.strip().startswith("@") and len(fields) == 1:
        return f"{quoted(expression)} is not a known nickname (use {', '.join(NICKNAMES)})"
    if len(fields) not in (5, 6):
        return (
            f"{quoted(expression)} has {len(fields)} fields; use 5 (minute hour day-of-month month "
            f"day-of-week) or 6 (the same, then second)"
        )
    for position, (name, text) in enumerate(zip(FIELDS, fields)):
        problem = _field_problem(name, text, position, len(fields))
        if problem is not None:
            return problem
    if _fires_every_year(fields) and isinstance(_walls(expression), _PlainWalls):
        return None  # every field is valid on its own; the days meet; next_after() needs no croniter
    from croniter import CroniterBadDateError, CroniterError

    try:
        walls = _parse(expression)
        with _WALKER_LOCK:
            walls.set_current(_NEVER_FIRES_FROM, force=True)
            walls.get_next(datetime)
    except CroniterBadDateError:
        return f"{quoted(expression)} can never fire: {_never_fires_reason(fields)}"
    except (CroniterError, ValueError, KeyError, IndexError) as exc:  # a combination no single field shows
        return f"{quoted(expression)} is not a valid cron expression ({type(exc).__name__})"
    return None


def _fires_every_year(fields: list[str]) -> bool:
    """True when the day fields (valid on their own) surely meet: day of month or month is `*`, no L, W or #.

    Every month has days 1-28 and every weekday, and January has days 1-31; only a restricted day of
    month in restricted months can miss (30 February). The probe that finds those costs a cron walk.
    """
    plain = not any(mark in field.upper() for field in fields[2:5] for mark in "LW#?")
    return plain and "*" in (fields[2], fields[3])


@lru_cache(maxsize=4096)  # asked for every schedule at start-up; thousands share a few expressions
def seconds_last_warning(expression: str) -> str | None:
    """Words for a 6-field expression that fires every second of restricted minutes, which is rarely meant.

    croner, Quartz, Spring and node-cron put seconds first, so `*/10 * * * * *` written for them means
    every tenth second; read here (seconds last) it fires 60 times in every tenth minute.
    """
    fields = fields_of(expression)
    if len(fields) != 6 or cron_problem(expression) is not None:
        return None
    walls = _walls(expression)
    if isinstance(walls, _PlainWalls):
        minutes, seconds = list(walls.minutes), list(walls.seconds)
    else:  # croniter's expanded fields: ['*'] where unrestricted
        minutes, seconds = (
            list(range(60)) if f == ["*"] else [int(v) for v in f] for f in (walls.expanded[0], walls.expanded[5])
        )
    if len(seconds) < 60 or len(minutes) == 60:
        return None
    listed = ",".join(str(m) for m in minutes[:12]) + (",..." if len(minutes) > 12 else "")
    meant = " ".join(fields[1:] + fields[:1])
    return (
        f"6 fields are read with seconds LAST: {quoted(expression)} fires every second (60 times) during "
        f"minute{'s' if len(minutes) > 1 else ''} {listed} of each matching hour; "
        f"if the first field was meant as seconds, write {quoted(meant)}"
    )


@lru_cache(maxsize=1024)
def zone_problem(name: str) -> str | None:
    """None when `name` is an IANA time zone this machine knows, else what is wrong with it."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return f"{quoted(name)} is not a known IANA time zone (e.g. 'UTC', 'Europe/Paris', 'America/New_York')"
    return None


# -- from wall times to instants ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Change:
    """The zone's offset goes from `before` to `after` at the UTC instant `at`."""

    at: datetime
    before: timedelta
    after: timedelta

    @property
    def size(self) -> timedelta:
        return abs(self.after - self.before)

    @property
    def spring_forward(self) -> bool:
        return self.after > self.before

    @property
    def wall_end(self) -> datetime:
        """The first wall time read with the new offset: past the gap, or past the repeated span."""
        return (self.at + max(self.before, self.after)).replace(tzinfo=None)


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


@lru_cache(maxsize=4096)
def _change_near(zone_name: str, hour: int) -> _Change | None:
    """The offset change between 25 hours before and 1 hour after the start of UTC hour `hour`, if any.

    That window holds the change behind any skipped or repeated wall time near the hour: no gap or
    repetition is longer than a day. Changes happen on whole seconds, so bisecting seconds finds it exactly.
    """
    zone = ZoneInfo(zone_name)
    low, high = (hour - 25) * _HOUR, (hour + 1) * _HOUR
    before = _offset(datetime.fromtimestamp(low, UTC), zone)
    after = _offset(datetime.fromtimestamp(high, UTC), zone)
    if before == after:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(datetime.fromtimestamp(middle, UTC), zone) == before:
            low = middle
        else:
            high = middle
    return _Change(datetime.fromtimestamp(high, UTC), before, after)


def _change_at(instant: datetime, zone_name: str) -> _Change | None:
    return _change_near(zone_name, math.floor(instant.timestamp()) // _HOUR)


def _overlap(instant: datetime, zone_name: str) -> _Change | None:
    """The spring-forward change whose skipped wall times fire in a span that holds `instant`, if any."""
    change = _change_at(instant, zone_name)
    if change is not None and change.spring_forward and change.at <= instant < change.at + change.size:
        return change
    return None


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time: the first one if it is repeated, shifted past a gap if skipped."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _first_after(walls: croniter | _PlainWalls, wall: datetime) -> datetime:
    """The first wall time of the expression after the naive `wall`."""
    if isinstance(walls, _PlainWalls):
        direct = walls.first_after(wall)
        if direct is not None:
            return direct
        walls = _parse(walls.expression)  # a rare day (29 February on a Monday) years away: croniter looks on
    walls.set_current(wall, force=True)
    found: datetime = walls.get_next(datetime)
    return found


def _last_at_or_before(walls: croniter | _PlainWalls, wall: datetime) -> datetime:
    """The last wall time of the expression at or before the naive `wall`."""
    if isinstance(walls, _PlainWalls):
        direct = walls.last_at_or_before(wall)
        if direct is not None:
            return direct
        walls = _parse(walls.expression)
    walls.set_current(wall + _TINY, force=True)
    found: datetime = walls.get_prev(datetime)
    return found


_SEARCH_DAYS = 4 * 366  # days walked directly; an expression whose days are rarer is left to croniter


_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7), (0, 59))  # each field's numbers, in FIELDS' order


@lru_cache(maxsize=4096)
def _plain_values(field: str, low: int, high: int) -> frozenset[int] | None:
    """The numbers a field of numbers, names, `*`, ranges, steps and lists names; None for L, W, # and `?`."""
    values: set[int] = set()
    for item in field.lower().split(","):
        span, slash, step = item.partition("/")
        first: int | None = low
        last: int | None = high
        if span != "*":
            start, dash, end = span.partition("-")
            first = _number(start)
            last = _number(end) if dash else high if slash else first  # `5/15`: 5, 20, 35, 50
        if first is None or last is None or (slash and not step.isdigit()):
            return None
        values.update(range(first, last + 1, int(step) if slash else 1))
    return frozenset(values)


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else _NAMES.get(text)


@dataclass(frozen=True)
class _PlainWalls:
    """Wall times of an expression of plain fields (numbers, names, `*`, ranges, steps, lists), walked
    directly: a tenth of croniter's cost, and no croniter to build, which after a restart is most of the
    cost of catching up thousands of schedules. croniter walks the others (L, W, #) and very rare days."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int] | None  # None: any
    months: frozenset[int] | None
    weekdays: frozenset[int] | None  # 0 is Sunday
    either: bool  # Vixie: both day fields restricted, a day matching either fires

    @staticmethod
    def of(expression: str) -> _PlainWalls | None:
        fields = fields_of(expression)
        if len(fields) not in (5, 6):
            return None
        # croniter reads day of week `7/n` as Sunday and every n-th day after it, as `0/n`
        fields[4] = ",".join("0" + item[1:] if item.startswith("7/") else item for item in fields[4].split(","))
        values = [_plain_values(f, low, high) for f, (low, high) in zip(fields + ["0"], _RANGES)]
        if any(v is None for v in values):
            return None
        second, minute, hour, day, month, weekday = (values[i] or frozenset() for i in (5, 0, 1, 2, 3, 4))
        return _PlainWalls(
            expression,
            tuple(sorted(second)),
            tuple(sorted(minute)),
            tuple(sorted(hour)),
            None if fields[2] == "*" else day,
            None if fields[3] == "*" else month,
            None if fields[4] == "*" else frozenset(d % 7 for d in weekday),
            _days_either(fields),
        )

    def on(self, day: date) -> bool:
        if self.months is not None and day.month not in self.months:
            return False
        by_date = self.days is None or day.day in self.days
        by_weekday = self.weekdays is None or day.isoweekday() % 7 in self.weekdays
        return (by_date or by_weekday) if self.either else (by_date and by_weekday)

    def first_after(self, wall: datetime) -> datetime | None:
        start = wall.replace(microsecond=0) + timedelta(seconds=1)
        day, hour, minute, second = start.date(), start.hour, start.minute, start.second
        for _ in range(_SEARCH_DAYS):
            if self.on(day):
                for h in self.hours[bisect_left(self.hours, hour) :]:
                    for m in self.minutes[bisect_left(self.minutes, minute if h == hour else 0) :]:
                        found = bisect_left(self.seconds, second if (h, m) == (hour, minute) else 0)
                        if found < len(self.seconds):
                            return datetime.combine(day, time(h, m, self.seconds[found]))
            day, hour, minute, second = day + timedelta(days=1), 0, 0, 0
        return None

    def last_at_or_before(self, wall: datetime) -> datetime | None:
        day, hour, minute, second = wall.date(), wall.hour, wall.minute, wall.second
        for _ in range(_SEARCH_DAYS):
            if self.on(day):
                for h in reversed(self.hours[: bisect_right(self.hours, hour)]):
                    for m in reversed(self.minutes[: bisect_right(self.minutes, minute if h == hour else 59)]):
                        found = bisect_right(self.seconds, second if (h, m) == (hour, minute) else 59)
                        if found:
                            return datetime.combine(day, time(h, m, self.seconds[found - 1]))
            day, hour, minute, second = day - timedelta(days=1), 23, 59, 59
        return None


@lru_cache(maxsize=4096)
def _walls(expression: str) -> croniter | _PlainWalls:
    """The walker of a valid expression: the direct one where it can, else croniter's."""
    return _PlainWalls.of(expression) or _parse(expression)


def _aware_utc(instant: datetime) -> datetime:
    """`instant` in UTC, so that cached results never mix up two instants that compare equal (fold)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant!r} has no time zone; pass an aware datetime")
    return instant.astimezone(UTC)


_BRACKETS: dict[tuple[str, str], tuple[datetime, datetime]] = {}  # (expression, zone) -> _bracket()
_BRACKETS_MAX = 16384


def next_after(expression: str, zone_name: str, after: datetime) -> datetime:
    """The first occurrence strictly after the instant `after`, in UTC."""
    return _bracket(expression, zone_name, _aware_utc(after))[1]


def latest_at_or_before(expression: str, zone_name: str, at: datetime) -> datetime:
    """The last occurrence at or before the instant `at`, in UTC."""
    return _bracket(expression, zone_name, _aware_utc(at))[0]


def _bracket(expression: str, zone_name: str, at: datetime) -> tuple[datetime, datetime]:
    """The occurrences either side of `at`: the last one at or before it, the first one after it.

    No occurrence lies between the two, so every instant from the first up to the second has the same
    answers: one bracket per expression serves the thousands of schedules that share it (after a
    restart, 10,000 daily schedules have 1,440 crons), from every `now` until its next occurrence.
    """
    key = (expression, zone_name)
    known = _BRACKETS.get(key)
    if known is None or not known[0] <= at < known[1]:
        known = (_latest_at_or_before(expression, zone_name, at), _next_after(expression, zone_name, at))
        if len(_BRACKETS) >= _BRACKETS_MAX:  # a bound, for a process fed ever new expressions
            _BRACKETS.clear()
        _BRACKETS[key] = known
    return known


@lru_cache(maxsize=16384)  # by instant: upcoming() asks the same later occurrences on every request
def _next_after(expression: str, zone_name: str, after: datetime) -> datetime:
    zone = ZoneInfo(zone_name)
    local = after.astimezone(zone)
    start = local.replace(tzinfo=None)
    with _WALKER_LOCK:
        walls = _walls(expression)
        if local.fold:  # the second pass of a repeated span: its wall times all fired in the first pass
            change = _change_at(after, zone_name)
            assert change is not None
            start = change.wall_end - _TINY
        wall = _first_after(walls, start)
        found = _instant(wall, zone)
        change = _overlap(found, zone_name)
        if change is not None and wall < change.wall_end:  # a skipped wall time: those past the gap fire earlier
            found = min(found, _instant(_first_after(walls, change.wall_end - _TINY), zone))
        change = _overlap(after, zone_name)
        if change is not None:  # skipped wall times later than `after + offset before` have yet to fire
            skipped = _first_after(walls, (after + change.before).replace(tzinfo=None))
            if skipped < change.wall_end:
                found = min(found, _instant(skipped, zone))
        return found


@lru_cache(maxsize=16384)
def _latest_at_or_before(expression: str, zone_name: str, at: datetime) -> datetime:
    zone = ZoneInfo(zone_name)
    local = at.astimezone(zone)
    end = local.replace(tzinfo=None)
    with _WALKER_LOCK:
        walls = _walls(expression)
        if local.fold:  # the second pass of a repeated span: the latest is its first pass, not after it
            change = _change_at(at, zone_name)
            assert change is not None
            end = change.wall_end - _TINY
        found = _instant(_last_at_or_before(walls, end), zone)
        change = _overlap(found, zone_name)
        if change is None:
            return found
        # Skipped wall times fire in the same span as the first ones past the gap: take the latest by `at`.
        skipped_end = min((at + change.before).replace(tzinfo=None), change.wall_end - _TINY)
        skipped = _instant(_last_at_or_before(walls, skipped_end), zone)
        return max(found, skipped) if found <= at else skipped


def upcoming(expression: str, zone_name: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` occurrences after `after`, in UTC."""
    times: list[datetime] = []
    for _ in range(count):
        after = next_after(expression, zone_name, after)
        times.append(after)
    return times
