"""Quotes: a period's usage priced under a plan, line by line, each amount with how it
came about.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from billfold.domain.money import Currency
from billfold.domain.pricing.core import (
    ONE,
    PRICING_CONTEXT,
    ZERO,
    _d,
)
from billfold.domain.pricing.models import (
    Charge,
    Priced,
)
from billfold.domain.pricing.plan import Plan
from billfold.domain.pricing.usage import MetricUsage, Usage


@dataclass(frozen=True, slots=True)
class QuoteLine:
    kind: str
    metric: str | None
    model: str | None
    quantity: Decimal
    amount: Decimal
    details: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "model": self.model,
            "quantity": _d(self.quantity),
            "amount": _d(self.amount),
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class Quote:
    currency: Currency
    total: Decimal
    lines: tuple[QuoteLine, ...]
    ignored_metrics: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency.code,
            "total": _d(self.total),
            "lines": [line.to_dict() for line in self.lines],
            "ignored_metrics": list(self.ignored_metrics),
        }


def price_charge(charge: Charge, usage: MetricUsage) -> Priced:
    """One charge's amount for one metric's usage (exact)."""
    with decimal.localcontext(PRICING_CONTEXT):
        return charge.price(usage)


def quote(plan: Plan, usage: Usage, *, include_fixed_fee: bool = True) -> Quote:
    """Prices a period's usage under the plan: fixed fee, usage lines, minimum true-up."""
    with decimal.localcontext(PRICING_CONTEXT):
        lines: list[QuoteLine] = []
        if include_fixed_fee and plan.fixed_fee:
            lines.append(
                QuoteLine(
                    "fixed_fee",
                    None,
                    None,
                    ONE,
                    plan.fixed_fee,
                    [
                        {
                            "interval": plan.interval,
                            "interval_count": plan.interval_count,
                            "fee_timing": plan.fee_timing,
                            "amount": _d(plan.fixed_fee),
                        }
                    ],
                )
            )
        usage_total = ZERO
        for charge in plan.charges:
            priced = charge.price(usage.of(charge.metric))
            usage_total += priced.amount
            lines.append(
                QuoteLine(
                    "usage",
                    charge.metric,
                    charge.model,
                    priced.quantity,
                    priced.amount,
                    priced.details,
                )
            )
        if plan.minimum and usage_total < plan.minimum:
            true_up = plan.minimum - usage_total
            lines.append(
                QuoteLine(
                    "minimum",
                    None,
                    None,
                    ONE,
                    true_up,
                    [
                        {
                            "minimum": _d(plan.minimum),
                            "usage_charges": _d(usage_total),
                            "true_up": _d(true_up),
                        }
                    ],
                )
            )
        total = sum((line.amount for line in lines), ZERO)
        ignored = tuple(sorted(set(usage.metrics) - plan.metrics))
        return Quote(plan.currency, total, tuple(lines), ignored)
