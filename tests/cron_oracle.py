"""An independent reference for cron.py: enumerate wall times, turn them into instants by the README's rules.

It shares nothing with cron.py or croniter: a small matcher for the cron subset the tests use (numbers,
`*`, `*/n`, `a-b`, `a-b/n`, lists; 5 fields or 6 with seconds last; Vixie day matching), calendar days
stepped one at a time, and the zone's offset changes found by bisecting `zoneinfo`'s offsets. Then:

- a wall time that exists once fires at that instant;
- a wall time repeated by a fall-back change fires at its first occurrence (with the offset before);
- a wall time skipped by a spring-forward change fires at the same distance past the change.

    fires = Fires("30 2 * * *", "America/New_York", start, end)
    fires.next_after(t), fires.latest_at_or_before(t)   # None when t or the answer lies outside [start, end]
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc
_LIMITS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7), (0, 59))  # minute hour dom month dow second


def field_values(field: str, low: int, high: int) -> set[int]:
    """The numbers a cron field names."""
    values: set[int] = set()
    for item in field.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(v) for v in span.split("-"))
        else:
            first = last = int(span)
        if step and span != "*" and "-" not in span:
            last = high  # "5/15" means 5, 20, 35, 50
        values.update(range(first, last + 1, int(step or 1)))
    return values


@dataclass(frozen=True)
class Change:
    at: datetime
    before: timedelta
    after: timedelta


def offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[Change]:
    """Every change of UTC offset in [start, end], to the second: sampled every 3 hours, then bisected."""

    def offset(second: int) -> timedelta | None:
        return datetime.fromtimestamp(second, UTC).astimezone(zone).utcoffset()

    changes = []
    for low in range(int(start.timestamp()), int(end.timestamp()), 3 * 3600):
        high = low + 3 * 3600
        before, after = offset(low), offset(high)
        if before != after:
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == before else (low, middle)
            changes.append(Change(datetime.fromtimestamp(high, UTC), before, after))
    return changes


class Fires:
    """Every firing instant of `expression` in `zone_name` between `start` and `end`, sorted."""

    def __init__(self, expression: str, zone_name: str, start: datetime, end: datetime):
        fields = expression.split()
        if len(fields) == 5:
            fields.append("0")
        minutes, hours, doms, months, dows, seconds = (field_values(f, *limits) for f, limits in zip(fields, _LIMITS))
        dows = {d % 7 for d in dows}
        either = not fields[2].startswith("*") and not fields[4].startswith("*")
        zone = ZoneInfo(zone_name)
        changes = offset_changes(zone, start - timedelta(days=2), end + timedelta(days=2))
        # Every instant is a wall time minus one of the offsets in force nearby: only those walls can land inside.
        offsets = [start.astimezone(zone).utcoffset(), end.astimezone(zone).utcoffset()]
        offsets += [o for c in changes for o in (c.before, c.after)]
        wall_low = (start + min(offsets)).replace(tzinfo=None)
        wall_high = (end + max(offsets)).replace(tzinfo=None)
        instants = set()
        day = wall_low.date()
        while day <= wall_high.date():
            dom_ok, dow_ok = day.day in doms, day.isoweekday() % 7 in dows
            if day.month in months and ((dom_ok or dow_ok) if either else (dom_ok and dow_ok)):
                midnight = datetime(day.year, day.month, day.day)
                for h, m in itertools.product(sorted(hours), sorted(minutes)):
                    minute = midnight + timedelta(hours=h, minutes=m)
                    if wall_low - timedelta(minutes=1) < minute <= wall_high:
                        for s in sorted(seconds):
                            t = self.instant(minute + timedelta(seconds=s), zone, changes)
                            if start <= t <= end:
                                instants.add(t)
            day += timedelta(days=1)
        self.start, self.end = start, end
        self.times = sorted(instants)

    @staticmethod
    def instant(wall: datetime, zone: ZoneInfo, changes: list[Change]) -> datetime:
        """The README's rule for one wall time."""
        for c in changes:
            low = (c.at + min(c.before, c.after)).replace(tzinfo=None)
            high = (c.at + max(c.before, c.after)).replace(tzinfo=None)
            if low <= wall < high:
                if c.after > c.before:  # skipped: the same distance past the change
                    return c.at + (wall - low)
                return (wall - c.before).replace(tzinfo=UTC)  # repeated: the first time, on the clock before
        return wall.replace(tzinfo=zone).astimezone(UTC)

    def next_after(self, t: datetime) -> datetime | None:
        if not self.start <= t <= self.end:
            return None
        i = bisect.bisect_right(self.times, t)
        return self.times[i] if i < len(self.times) else None

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        if not self.start <= t <= self.end:
            return None
        i = bisect.bisect_right(self.times, t)
        return self.times[i - 1] if i > 0 else None
