"""The invoice as a document a business can send: seller and buyer, every line with its
provider, service and metric, how each amount came about, taxes by rate, payment
instructions, in the buyer's language (English or Simplified Chinese).

The figures are the invoice's own (`view_of`); what this adds is names and explanations.
A usage line's breakdown is its quantity priced again under the plan in force for its
period (`quote`, with the plan's free units, tiers and packages): it is shown only when
it gives the line's own amount, so the document never explains a figure it did not make
(usage rated across a price change, or by time-of-day windows, says so instead).
"""

from __future__ import annotations

import base64
import mimetypes
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from billfold.catalog import hides_personal_data, plan_in_force
from billfold.core.access import Principal
from billfold.core.context import Work
from billfold.core.directory import billing_profile, load_user, seller_details, user_locale
from billfold.core.i18n import LOCALES, Formats, translations
from billfold.domain.errors import BillfoldError
from billfold.domain.money import from_units
from billfold.domain.pricing import Event, MetricUsage, parse_usage, price_charge, quote
from billfold.invoicing.model import Invoice
from billfold.store.tables import (
    credit_notes,
    metrics,
    plans,
    providers,
    services,
    subscription_phases,
    usage_events,
)

MAX_LOGO_BYTES: Final = 256 * 1024


@dataclass(slots=True)
class DocLine:
    kind: str
    description: str
    provider: str | None
    service: str | None
    metric: str | None
    period: str
    quantity: str
    unit_price: str
    amount: str
    tax: str
    explained: list[str] = field(default_factory=list)


def document(
    work: Work, principal: Principal, inv: Invoice, view: Any, locale: str | None = None
) -> dict[str, Any]:
    """What the invoice template renders: every text already in the reader's language."""
    settings = work.settings
    lang = locale if locale in LOCALES else user_locale(work, inv.user_id)
    gettext = translations(lang).gettext
    fmt = Formats(lang)
    cur = inv.cur

    def money(value: Decimal) -> str:
        return fmt.money(value, cur.code)

    user = load_user(work, inv.user_id)
    private = hides_personal_data(principal)
    profile = billing_profile(work, user.id)
    buyer: dict[str, Any] = {"id": user.id}
    if not private:
        buyer.update(
            name=profile.get("name") or user.name,
            company=profile.get("company"),
            address=(profile.get("address") or "").splitlines(),
            tax_number=profile.get("tax_number"),
            email=profile.get("email") or user.email,
            fapiao_title=profile.get("fapiao_title"),
            fapiao_tax_number=profile.get("fapiao_tax_number"),
        )
    platform = {
        "name": settings.invoice_issuer,
        "address": _lines(settings.invoice_seller_address),
        "tax_number": settings.invoice_seller_tax_number or None,
        "contact": settings.invoice_seller_contact or None,
        "logo": _logo(settings.invoice_seller_logo),
        "bank": _lines(settings.invoice_bank_details),
    }
    seller, agent = platform, None
    merchant = seller_details(work, inv.provider_id) if inv.provider_id else None
    if merchant is not None and merchant.merchant_of_record:
        # The provider sells; the platform bills and collects on its behalf (the money
        # is paid to the platform, so its bank details stay).
        seller = {
            "name": merchant.get("legal_name"),
            "address": (merchant.get("address") or "").splitlines(),
            "tax_number": merchant.get("tax_number"),
            "contact": merchant.get("contact"),
            "logo": None,
            "bank": platform["bank"],
        }
        agent = platform
    names = _names(work, inv)
    lines = [_line(work, inv, line, names, fmt, gettext, money) for line in _visible(view, inv)]
    notes = [
        {"id": r.id, "amount": money(from_units(r.amount, cur)), "reason": r.reason,
         "date": fmt.date(r.created_at)}
        for r in work.conn.execute(
            select(credit_notes).where(credit_notes.c.invoice_id == inv.id)
            .order_by(credit_notes.c.created_at)
        )
    ]  # fmt: skip
    rate = view.tax_rate
    taxes = [{"rate": f"{fmt.number(rate * 100)}%", "base": money(view.subtotal),
              "tax": money(view.tax)}]  # fmt: skip
    return {
        "lang": lang,
        "t": gettext,
        "invoice": view,
        "number": inv.number,
        "status": gettext(view.status),
        "seller": seller,
        "agent": agent,
        "buyer": buyer,
        "provider": names["provider"],
        "lines": lines,
        "taxes": taxes,
        "credit_notes": notes,
        "period": f"{fmt.date(view.period_start)} – {fmt.date(view.period_end)}",
        "issued": fmt.date(view.finalized_at) if view.finalized_at else None,
        "due": fmt.date(view.due_at) if view.due_at else None,
        "subtotal": money(view.subtotal),
        "tax": money(view.tax),
        "total": money(view.total),
        "paid": money(view.amount_paid),
        "credited": money(view.amount_credited) if view.amount_credited else None,
        "amount_due": money(view.amount_due),
        "console_url": f"{settings.public_url.rstrip('/')}/invoices",
        "prepaid": view.billing_mode == "prepaid",
    }


