"""Settlement: provider statements, payouts, the commission report, reconciliation."""

from billfold.settlement.service import (
    TICK,
    CommissionRow,
    Difference,
    Payout,
    Reconciliation,
    Statement,
    commission_report,
    payout,
    promotion_costs,
    reconcile,
    statements,
)

__all__ = [
    "TICK",
    "CommissionRow",
    "Difference",
    "Payout",
    "Reconciliation",
    "Statement",
    "commission_report",
    "payout",
    "promotion_costs",
    "reconcile",
    "statements",
]
