"""Settlement: provider statements, payouts, the commission report, reconciliation."""

from billfold.settlement.service import (
    TICK,
    AgingView,
    CommissionRow,
    Difference,
    Payout,
    Reconciliation,
    Statement,
    commission_report,
    payout,
    promotion_costs,
    receivables,
    reconcile,
    statements,
)

__all__ = [
    "TICK",
    "AgingView",
    "CommissionRow",
    "Difference",
    "Payout",
    "Reconciliation",
    "Statement",
    "commission_report",
    "payout",
    "promotion_costs",
    "receivables",
    "reconcile",
    "statements",
]