def _visible(view: Any, inv: Invoice) -> list[Any]:
    """The invoice's lines the reader may see (`view_of` leaves a foreign provider none),
    paired with the stored line for its period."""
    by_id = {line.id: line for line in inv.lines}
    return [(shown, by_id.get(shown.id)) for shown in view.lines]


def _names(work: Work, inv: Invoice) -> dict[str, Any]:
    """The provider's name, and the service and metric names of the invoice's plan."""
    found: dict[str, Any] = {
        "provider": None,
        "service": None,
        "metrics": {},
        "metric_ids": {},
        "plan_id": None,
    }
    if inv.provider_id:
        found["provider"] = work.conn.execute(
            select(providers.c.name_enc).where(providers.c.id == inv.provider_id)
        ).scalar_one_or_none()
        if found["provider"] is not None:
            found["provider"] = work.cipher.decrypt(found["provider"], context="providers.name")
    if inv.subscription_id:
        phase = work.conn.execute(
            select(subscription_phases.c.plan_id)
            .where(
                subscription_phases.c.subscription_id == inv.subscription_id,
                subscription_phases.c.starts_at < inv.period_end,
            )
            .order_by(subscription_phases.c.starts_at.desc())
        ).first()
        if phase is not None:
            found["plan_id"] = phase.plan_id
            service = work.conn.execute(
                select(services.c.id, services.c.name)
                .join(plans, plans.c.service_id == services.c.id)
                .where(plans.c.id == phase.plan_id)
            ).first()
            if service is not None:
                found["service"] = service.name
                rows = work.conn.execute(
                    select(metrics.c.id, metrics.c.code, metrics.c.name).where(
                        metrics.c.service_id == service.id
                    )
                ).all()
                found["metrics"] = {r.code: r.name for r in rows}
                found["metric_ids"] = {r.code: r.id for r in rows}
    return found


def _line(
    work: Work,
    inv: Invoice,
    pair: tuple[Any, Any],
    names: dict[str, Any],
    fmt: Formats,
    gettext: Any,
    money: Any,
) -> DocLine:
    shown, stored = pair
    start = getattr(stored, "period_start", None) or inv.period_start
    end = getattr(stored, "period_end", None) or inv.period_end
    metric_name = names["metrics"].get(shown.metric) if shown.metric else None
    line = DocLine(
        kind=gettext(_KINDS.get(shown.kind, shown.kind)),
        # The stored description is for the ledger (English, codes); the lines the
        # document names itself need none.
        description="" if shown.kind in ("usage", "fixed_fee") else shown.description,
        provider=names["provider"],
        service=names["service"],
        metric=metric_name or shown.metric,
        period=f"{fmt.date(start)} – {fmt.date(end)}",
        quantity=fmt.number(shown.quantity) if shown.quantity else "",
        unit_price="",
        amount=money(shown.amount),
        tax=money(shown.tax),
    )
    if (shown.description or "").startswith("Late usage"):
        line.kind = gettext("Late usage (earlier periods)")
    covered = _COVERED.search(shown.description or "")
    if covered is not None:
        line.explained.append(
            gettext("%(units)s more covered by resource packages")
            % {"units": fmt.number(covered.group(1))}
        )
    prorated = _PRORATED.search(shown.description or "")
    if prorated is not None:
        line.explained.append(
            gettext("Prorated by days: %(used)s of the period's %(days)s days")
            % {"used": prorated.group(1), "days": prorated.group(2)}
        )
    if shown.kind == "usage" and shown.metric and shown.quantity and names["plan_id"]:
        words, price = _explain(work, inv, names, start, shown, fmt, money, gettext)
        line.explained = words + line.explained
        line.unit_price = price
    return line


# What a line's stored description (written by the bill run, in English) says that the
# document says again in the reader's language.
_PRORATED = re.compile(r"prorated (\d+)/(\d+) days")
_COVERED = re.compile(r"\(([0-9.]+) covered by resource packages\)")


def N_(message: str) -> str:
    """Marks a message for the catalog; it is translated where it is shown."""
    return message


_KINDS = {
    "fixed_fee": N_("Subscription fee"),
    "usage": N_("Usage"),
    "proration": N_("Proration"),
    "minimum": N_("Minimum commitment"),
    "credit": N_("Credit"),
    "discount": N_("Discount"),
}


def _explain(
    work: Work,
    inv: Invoice,
    names: dict[str, Any],
    at: Any,
    shown: Any,
    fmt: Formats,
    money: Any,
    gettext: Any,
) -> tuple[list[str], str]:
    """How a usage line's amount came about, in words; and its unit price, if one. A
    charge model whose details it does not know how to say (volume, package, percentage
    ...) gets none: the document never fails for want of an explanation."""
    try:
        return _explained(work, inv, names, at, shown, fmt, money, gettext)
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return [], ""


