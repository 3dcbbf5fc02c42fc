"""TermsFinder gives, for every moment, what terms_at gives: its memo is never stale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from billfold.catalog.terms import TermsFinder, terms_at

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _phase(plan: str, interval: str, start: int, end: int | None) -> tuple[object, object]:
    sub = SimpleNamespace(
        id=f"sub_{plan}",
        status="active",
        interval=interval,
        interval_count=1,
        billing_anchor="anniversary",
        billing_origin=BASE + timedelta(days=start),
        started_at=BASE + timedelta(days=start),
        trial_end=None,
    )
    phase = SimpleNamespace(
        plan_id=plan,
        starts_at=BASE + timedelta(days=start),
        ends_at=None if end is None else BASE + timedelta(days=end),
    )
    return sub, phase


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 300), min_size=0, max_size=4, unique=True),
    overlap=st.booleans(),
    moments=st.lists(st.integers(-20, 400 * 24), min_size=1, max_size=60),
)
def test_the_finder_agrees_with_terms_at(
    cuts: list[int], overlap: bool, moments: list[int]
) -> None:
    bounds = [0, *sorted(cuts)]
    phases = []
    for n, start in enumerate(bounds):
        end = bounds[n + 1] if n + 1 < len(bounds) else None
        if overlap and end is not None:
            end += 10  # The next phase starts before this one ends.
        interval = ("none", "month", "week")[n % 3]
        phases.append(_phase(f"p{n}", interval, start, end))
    finder = TermsFinder(phases)
    # In time order, as a batch mostly is: each moment may fall in the period just found.
    for hours in sorted(moments):
        moment = BASE + timedelta(hours=hours)
        assert finder.at(moment) == terms_at(phases, moment)
