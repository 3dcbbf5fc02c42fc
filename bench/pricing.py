"""Pricing speed: quotes over 10^6 events against simply summing the same events.

Two charges are priced over the same million usage events (values 0.001 to 9.999, spread
over 30 days): a five-tier graduated charge (priced on the period's total) and a
time-of-day charge in America/New_York with three windows, one crossing midnight
(priced event by event). The baseline, measured in the same run, is summing the events'
values in Python. Each figure is the best of --repeat runs.

Usage: python bench/pricing.py [--events 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from billfold.domain.pricing import Event, MetricUsage, parse_charge, price_charge

console = Console()

GRADUATED = {
    "metric": "calls",
    "model": "graduated",
    "tiers": [
        {"up_to": 1000, "unit_price": "0.01", "flat_fee": "5"},
        {"up_to": 10000, "unit_price": "0.008"},
        {"up_to": 100000, "unit_price": "0.005"},
        {"up_to": 1000000, "unit_price": "0.002"},
        {"up_to": None, "unit_price": "0.001"},
    ],
}
TIME_OF_DAY = {
    "metric": "calls",
    "model": "time_of_day",
    "timezone": "America/New_York",
    "windows": [
        {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "from": "09:00",
            "to": "18:00",
            "unit_price": "0.02",
        },
        {"days": ["fri", "sat"], "from": "22:00", "to": "06:00", "unit_price": "0.005"},
        {"days": ["sun"], "from": "00:00", "to": "24:00", "unit_price": "0.004"},
    ],
    "default_unit_price": "0.01",
    "free_units": "100",
}


def make_events(count: int) -> MetricUsage:
    rng = random.Random(7)
    start = datetime(2026, 10, 20, tzinfo=UTC)
    step = timedelta(days=30) / count
    return MetricUsage(
        tuple(
            Event("calls", Decimal(rng.randint(1, 9999)).scaleb(-3), start + step * n)
            for n in range(count)
        )
    )


def best_of(repeat: int, work: Callable[[], object]) -> tuple[float, object]:
    best = float("inf")
    result: object = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with console.status(f"making {args.events:,} events"):
        usage = make_events(args.events)
    with console.status("baseline: summing the events"):
        baseline, total = best_of(
            args.repeat, lambda: sum((e.value for e in usage.events), Decimal(0))
        )
    figures = {"baseline_sum_s": baseline}
    table = Table(title=f"billfold pricing over {args.events:,} events")
    for column in ("what", "seconds", "events/s", "quotes/s", "baseline ÷ this"):
        table.add_column(column, justify="right")
    table.add_row(
        "baseline: sum of values",
        f"{baseline:.3f}",
        f"{args.events / baseline:,.0f}",
        f"{1 / baseline:.2f}",
        "1.00",
    )
    for name, definition in (("graduated, 5 tiers", GRADUATED), ("time of day", TIME_OF_DAY)):
        charge = parse_charge(definition, "charge")
        with console.status(f"pricing: {name}"):
            seconds, priced = best_of(args.repeat, lambda c=charge: price_charge(c, usage))
        figures[name] = seconds
        table.add_row(
            name,
            f"{seconds:.3f}",
            f"{args.events / seconds:,.0f}",
            f"{1 / seconds:.2f}",
            f"{baseline / seconds:.2f}",
        )
        console.print(f"{name}: amount {priced.amount}")  # type: ignore[attr-defined]
    console.print(table)
    console.print(f"sum of values: {total}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
