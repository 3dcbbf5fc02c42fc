"""Settlement: provider statements, payouts, the commission report, reconciliation."""

from billfold.settlement.service import (
    PERIOD,
    TICK,
    Difference,
    Payout,
    Reconciliation,
    Statement,
    commission_report,
    parse_period,
    payout,
    reconcile,
    statements,
)

__all__ = [
    "PERIOD",
    "TICK",
    "Difference",
    "Payout",
    "Reconciliation",
    "Statement",
    "commission_report",
    "parse_period",
    "payout",
    "reconcile",
    "statements",
]
