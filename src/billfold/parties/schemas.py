"""Request and response schemas of parties."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from billfold.core.directory import (
    BalanceView,
    BillingProfile,
    ProviderView,
    SellerDetails,
    UserView,
)
from billfold.core.schemas import Amount, AmountIn, Flag, ListOf, Moment, Request, Text200, Text500
from billfold.domain.money import format_decimal, format_money
from billfold.parties import MoneyMovement


class ProviderCreate(Request):
    name: Text200
    email: Annotated[str, Field(max_length=254)]
    commission_rate: AmountIn = Field(description='The platform\'s share, such as "0.20".')


class ProviderUpdate(Request):
    commission_rate: AmountIn


class UserCreate(Request):
    name: Text200
    email: Annotated[str, Field(max_length=254)]
    currency: Annotated[str, Field(max_length=3, description="ISO 4217, such as USD.")]
    billing_mode: Literal["prepaid", "postpaid"] = "prepaid"
    credit_limit: AmountIn = "0"
    external_id: Annotated[str | None, Field(max_length=255)] = None
    tax_rate: AmountIn | None = Field(
        default=None,
        description='The user\'s tax rate on invoices, such as "0.19"; default '
        "the platform's (BILLFOLD_TAX_RATE).",
    )


class CreditLimitUpdate(Request):
    credit_limit: AmountIn


class BillingProfileUpdate(Request):
    """The fields to change; a field left out stays, one set to "" or null is removed."""

    autopay_invoices: Flag | None = Field(
        default=None,
        description="Postpaid: money arriving in the wallet pays open invoices at once.",
    )
    name: str | None = Field(default=None, max_length=200, description="Billing name.")
    company: str | None = Field(default=None, max_length=200)
    address: str | None = Field(default=None, max_length=500, description="Lines by \\n.")
    tax_number: str | None = Field(default=None, max_length=64, description="VAT or tax id.")
    email: str | None = Field(default=None, max_length=254, description="Where invoices go.")
    fapiao_title: str | None = Field(default=None, max_length=200, description="发票抬头.")
    fapiao_tax_number: str | None = Field(
        default=None, max_length=20, description="纳税人识别号 for a fapiao."
    )


class BillingProfileOut(BaseModel):
    object: Literal["billing_profile"] = "billing_profile"
    user: str
    autopay_invoices: bool
    name: str | None = None
    company: str | None = None
    address: str | None = None
    tax_number: str | None = None
    email: str | None = None
    fapiao_title: str | None = None
    fapiao_tax_number: str | None = None

    @classmethod
    def of(cls, view: BillingProfile) -> BillingProfileOut:
        return cls(user=view.user_id, autopay_invoices=view.autopay_invoices, **view.details)


class SellerDetailsUpdate(Request):
    """The fields to change; a field left out stays, one set to "" or null is removed."""

    merchant_of_record: Flag | None = Field(
        default=None,
        description="Invoices of the provider's services name it as the seller, the "
        "platform as who bills on its behalf.",
    )
    legal_name: str | None = Field(default=None, max_length=200)
    address: str | None = Field(default=None, max_length=500, description="Lines by \\n.")
    tax_number: str | None = Field(default=None, max_length=64)
    contact: str | None = Field(default=None, max_length=200)


class SellerDetailsOut(BaseModel):
    object: Literal["seller_details"] = "seller_details"
    provider: str
    merchant_of_record: bool
    legal_name: str | None = None
    address: str | None = None
    tax_number: str | None = None
    contact: str | None = None

    @classmethod
    def of(cls, view: SellerDetails) -> SellerDetailsOut:
        return cls(
            provider=view.provider_id, merchant_of_record=view.merchant_of_record, **view.details
        )


class TopUpCreate(Request):
    amount: AmountIn
    reference: Annotated[str | None, Field(max_length=255)] = None


class ChargeCreate(Request):
    user: Annotated[str, Field(max_length=255, description="User id or external_id.")]
    amount: AmountIn
    description: Text500
    provider_id: Annotated[str | None, Field(max_length=40)] = None
    service: Annotated[str | None, Field(max_length=100)] = None


class RefundCreate(Request):
    amount: AmountIn | None = Field(default=None, description="Default: all that is left.")
    reason: Annotated[str | None, Field(max_length=500)] = None


class ProviderOut(BaseModel):
    object: Literal["provider"] = "provider"
    id: str
    name: str
    email: str
    commission_rate: str
    status: str
    created_at: datetime

    @classmethod
    def of(cls, view: ProviderView) -> ProviderOut:
        return cls(
            id=view.id,
            name=view.name,
            email=view.email,
            commission_rate=format_decimal(view.commission_rate),
            status=view.status,
            created_at=view.created_at,
        )


class BalanceOut(BaseModel):
    object: Literal["balance"] = "balance"
    currency: str
    posted: Amount
    held: Amount
    available: Amount = Field(
        description="cash - held + credit_limit + vouchers + credits (posted is the cash)"
    )
    credit_limit: Amount
    receivable: Amount = Field(description="What the user owes: postpaid usage and debts.")
    cash: Amount = Field(description="The money paid in: the only part paid out or withdrawn.")
    vouchers: Amount = Field(description="Redeemed vouchers not spent yet.")
    credits: Amount = Field(description="Promotional credit not spent yet.")
    as_of: Moment | None = None

    @classmethod
    def of(cls, view: BalanceView) -> BalanceOut:
        cur = view.currency
        return cls(
            currency=cur.code,
            posted=format_money(view.posted, cur),
            held=format_money(view.held, cur),
            available=format_money(view.available, cur),
            credit_limit=format_money(view.credit_limit, cur),
            receivable=format_money(view.receivable, cur),
            cash=format_money(view.cash, cur),
            vouchers=format_money(view.vouchers, cur),
            credits=format_money(view.credits, cur),
            as_of=view.as_of,
        )


class UserOut(BaseModel):
    object: Literal["user"] = "user"
    id: str
    name: str
    email: str
    currency: str
    billing_mode: str
    credit_limit: Amount
    external_id: str | None
    status: str
    created_at: datetime
    balance: BalanceOut | None

    @classmethod
    def of(cls, view: UserView) -> UserOut:
        return cls(
            id=view.id,
            name=view.name,
            email=view.email,
            currency=view.currency.code,
            billing_mode=str(view.billing_mode),
            credit_limit=format_money(view.credit_limit, view.currency),
            external_id=view.external_id,
            status=view.status,
            created_at=view.created_at,
            balance=BalanceOut.of(view.balance) if view.balance else None,
        )


class TransactionOut(BaseModel):
    """One movement of a party's money: a top-up, charge, refund, payment ..."""

    object: Literal["transaction"] = "transaction"
    id: str
    kind: str
    created_at: datetime
    currency: str
    amount: Amount = Field(description="Signed: what this added to the account (charges < 0).")
    account: str
    balance_after: Amount | None = Field(
        description="The account's balance after it; null in a provider's answer."
    )
    description: str | None
    user: str | None
    provider_id: str | None
    service: str | None
    metric: str | None
    quantity: str | None
    reference: str | None
    reverses: str | None
    provider_amount: Amount | None = None
    commission: Amount | None = None

    @classmethod
    def of(cls, movement: MoneyMovement) -> TransactionOut:
        t, cur = movement.transfer, movement.currency
        return cls(
            id=t.id,
            kind=t.kind,
            created_at=t.posted_at,
            currency=cur.code,
            amount=format_money(movement.amount, cur),
            account=movement.account,
            balance_after=None
            if movement.balance_after is None
            else format_money(movement.balance_after, cur),
            description=t.description,
            user=t.user_id,
            provider_id=t.provider_id,
            service=t.service,
            metric=t.metric,
            quantity=t.quantity,
            reference=t.reference,
            reverses=t.reverses,
            provider_amount=None
            if movement.provider_amount is None
            else format_money(movement.provider_amount, cur),
            commission=None
            if movement.commission is None
            else format_money(movement.commission, cur),
        )


ProviderList = ListOf[ProviderOut]


UserList = ListOf[UserOut]


TransactionList = ListOf[TransactionOut]
