"""Request and response schemas of prepaid products."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from billfold.core.schemas import Amount, AmountIn, ListOf, Moment, Request, Text200
from billfold.domain.money import Currency, format_decimal, format_money
from billfold.prepaid import CouponView, GrantView, HoldingView, PackageView

Code = Annotated[str, Field(max_length=64)]


class PackageCreate(Request):
    code: Code
    name: Text200
    service: Annotated[str, Field(max_length=64)]
    currency: Annotated[str, Field(max_length=3)]
    price: AmountIn
    quantities: dict[str, AmountIn] = Field(
        description='Prepaid quantity per metric code, such as {"api_calls": "100000"}.'
    )
    validity_days: int = Field(description="How long it lasts from its purchase (1-3660).")
    reset: Literal["none", "day", "month"] = "none"
    provider_id: Annotated[str | None, Field(max_length=40)] = None


class PackageOut(BaseModel):
    object: Literal["package"] = "package"
    id: str
    code: str
    name: str
    provider_id: str
    service: str
    currency: str
    price: Amount
    quantities: dict[str, str]
    validity_days: int
    reset: str
    status: str
    created_at: datetime

    @classmethod
    def of(cls, view: PackageView) -> PackageOut:
        return cls(
            id=view.id,
            code=view.code,
            name=view.name,
            provider_id=view.provider_id,
            service=view.service,
            currency=view.currency.code,
            price=format_money(view.price, view.currency),
            quantities={m: format_decimal(q) for m, q in view.quantities.items()},
            validity_days=view.validity_days,
            reset=view.reset,
            status=view.status,
            created_at=view.created_at,
        )


PackageList = ListOf[PackageOut]


class PackagePurchase(Request):
    package: Annotated[str, Field(max_length=64, description="The package's id (or its code).")]


class HoldingOut(BaseModel):
    object: Literal["package_holding"] = "package_holding"
    id: str
    user_id: str
    package: str
    package_code: str
    name: str
    service: str
    currency: str
    price: Amount
    reset: str
    starts_at: datetime
    expires_at: datetime
    status: str = Field(description="active, expired or refunded")
    transfer_id: str = Field(description="The sale's charge (refund it to end the package).")
    quantities: dict[str, str]
    used: dict[str, str] = Field(description="Used in the current cycle.")
    remaining: dict[str, str] = Field(description="Left in the current cycle.")
    cycle_start: datetime
    cycle_end: datetime = Field(description="The next reset, or the expiry.")

    @classmethod
    def of(cls, view: HoldingView) -> HoldingOut:
        return cls(
            id=view.id,
            user_id=view.user_id,
            package=view.package_id,
            package_code=view.package_code,
            name=view.name,
            service=view.service,
            currency=view.currency.code,
            price=format_money(view.price, view.currency),
            reset=view.reset,
            starts_at=view.starts_at,
            expires_at=view.expires_at,
            status=view.status,
            transfer_id=view.transfer_id,
            quantities={m: format_decimal(q) for m, q in view.quantities.items()},
            used={m: format_decimal(q) for m, q in view.used.items()},
            remaining={m: format_decimal(q) for m, q in view.remaining.items()},
            cycle_start=view.cycle_start,
            cycle_end=view.cycle_end,
        )


class HoldingList(BaseModel):
    data: list[HoldingOut]
    has_more: bool = False


class CouponCreate(Request):
    code: Code
    kind: Literal["amount", "percent"]
    currency: Annotated[str, Field(max_length=3)]
    amount: AmountIn | None = Field(default=None, description="A voucher's sum.")
    percent: AmountIn | None = Field(default=None, description='"15" takes 15% off.')
    max_discount: AmountIn | None = None
    min_spend: AmountIn | None = None
    services: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        description="Service codes it is limited to; default all (a provider's: its own).",
    )
    expires_at: Moment | None = None
    max_redemptions: int | None = None
    provider_id: Annotated[str | None, Field(max_length=40)] = None


def _money(cur: Currency, amount: Decimal | None) -> str | None:
    return None if amount is None else format_money(amount, cur)


class CouponOut(BaseModel):
    object: Literal["coupon"] = "coupon"
    id: str
    code: str
    provider_id: str | None = Field(description="None: the platform's, funded by the platform.")
    kind: str
    currency: str
    amount: Amount | None
    percent: str | None
    max_discount: Amount | None
    min_spend: Amount | None
    services: list[str] | None
    expires_at: datetime | None
    max_redemptions: int | None
    redeemed: int
    created_at: datetime

    @classmethod
    def of(cls, view: CouponView) -> CouponOut:
        cur = view.currency
        return cls(
            id=view.id,
            code=view.code,
            provider_id=view.provider_id,
            kind=view.kind,
            currency=cur.code,
            amount=_money(cur, view.amount),
            percent=None if view.percent is None else format_decimal(view.percent),
            max_discount=_money(cur, view.max_discount),
            min_spend=_money(cur, view.min_spend),
            services=view.services,
            expires_at=view.expires_at,
            max_redemptions=view.max_redemptions,
            redeemed=view.redeemed,
            created_at=view.created_at,
        )


CouponList = ListOf[CouponOut]


class Redemption(Request):
    code: Code


class CreditGrant(Request):
    amount: AmountIn
    expires_at: Moment | None = None
    reason: Annotated[str, Field(max_length=500)]


class GrantOut(BaseModel):
    object: Literal["grant"] = "grant"
    id: str
    user_id: str
    kind: str = Field(description="voucher, credit or discount (a coupon waiting to apply)")
    currency: str
    amount: Amount
    remaining: Amount | None = Field(description="What a voucher or credit has left.")
    coupon_code: str | None
    percent: str | None
    funded_by: str = Field(description='"platform" or the provider\'s id')
    services: list[str] | None
    expires_at: datetime | None
    status: str = Field(description="active, used or expired")
    reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, view: GrantView) -> GrantOut:
        cur = view.currency
        return cls(
            id=view.id,
            user_id=view.user_id,
            kind=view.kind,
            currency=cur.code,
            amount=format_money(view.amount, cur),
            remaining=None if view.remaining is None else format_money(view.remaining, cur),
            coupon_code=view.coupon_code,
            percent=None if view.percent is None else format_decimal(view.percent),
            funded_by=view.funder,
            services=view.services,
            expires_at=view.expires_at,
            status=view.status,
            reason=view.reason,
            created_at=view.created_at,
        )


class GrantList(BaseModel):
    data: list[GrantOut]
    has_more: bool = False