def _explained(
    work: Work,
    inv: Invoice,
    names: dict[str, Any],
    at: Any,
    shown: Any,
    fmt: Formats,
    money: Any,
    gettext: Any,
) -> tuple[list[str], str]:
    """How a usage line's amount came about, in words; and its unit price, if one."""
    try:
        plan = plan_in_force(work, names["plan_id"], at)
    except BillfoldError:
        return [], ""
    charge = next((c for c in plan.charges if c.metric == shown.metric), None)
    if charge is not None and getattr(charge, "windows", None) is not None:
        return _by_window(work, inv, names, charge, plan, shown, fmt, money, gettext), ""
    try:
        priced = quote(
            plan,
            parse_usage({"quantities": {shown.metric: str(shown.quantity)}}),
            include_fixed_fee=False,
        )
    except BillfoldError:
        return [], ""
    found = [q for q in priced.lines if q.kind == "usage" and q.metric == shown.metric]
    if not found:
        return [], ""
    q = found[0]
    cur_amount = q.amount.quantize(plan.currency.minor_quantum, rounding=ROUND_HALF_UP)
    if cur_amount != shown.amount:
        return [gettext("Rated as the usage happened (see the usage records).")], ""
    words: list[str] = []
    unit_price = ""
    for step in q.details:
        if "tier" in step and {"from", "units", "unit_price", "amount"} <= step.keys():
            up_to = step.get("up_to")
            span = (
                gettext("%(start)s to %(end)s")
                % {"start": fmt.number(step["from"]), "end": fmt.number(up_to)}
                if up_to is not None
                else gettext("above %(start)s") % {"start": fmt.number(step["from"])}
            )
            words.append(
                gettext("Tier %(tier)s (%(span)s): %(units)s × %(price)s = %(amount)s")
                % {"tier": step["tier"], "span": span, "units": fmt.number(step["units"]),
                   "price": money(Decimal(step["unit_price"])),
                   "amount": money(Decimal(step["amount"]))}
            )  # fmt: skip
            continue
        free = Decimal(str(step.get("free_units", "0")))
        if free:
            words.append(gettext("%(units)s free") % {"units": fmt.number(free)})
        if {"billable_units", "unit_price", "amount"} <= step.keys():
            unit_price = money(Decimal(step["unit_price"]))
            words.append(
                gettext("%(units)s × %(price)s = %(amount)s")
                % {"units": fmt.number(step["billable_units"]), "price": unit_price,
                   "amount": money(Decimal(step["amount"]))}
            )  # fmt: skip
        elif "amount" in step and not words:
            words.append(money(Decimal(step["amount"])))
    return words, unit_price


MAX_EVENTS_EXPLAINED: Final = 50_000
"""A time-of-day line is explained from its events, up to this many."""


def _by_window(
    work: Work,
    inv: Invoice,
    names: dict[str, Any],
    charge: Any,
    plan: Any,
    shown: Any,
    fmt: Formats,
    money: Any,
    gettext: Any,
) -> list[str]:
    """A time-of-day line priced again from its events, in time order: the free units,
    then each window's units and price."""
    metric_id = names["metric_ids"].get(shown.metric)
    rows = work.conn.execute(
        select(usage_events.c.occurred_at, usage_events.c.value)
        .where(
            usage_events.c.user_id == inv.user_id,
            usage_events.c.metric_id == metric_id,
            usage_events.c.period_start == inv.period_start,
        )
        .order_by(usage_events.c.occurred_at, usage_events.c.seq)
        .limit(MAX_EVENTS_EXPLAINED + 1)
    ).all()
    if not rows or len(rows) > MAX_EVENTS_EXPLAINED:
        return [gettext("Rated as the usage happened (see the usage records).")]
    events = tuple(Event(shown.metric, Decimal(r.value), r.occurred_at) for r in rows)
    priced = price_charge(charge, MetricUsage(events=events))
    rounded = priced.amount.quantize(plan.currency.minor_quantum, rounding=ROUND_HALF_UP)
    if rounded != shown.amount:
        return [gettext("Rated as the usage happened (see the usage records).")]
    words: list[str] = []
    for step in priced.details:
        if "window" not in step:
            free = Decimal(str(step.get("free_units", "0")))
            if free:
                words.append(gettext("%(units)s free") % {"units": fmt.number(free)})
            continue
        label = gettext("other times") if step["window"] == "default" else step["window"]
        words.append(
            gettext("%(window)s (%(zone)s): %(units)s × %(price)s = %(amount)s")
            % {"window": label, "zone": charge.timezone, "units": fmt.number(step["units"]),
               "price": money(Decimal(step["unit_price"])),
               "amount": money(Decimal(step["amount"]))}
        )  # fmt: skip
    return words


def _lines(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\\n", "\n").splitlines() if part.strip()]


@lru_cache(maxsize=4)
def _logo(path: Path | None) -> str | None:
    """The logo as a data: URI (an invoice loads nothing from anywhere)."""
    if path is None:
        return None
    kind = mimetypes.guess_type(str(path))[0]
    if kind not in ("image/png", "image/jpeg", "image/svg+xml"):
        return None
    data = path.read_bytes()
    if len(data) > MAX_LOGO_BYTES:
        return None
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"
