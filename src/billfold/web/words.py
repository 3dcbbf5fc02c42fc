"""Prices in words ("0.01 per call, first 1,000 free each month") and series as charts."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from billfold.core.i18n import Formats
from billfold.web.console import N_, Viewer

_EVERY = {
    "none": N_("each month"),
    "day": N_("each day"),
    "week": N_("each week"),
    "month": N_("each month"),
    "quarter": N_("each quarter"),
    "year": N_("each year"),
}
_FEE = {
    "day": N_("%(fee)s a day"),
    "week": N_("%(fee)s a week"),
    "month": N_("%(fee)s a month"),
    "quarter": N_("%(fee)s a quarter"),
    "year": N_("%(fee)s a year"),
}


# The names of the steps a quote's details show, for their column headings.
DETAIL_WORDS: Final = {
    "tier": N_("Tier"), "up_to": N_("Up to"), "units": N_("Units"), "unit_price": N_("Unit price"),
    "flat_fee": N_("Flat fee"), "amount": N_("Amount"), "window": N_("Time window"),
    "quantity": N_("Quantity"), "free_units": N_("Free units"), "timezone": N_("Time zone"),
    "billable_units": N_("Billable units"), "packages": N_("Packages"),
    "package_size": N_("Package size"), "package_price": N_("Package price"),
    "rounding": N_("Rounding"), "rate": N_("Rate"), "value": N_("Value"),
    "free_events": N_("Free events"), "free_value": N_("Free value"),
    "free_value_used": N_("Free value used"), "partly_free_events": N_("Partly free events"),
    "fixed_fee_per_event": N_("Fee per event"), "min_per_event": N_("Minimum per event"),
    "max_per_event": N_("Maximum per event"), "events": N_("Events"), "from": N_("From"),
    "to": N_("To"), "minimum": N_("Minimum"), "usage_charges": N_("Usage charges"),
    "true_up": N_("True-up"), "price": N_("Price"),
}  # fmt: skip


def detail_table(details: list[dict[str, Any]], seen: Viewer) -> tuple[list[str], list[list[str]]]:
    """A quote line's details as one table: every key any step has is a column."""
    keys: list[str] = []
    for step in details:
        keys.extend(k for k in step if k not in keys)
    fmt = Formats(seen.locale)

    def cell(value: Any) -> str:
        if value is None:
            return "∞"
        if isinstance(value, (int, Decimal)) or (
            isinstance(value, str) and value.replace(".", "", 1).replace("-", "", 1).isdigit()
        ):
            return fmt.number(value)
        if isinstance(value, list):
            return ", ".join(map(str, value))
        return str(value)

    heads = [seen.t(DETAIL_WORDS[k]) if k in DETAIL_WORDS else k for k in keys]
    return heads, [[cell(step.get(k, "")) if k in step else "" for k in keys] for step in details]


def _tiers(tiers: list[dict[str, Any]], fmt: Formats, cur: str, seen: Viewer, key: str) -> str:
    parts: list[str] = []
    low = Decimal(0)
    for tier in tiers:
        price = (
            fmt.money(tier[key], cur)
            if key == "unit_price"
            else f"{fmt.number(Decimal(str(tier[key])) * 100)}%"
        )
        up = tier.get("up_to")
        if up is None:
            part = seen.t("above %(low)s: %(price)s") % {"low": fmt.number(low), "price": price}
        else:
            part = seen.t("%(low)s to %(up)s: %(price)s") % {
                "low": fmt.number(low + (1 if low else 0)),
                "up": fmt.number(up),
                "price": price,
            }
            low = Decimal(str(up))
        if tier.get("flat_fee") and Decimal(str(tier["flat_fee"])):
            part += " " + seen.t("plus %(fee)s") % {"fee": fmt.money(tier["flat_fee"], cur)}
        parts.append(part)
    return "; ".join(parts)


