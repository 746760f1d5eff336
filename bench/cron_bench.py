"""Cron benchmark: microseconds per next-occurrence call, cron.next_after beside croniter alone; and a wide sweep.

    python3 bench/cron_bench.py                 # timings, about half a minute
    python3 bench/cron_bench.py --sweep 20      # also compare with tests/cron_oracle.py over every tzdata zone

Timings: the same crons, zones and instants (random instants of 2026, each asked once, so cron.py's
memo never answers) through
- croniter alone: one parsed croniter per (cron, zone), aimed at each instant (`set_current`, then
  `get_next`), croniter's own time-zone handling; the fastest way to use croniter;
- croniter parsing each time: `croniter(cron, instant).get_next()`, the usual way;
- cron.next_after, and cron.next_after asked again with the same instant (its memo).
Each figure is the median of --repeats runs; the ratio is cron.next_after / croniter alone (target <= 1.5x).

--sweep N: N random instants near offset changes and N elsewhere, per zone of tzdata, per cron of the
property test, checked against the oracle; prints the number of checks and of mismatches.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from croniter import croniter  # noqa: E402

import cron  # noqa: E402

UTC = timezone.utc
CRONS = ("*/15 * * * *", "0 2 * * *", "30 2 * * *", "0 9 * * 1-5", "* * * * * */10", "0 0 1 * *")
ZONES = ("UTC", "America/New_York", "Australia/Lord_Howe", "America/Santiago")


def per_call_us(calls: list[tuple[str, str, datetime]], function) -> float:
    started = time.perf_counter()
    for expression, zone_name, instant in calls:
        function(expression, zone_name, instant)
    return (time.perf_counter() - started) / len(calls) * 1e6


def timings(count: int, repeats: int) -> None:
    rng = random.Random(7)
    year = 365 * 86400
    figures: dict[str, list[float]] = {
        "croniter alone": [],
        "croniter parsing each time": [],
        "cron.next_after": [],
        "cron.next_after, memoised": [],
    }
    walkers = {(e, z): croniter(e, datetime(2026, 1, 1, tzinfo=ZoneInfo(z))) for e in CRONS for z in ZONES}

    def croniter_alone(expression: str, zone_name: str, instant: datetime) -> datetime:
        walker = walkers[expression, zone_name]
        walker.set_current(instant.astimezone(ZoneInfo(zone_name)), force=True)
        return walker.get_next(datetime)

    def croniter_parsing(expression: str, zone_name: str, instant: datetime) -> datetime:
        return croniter(expression, instant.astimezone(ZoneInfo(zone_name))).get_next(datetime)

    for _ in range(repeats):
        start = datetime(2026, 1, 1, tzinfo=UTC)
        rounds = count // (len(CRONS) * len(ZONES))
        calls = [
            (e, z, start + timedelta(seconds=rng.uniform(0, year))) for _ in range(rounds) for e in CRONS for z in ZONES
        ]
        figures["croniter alone"].append(per_call_us(calls, croniter_alone))
        figures["croniter parsing each time"].append(per_call_us(calls, croniter_parsing))
        figures["cron.next_after"].append(per_call_us(calls, cron.next_after))
        recent = calls[-5000:]  # within the memo's 16,384 entries, just asked by the line above
        figures["cron.next_after, memoised"].append(per_call_us(recent, cron.next_after))
    base = statistics.median(figures["croniter alone"])
    print(f"{'per next-occurrence call':<30} {'us (median)':>12} {'spread':>16} {'ratio':>7}")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"{name:<30} {median:>12.1f} {min(values):>7.1f}-{max(values):<8.1f} {median / base:>6.2f}x")


def sweep(per_zone: int) -> int:
    from tests.cron_oracle import Fires, offset_changes
    from tests.test_cron import CRONS as PROPERTY_CRONS
    from tests.test_cron import window

    rng, checks, mismatches = random.Random(11), 0, 0
    started = time.perf_counter()
    for zone_name in sorted(available_timezones()):
        zone = ZoneInfo(zone_name)
        changes = offset_changes(zone, datetime(1975, 1, 1, tzinfo=UTC), datetime(2037, 1, 1, tzinfo=UTC))
        for i in range(2 * per_zone):
            expression = rng.choice(PROPERTY_CRONS)
            near_change = changes and i % 2 == 0
            center = (
                rng.choice(changes).at + timedelta(seconds=rng.uniform(-7200, 7200))
                if near_change
                else datetime(1975, 1, 1, tzinfo=UTC) + timedelta(days=rng.uniform(0, 62 * 365))
            )
            fires = Fires(expression, zone_name, center - window(expression), center + window(expression))
            for _ in range(5):
                t = center + timedelta(seconds=rng.uniform(-7200, 7200))
                wants = fires.next_after(t), fires.latest_at_or_before(t)
                if None in wants:  # a long gap or repetition (3 hours in Antarctica/Rothera, 1976): widen
                    wide = Fires(expression, zone_name, t - 16 * window(expression), t + 16 * window(expression))
                    wants = wide.next_after(t), wide.latest_at_or_before(t)
                for asked in (t, t.astimezone(zone)):
                    for got, want in zip(
                        (
                            cron.next_after(expression, zone_name, asked),
                            cron.latest_at_or_before(expression, zone_name, asked),
                        ),
                        wants,
                    ):
                        checks += 1
                        if got != want:
                            mismatches += 1
                            print(f"MISMATCH {expression!r} {zone_name} {asked.isoformat()}: {got} != oracle {want}")
    print(
        f"sweep: {checks} checks over {len(available_timezones())} zones, 1975-2037, {mismatches} mismatches "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return mismatches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="next-occurrence calls per timing run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sweep", type=int, default=0, metavar="N", help="also sweep every zone, 2N instants each")
    args = parser.parse_args()
    timings(args.calls, args.repeats)
    return 1 if args.sweep and sweep(args.sweep) else 0


if __name__ == "__main__":
    sys.exit(main())
