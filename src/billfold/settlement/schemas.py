"""Request and response schemas of settlement: statements, payouts, the commission report."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from billfold.core.schemas import Amount, AmountIn, Request
from billfold.domain.money import Currency, format_money, from_units
from billfold.settlement.service import AgingView, CommissionRow, Payout, PromotionCost, Statement


def _money(units: int, cur: Currency) -> str:
    return format_money(from_units(units, cur), cur)


class StatementServiceOut(BaseModel):
    service: str | None
    gross: Amount
    refunds: Amount
    commission: Amount
    net: Amount


class StatementOut(BaseModel):
    object: Literal["statement"] = "statement"
    provider: str
    period: str
    currency: str
    gross: Amount
    commission: Amount
    refunds: Amount
    promotions: Amount = Field(
        default="0",
        description="What the provider's own vouchers cost it: redeemed, less what "
        "expired unspent went back (its discount coupons are already out of gross).",
    )
    net: Amount = Field(description="gross - refunds - commission - promotions.")
    payouts: Amount
    opening_balance: Amount
    closing_balance: Amount = Field(description="opening_balance + net - payouts.")
    transfers: int
    receivable: Amount = Field(
        default="0",
        description="Invoiced and not paid yet: what postpaid customers still owe on the "
        "provider's open invoices, now (gross counts charges, paid or not).",
    )
    overdue: Amount = Field(default="0", description="The part of receivable past due.")
    services: list[StatementServiceOut]

    @classmethod
    def of(cls, st: Statement) -> StatementOut:
        cur = st.currency
        return cls(
            provider=st.provider_id,
            period=st.period,
            currency=cur.code,
            gross=_money(st.gross, cur),
            commission=_money(st.commission, cur),
            refunds=_money(st.refunds, cur),
            promotions=_money(st.promotions, cur),
            net=_money(st.net, cur),
            payouts=_money(st.payouts, cur),
            opening_balance=_money(st.opening, cur),
            closing_balance=_money(st.closing, cur),
            transfers=st.transfers,
            receivable=_money(st.receivable, cur),
            overdue=_money(st.overdue, cur),
            services=[
                StatementServiceOut(
                    service=service or None,
                    gross=_money(g, cur),
                    refunds=_money(r, cur),
                    commission=_money(c, cur),
                    net=_money(g - r - c, cur),
                )
                for service, (g, r, c) in sorted(st.by_service.items())
            ],
        )


class StatementsOut(BaseModel):
    """The month's statements, one per currency in `data`; the first one's figures are
    repeated at the top level, as API.md shows them ("0" when the provider had none)."""

    object: Literal["statements"] = "statements"
    period: str
    provider: str | None = None
    currency: str | None = None
    gross: Amount
    commission: Amount
    refunds: Amount
    net: Amount
    payouts: Amount | None = None
    opening_balance: Amount | None = None
    closing_balance: Amount | None = None
    transfers: int | None = None
    services: list[StatementServiceOut] | None = None
    data: list[StatementOut]

    @classmethod
    def of(cls, period: str, statements: list[Statement]) -> StatementsOut:
        found = [StatementOut.of(st) for st in statements]
        if not found:
            return cls(period=period, gross="0", commission="0", refunds="0", net="0", data=[])
        head = found[0].model_dump(exclude={"object", "period"})
        return cls(period=period, data=found, **head)


class PayoutCreate(Request):
    provider: str = Field(max_length=64)
    amount: AmountIn
    currency: str | None = Field(default=None, pattern="^[A-Z]{3}$")
    reference: str | None = Field(default=None, max_length=255)


class PayoutOut(BaseModel):
    object: Literal["payout"] = "payout"
    id: str
    provider: str
    currency: str
    amount: Amount
    balance_after: Amount = Field(description="The provider's earnings left after it.")
    reference: str | None
    created_at: datetime

    @classmethod
    def of(cls, paid: Payout) -> PayoutOut:
        return cls(
            id=paid.id,
            provider=paid.provider_id,
            currency=paid.currency.code,
            amount=_money(paid.amount, paid.currency),
            balance_after=_money(paid.balance_after, paid.currency),
            reference=paid.reference,
            created_at=paid.created_at,
        )


class CommissionOut(BaseModel):
    provider: str | None
    currency: str
    gross: Amount
    refunds: Amount
    commission: Amount
    net: Amount
    receivable: Amount = Field(
        default="0",
        description="Invoiced and not paid yet, now: what the provider's postpaid customers "
        "still owe on open invoices.",
    )

    @classmethod
    def of(cls, row: CommissionRow) -> CommissionOut:
        return cls(
            provider=row.provider_id,
            currency=row.currency.code,
            gross=_money(row.gross, row.currency),
            refunds=_money(row.refunds, row.currency),
            commission=_money(row.commission, row.currency),
            net=_money(row.net, row.currency),
            receivable=_money(row.receivable, row.currency),
        )


class PromotionsOut(BaseModel):
    currency: str
    granted: Amount = Field(description="Credit granted and platform vouchers redeemed.")
    discounts: Amount = Field(description="What the platform's discount coupons took off.")
    returned: Amount = Field(description="What expired unspent, or came back with refunds.")
    cost: Amount = Field(description="granted + discounts - returned")

    @classmethod
    def of(cls, row: PromotionCost) -> PromotionsOut:
        cur = row.currency
        return cls(
            currency=cur.code,
            granted=_money(row.granted, cur),
            discounts=_money(row.discounts, cur),
            returned=_money(row.returned, cur),
            cost=_money(row.cost, cur),
        )


class CommissionReport(BaseModel):
    object: Literal["list"] = "list"
    period: str
    data: list[CommissionOut]
    promotions: list[PromotionsOut] = Field(
        default=[], description="What the platform's own promotions cost it in the month."
    )


class AgingOut(BaseModel):
    party: str = Field(description="A user id or a provider id (`platform`: its own).")
    currency: str
    invoices: int = Field(description="Open invoices with something due.")
    current: Amount = Field(description="Not yet due.")
    days_1_30: Amount
    days_31_60: Amount
    days_61_90: Amount
    days_over_90: Amount
    total: Amount

    @classmethod
    def of(cls, view: AgingView) -> AgingOut:
        cur = view.currency
        b = {k: format_money(v, cur) for k, v in view.buckets.items()}
        return cls(
            party=view.party,
            currency=cur.code,
            invoices=view.invoices,
            current=b["current"],
            days_1_30=b["1_30"],
            days_31_60=b["31_60"],
            days_61_90=b["61_90"],
            days_over_90=b["over_90"],
            total=format_money(view.total, cur),
        )


class AgingReport(BaseModel):
    object: Literal["list"] = "list"
    by: str
    as_of: datetime
    data: list[AgingOut]
