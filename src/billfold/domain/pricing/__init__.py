"""The pricing engine: plans, charge models and quotes, as pure functions over exact decimals.

A plan (API.md "PLAN") prices one service: a fixed fee per interval, a minimum spend, and
charges, one per metric and model. `quote(plan, usage)` prices a period's usage and says
how every amount came about, line by line, so a quote can be pasted into a support ticket.

All arithmetic runs in a decimal context that traps Inexact: prices have at most 12
decimal places and quantities are bounded, so every product and sum is exact, and any
rounding would be a bug that fails loudly rather than a cent that goes missing. Quote
amounts are exact, not rounded: money is rounded only where it is settled.
"""

from billfold.domain.pricing.core import (
    CODE_PATTERN,
    DAY_US,
    EPOCH,
    FEE_TIMINGS,
    INTERVALS,
    MAX_CHARGES,
    MAX_DETAIL_EVENTS,
    MAX_EVENTS,
    MAX_INTERVAL_COUNT,
    MAX_NAME_LENGTH,
    MAX_PRICE_PLACES,
    MAX_TIERS,
    MAX_TRIAL_DAYS,
    MAX_WINDOWS,
    MODELS,
    ONE,
    PRICING_CONTEXT,
    QUARTER_HOUR_US,
    WEEKDAYS,
    ZERO,
)
from billfold.domain.pricing.models import (
    Charge,
    Continued,
    Graduated,
    GraduatedPercentage,
    Package,
    Percentage,
    PerUnit,
    Priced,
    Tier,
    Volume,
)
from billfold.domain.pricing.plan import (
    PLAN_FIELDS,
    Plan,
    parse_charge,
    parse_plan,
)
from billfold.domain.pricing.quote import (
    Quote,
    QuoteLine,
    price_charge,
    quote,
)
from billfold.domain.pricing.time_of_day import (
    TimeOfDay,
    Window,
)
from billfold.domain.pricing.usage import (
    Event,
    MetricUsage,
    Usage,
    parse_time,
    parse_usage,
)

__all__ = [
    "CODE_PATTERN",
    "DAY_US",
    "EPOCH",
    "FEE_TIMINGS",
    "INTERVALS",
    "MAX_CHARGES",
    "MAX_DETAIL_EVENTS",
    "MAX_EVENTS",
    "MAX_INTERVAL_COUNT",
    "MAX_NAME_LENGTH",
    "MAX_PRICE_PLACES",
    "MAX_TIERS",
    "MAX_TRIAL_DAYS",
    "MAX_WINDOWS",
    "MODELS",
    "ONE",
    "PLAN_FIELDS",
    "PRICING_CONTEXT",
    "QUARTER_HOUR_US",
    "WEEKDAYS",
    "ZERO",
    "Charge",
    "Continued",
    "Event",
    "Graduated",
    "GraduatedPercentage",
    "MetricUsage",
    "Package",
    "PerUnit",
    "Percentage",
    "Plan",
    "Priced",
    "Quote",
    "QuoteLine",
    "Tier",
    "TimeOfDay",
    "Usage",
    "Volume",
    "Window",
    "parse_charge",
    "parse_plan",
    "parse_time",
    "parse_usage",
    "price_charge",
    "quote",
]
