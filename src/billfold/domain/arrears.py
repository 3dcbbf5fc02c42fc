"""Graded arrears, as a pure rule: a prepaid user whose usage ran past what it held owes
a debt; for a grace period usage goes on and reminders go out, then access is suspended
(entitlements and authorizations say no, nothing new can be bought), and after a further
period the subscriptions are terminated (cancelled; their history stays). Paying the
debt ends it at once, whatever the stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

GRACE: Final = "grace"
SUSPENDED: Final = "suspended"
TERMINATED: Final = "terminated"
STAGES: Final = (GRACE, SUSPENDED, TERMINATED)


@dataclass(frozen=True, slots=True)
class ArrearsTerms:
    grace: timedelta
    """How long usage goes on after the debt arises."""
    terminate_after: timedelta
    """How long after the suspension the subscriptions are terminated."""


def stage_at(since: datetime, now: datetime, terms: ArrearsTerms) -> str:
    """The stage a debt owed since `since` is in at `now`."""
    if now < since + terms.grace:
        return GRACE
    if now < since + terms.grace + terms.terminate_after:
        return SUSPENDED
    return TERMINATED