def describe_charge(  # noqa: PLR0911 (one sentence per charge model)
    charge: dict[str, Any],
    cur: str,
    interval: str,
    seen: Viewer,
    names: dict[str, str] | None = None,
) -> str:
    """One charge in words, in the viewer's language, naming the metric by its name."""
    fmt = Formats(seen.locale)
    metric, model = (names or {}).get(charge["metric"], charge["metric"]), charge["model"]
    every = seen.t(_EVERY.get(interval, N_("each period")))
    free = Decimal(str(charge.get("free_units") or 0))
    free_text = (
        ", " + seen.t("first %(n)s free %(every)s") % {"n": fmt.number(free), "every": every}
        if free
        else ""
    )
    if model == "per_unit":
        return (
            seen.t("%(metric)s: %(price)s each")
            % {
                "price": fmt.money(charge["unit_price"], cur),
                "metric": metric,
            }
            + free_text
        )
    if model in ("graduated", "volume"):
        label = seen.t("Graduated") if model == "graduated" else seen.t("Volume")
        how = (
            seen.t("each tier prices the units inside it")
            if model == "graduated"
            else seen.t("the tier reached prices every unit")
        )
        return f"{metric}, {label} ({how}): " + _tiers(
            charge["tiers"], fmt, cur, seen, "unit_price"
        )
    if model == "package":
        return (
            seen.t("%(metric)s: %(price)s per package of %(size)s")
            % {
                "price": fmt.money(charge["package_price"], cur),
                "size": fmt.number(charge["package_size"]),
                "metric": metric,
            }
            + free_text
        )
    if model == "percentage":
        text = seen.t("%(metric)s: %(rate)s of each value") % {
            "rate": f"{fmt.number(Decimal(str(charge['rate'])) * 100)}%",
            "metric": metric,
        }
        fee = charge.get("fixed_fee_per_event")
        if fee and Decimal(str(fee)):
            text += " " + seen.t("plus %(fee)s each") % {"fee": fmt.money(fee, cur)}
        return text
    if model == "graduated_percentage":
        return f"{metric}, {seen.t('Graduated percentage')}: " + _tiers(
            charge["tiers"], fmt, cur, seen, "rate"
        )
    if model == "time_of_day":
        windows = [
            seen.t("%(days)s %(start)s–%(end)s: %(price)s")
            % {
                "days": ",".join(w["days"]),
                "start": w["from"],
                "end": w["to"],
                "price": fmt.money(w["unit_price"], cur),
            }
            for w in charge.get("windows", [])
        ]
        other = seen.t("other times %(price)s") % {
            "price": fmt.money(charge.get("default_unit_price", "0"), cur)
        }
        return (
            seen.t("%(metric)s by time of day (%(tz)s)")
            % {"metric": metric, "tz": charge["timezone"]}
            + ": "
            + "; ".join([*windows, other])
            + free_text
        )
    return f"{metric}: {model}"


def describe_plan(
    plan: dict[str, Any], seen: Viewer, names: dict[str, str] | None = None
) -> list[str]:
    """A plan in sentences: its fee, minimum, trial and every charge."""
    fmt = Formats(seen.locale)
    cur, interval = plan["currency"], plan["interval"]
    lines: list[str] = []
    fee = Decimal(str(plan.get("fixed_fee") or 0))
    if interval == "none":
        lines.append(seen.t("Pay as you go: no fee, usage billed each calendar month."))
    elif fee:
        count = int(plan.get("interval_count") or 1)
        text = seen.t(_FEE.get(interval, N_("%(fee)s a period"))) % {"fee": fmt.money(fee, cur)}
        if count > 1:
            text += " " + seen.t("(billed every %(n)s periods)") % {"n": count}
        lines.append(text)
    minimum = Decimal(str(plan.get("minimum") or 0))
    if minimum:
        lines.append(
            seen.t("Minimum spend %(amount)s a period.") % {"amount": fmt.money(minimum, cur)}
        )
    if plan.get("trial_days"):
        lines.append(seen.t("%(n)s days free trial.") % {"n": plan["trial_days"]})
    lines.extend(describe_charge(c, cur, interval, seen, names) for c in plan.get("charges", []))
    return lines


def usage_chart(
    answer: Any, start: datetime, days: int, key: str, other: str | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """Day labels and one series per group from an analytics answer, zeros filled in."""
    labels = [(start + timedelta(days=i)).strftime("%m-%d") for i in range(days)]
    index = {(start + timedelta(days=i)).date(): i for i in range(days)}
    series: list[dict[str, Any]] = []
    for s in answer.data:
        values = ["0"] * days
        for point in s.points:
            i = index.get(point.start.date())
            if i is not None:
                values[i] = str(getattr(point, key))
        name = " · ".join(v for v in s.group.values() if v) or other or key
        series.append({"name": name, "data": values})
    return labels, series
