"""Response schemas of analytics: series, subscription metrics, top lists, simulations."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from billfold.analytics.service import Series, SubscriptionMetrics
from billfold.analytics.simulator import Simulation
from billfold.core.schemas import MONTH, Amount, Request
from billfold.domain.money import currency, format_decimal, format_money, from_units


def _money(units: int, code: str) -> str:
    cur = currency(code)
    return format_money(from_units(units, cur), cur)


class UsagePointOut(BaseModel):
    start: datetime
    quantity: str = Field(description="The sum of the events' values in the window.")
    events: int
    amount: Amount = Field(description="What the usage was charged.")


class RevenuePointOut(BaseModel):
    start: datetime
    gross: Amount
    refunds: Amount
    commission: Amount
    net: Amount = Field(description="gross - refunds - commission: the provider's part.")
    transfers: int


class UsageSeriesOut(BaseModel):
    group: dict[str, str | None]
    currency: str
    points: list[UsagePointOut]


class RevenueSeriesOut(BaseModel):
    group: dict[str, str | None]
    currency: str
    points: list[RevenuePointOut]


class UsageSeriesList(BaseModel):
    object: Literal["series"] = "series"
    window: str
    tz: str
    data: list[UsageSeriesOut]

    @classmethod
    def of(cls, window: str, tz: str | None, series: list[Series]) -> UsageSeriesList:
        return cls(
            window=window,
            tz=tz or "UTC",
            data=[
                UsageSeriesOut(
                    group=s.group,
                    currency=s.currency,
                    points=[
                        UsagePointOut(
                            start=p.start,
                            quantity=format_decimal(p.quantity),
                            events=p.events,
                            amount=_money(p.amount, s.currency),
                        )
                        for p in s.points
                    ],
                )
                for s in series
            ],
        )


class RevenueSeriesList(BaseModel):
    object: Literal["series"] = "series"
    window: str
    tz: str
    data: list[RevenueSeriesOut]

    @classmethod
    def of(cls, window: str, tz: str | None, series: list[Series]) -> RevenueSeriesList:
        return cls(
            window=window,
            tz=tz or "UTC",
            data=[
                RevenueSeriesOut(
                    group=s.group,
                    currency=s.currency,
                    points=[
                        RevenuePointOut(
                            start=p.start,
                            gross=_money(p.revenue.gross, s.currency),
                            refunds=_money(p.revenue.refunds, s.currency),
                            commission=_money(p.revenue.commission, s.currency),
                            net=_money(p.revenue.net, s.currency),
                            transfers=p.revenue.transfers,
                        )
                        for p in s.points
                    ],
                )
                for s in series
            ],
        )


class SubscriptionMetricsOut(BaseModel):
    currency: str
    active: int
    trialing: int
    mrr: Amount = Field(description="Monthly recurring revenue, in the currency's minor unit.")
    arr: Amount
    active_at_start: int
    churned: int
    churn_rate: str | None
    paying_users: int
    arpu: Amount

    @classmethod
    def of(cls, m: SubscriptionMetrics) -> SubscriptionMetricsOut:
        cur = currency(m.currency)
        return cls(
            currency=m.currency,
            active=m.active,
            trialing=m.trialing,
            mrr=format_money(m.mrr, cur),
            arr=format_money(m.arr, cur),
            active_at_start=m.active_at_start,
            churned=m.churned,
            churn_rate=None if m.churn_rate is None else format_decimal(m.churn_rate),
            paying_users=m.paying_users,
            arpu=format_money(m.arpu, cur),
        )


class SubscriptionMetricsList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SubscriptionMetricsOut]


class TopOut(BaseModel):
    user: str | None = Field(default=None, description="With by=user.")
    service: str | None = Field(default=None, description="With by=service.")
    currency: str
    amount: Amount
    quantity: str


class TopList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TopOut]

    @classmethod
    def of(cls, by: str, rows: list[tuple[str, str, int, Any]]) -> TopList:
        return cls(
            data=[
                TopOut(
                    **{by: name},
                    currency=code,
                    amount=_money(units, code),
                    quantity=format_decimal(quantity),
                )
                for name, code, units, quantity in rows
            ]
        )


class SimulateRequest(Request):
    plan: dict[str, Any] = Field(description="The draft PLAN.")
    period: str = Field(pattern=MONTH, description="The month to re-price, YYYY-MM.")


class SimulatedUserOut(BaseModel):
    user: str
    current: str
    draft: str
    difference: str


class SimulationOut(BaseModel):
    """Exact prices, not rounded, like a quote's."""

    object: Literal["simulation"] = "simulation"
    plan: str
    period: str
    currency: str
    current: str
    draft: str
    difference: str
    users: list[SimulatedUserOut]

    @classmethod
    def of(cls, sim: Simulation) -> SimulationOut:
        return cls(
            plan=sim.plan,
            period=sim.period,
            currency=sim.currency.code,
            current=format_decimal(sim.current),
            draft=format_decimal(sim.draft),
            difference=format_decimal(sim.draft - sim.current),
            users=[
                SimulatedUserOut(
                    user=u.user_id,
                    current=format_decimal(u.current),
                    draft=format_decimal(u.draft),
                    difference=format_decimal(u.difference),
                )
                for u in sim.users
            ],
        )
