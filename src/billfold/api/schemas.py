"""Request and response bodies. Amounts travel as decimal strings, never floats."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from billfold.domain.money import format_amount, format_decimal
from billfold.services.catalog import MetricView, PlanView, ServiceView, VersionView
from billfold.services.limits import Authorization, Entitlements
from billfold.services.metering import IngestResult
from billfold.services.parties import BalanceView, MoneyMovement, ProviderView, UserView
from billfold.services.verify import Report

T = TypeVar("T")

# Amounts are accepted as a decimal string or a JSON number (parsed exactly); the service
# layer validates them with billfold.domain.money.parse_amount and names the field.
AmountIn = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}, {"type": "number"}],
            "examples": ["12.50"],
        }
    ),
]
Amount = Annotated[str, Field(examples=["12.50"], description="An exact decimal amount.")]
Text200 = Annotated[str, Field(max_length=200)]
Text500 = Annotated[str, Field(max_length=500)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListOf(BaseModel, Generic[T]):
    """A page of a list (API.md: {"data": [...], "has_more": bool})."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool


# --- requests -------------------------------------------------------------------------


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


class ApiKeyCreate(Request):
    role: Literal["admin", "provider", "user"]
    provider_id: Annotated[str | None, Field(max_length=40)] = None
    user_id: Annotated[str | None, Field(max_length=40)] = None
    name: Annotated[str | None, Field(max_length=200)] = None


# --- responses ------------------------------------------------------------------------


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
    available: Amount = Field(description="posted - held + credit_limit")
    credit_limit: Amount
    receivable: Amount = Field(description="What the user owes: postpaid usage and debts.")
    as_of: datetime | None = None

    @classmethod
    def of(cls, view: BalanceView) -> BalanceOut:
        cur = view.currency
        return cls(
            currency=cur.code,
            posted=format_amount(view.posted, cur),
            held=format_amount(view.held, cur),
            available=format_amount(view.available, cur),
            credit_limit=format_amount(view.credit_limit, cur),
            receivable=format_amount(view.receivable, cur),
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
            credit_limit=format_amount(view.credit_limit, view.currency),
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
    balance_after: Amount
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
            amount=format_amount(movement.amount, cur),
            account=movement.account,
            balance_after=format_amount(movement.balance_after, cur),
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
            else format_amount(movement.provider_amount, cur),
            commission=None
            if movement.commission is None
            else format_amount(movement.commission, cur),
        )


ProviderList = ListOf[ProviderOut]


UserList = ListOf[UserOut]


TransactionList = ListOf[TransactionOut]


class ApiKeyOut(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    role: str
    provider_id: str | None
    user_id: str | None
    name: str | None
    created_at: datetime
    secret: str | None = Field(default=None, description="Shown only when the key is created.")


class CheckOut(BaseModel):
    name: str
    description: str
    ok: bool
    problem_count: int
    problems: list[str]


class VerifyOut(BaseModel):
    object: Literal["ledger_verification"] = "ledger_verification"
    ok: bool
    transfers: int
    postings: int
    accounts: int
    checks: list[CheckOut]

    @classmethod
    def of(cls, report: Report) -> VerifyOut:
        return cls(
            ok=report.ok,
            transfers=report.transfers,
            postings=report.postings,
            accounts=report.accounts,
            checks=[
                CheckOut(
                    name=c.name,
                    description=c.description,
                    ok=c.ok,
                    problem_count=c.problem_count,
                    problems=c.problems,
                )
                for c in report.checks
            ],
        )


# --- catalog --------------------------------------------------------------------------


class ServiceCreate(Request):
    code: Annotated[str, Field(max_length=64)]
    name: Text200
    description: Annotated[str | None, Field(max_length=2000)] = None
    provider_id: Annotated[str | None, Field(max_length=40)] = None


class MetricCreate(Request):
    code: Annotated[str, Field(max_length=64)]
    name: Text200
    aggregation: Literal["count", "sum", "max", "unique_count", "latest"]
    field: Annotated[str | None, Field(max_length=100)] = None


class PlanVersionCreate(Request):
    plan: dict[str, Any] = Field(description="The new PLAN; code, service and currency stay.")
    effective_from: datetime | None = Field(default=None, description="Default: now.")


class QuoteCreate(Request):
    plan: dict[str, Any] | Annotated[str, Field(max_length=64)] = Field(
        description="A PLAN, or the code of a plan in the catalog."
    )
    usage: dict[str, Any] = Field(default_factory=dict)
    at: datetime | None = Field(
        default=None,
        description="For a plan code: the version in force at this time (default now).",
    )


class ServiceOut(BaseModel):
    object: Literal["service"] = "service"
    id: str
    code: str
    provider_id: str
    name: str
    description: str | None
    status: str
    created_at: datetime

    @classmethod
    def of(cls, view: ServiceView) -> ServiceOut:
        return cls(
            id=view.id,
            code=view.code,
            provider_id=view.provider_id,
            name=view.name,
            description=view.description,
            status=view.status,
            created_at=view.created_at,
        )


ServiceList = ListOf[ServiceOut]


class MetricOut(BaseModel):
    object: Literal["metric"] = "metric"
    id: str
    service: str
    code: str
    name: str
    aggregation: str
    field: str | None
    created_at: datetime

    @classmethod
    def of(cls, view: MetricView) -> MetricOut:
        return cls(
            id=view.id,
            service=view.service,
            code=view.code,
            name=view.name,
            aggregation=view.aggregation,
            field=view.field,
            created_at=view.created_at,
        )


MetricList = ListOf[MetricOut]


class PlanVersionOut(BaseModel):
    object: Literal["plan_version"] = "plan_version"
    version: int
    effective_from: datetime
    created_at: datetime
    plan: dict[str, Any]

    @classmethod
    def of(cls, view: VersionView) -> PlanVersionOut:
        return cls(
            version=view.version,
            effective_from=view.effective_from,
            created_at=view.created_at,
            plan=view.plan.to_dict(),
        )


PlanVersionList = ListOf[PlanVersionOut]


class PlanOut(BaseModel):
    """A plan: its PLAN fields as in force (at the time asked for), plus catalog state."""

    model_config = ConfigDict(extra="allow")
    object: Literal["plan"] = "plan"
    id: str
    code: str
    status: str
    provider_id: str
    version: int
    versions: int
    effective_from: datetime
    created_at: datetime
    retired_at: datetime | None

    @classmethod
    def of(cls, view: PlanView) -> PlanOut:
        return cls(
            **{
                **view.current.plan.to_dict(),
                "id": view.id,
                "code": view.code,
                "status": view.status,
                "provider_id": view.provider_id,
                "version": view.current.version,
                "versions": view.versions,
                "effective_from": view.current.effective_from,
                "created_at": view.created_at,
                "retired_at": view.retired_at,
            }
        )


PlanList = ListOf[PlanOut]


# --- usage and limits -----------------------------------------------------------------


class RejectionOut(BaseModel):
    index: int
    error: dict[str, str | None]


class IngestOut(BaseModel):
    object: Literal["ingestion"] = "ingestion"
    accepted: int
    duplicates: int
    rejected: list[RejectionOut]
    charges: list[str]

    @classmethod
    def of(cls, result: IngestResult) -> IngestOut:
        return cls(
            accepted=result.accepted,
            duplicates=result.duplicates,
            charges=result.charges,
            rejected=[
                RejectionOut(
                    index=r.index,
                    error={
                        "type": "not_found" if r.code.endswith("_not_found") else "invalid_request",
                        "code": r.code,
                        "message": r.message,
                        "param": r.param,
                    },
                )
                for r in result.rejected
            ],
        )


class AuthorizationCreate(Request):
    user: Annotated[str, Field(max_length=255)]
    service: Annotated[str | None, Field(max_length=64)] = None
    metric: Annotated[str | None, Field(max_length=64)] = None
    quantity: AmountIn | None = None
    amount: AmountIn | None = None
    expires_in: int | None = Field(default=None, description="Seconds until the hold lapses.")


class AuthorizationCapture(Request):
    quantity: AmountIn | None = None
    amount: AmountIn | None = None


class AuthorizationOut(BaseModel):
    object: Literal["authorization"] = "authorization"
    id: str
    status: str
    reason: str | None
    currency: str
    amount: Amount
    captured: Amount
    expires_at: datetime | None
    user: str
    service: str | None
    metric: str | None
    quantity: str | None

    @classmethod
    def of(cls, auth: Authorization) -> AuthorizationOut:
        cur = auth.currency
        return cls(
            id=auth.id,
            status=auth.status,
            reason=auth.reason,
            currency=cur.code,
            amount=format_amount(auth.amount, cur),
            captured=format_amount(auth.captured, cur),
            expires_at=auth.expires_at,
            user=auth.user_id,
            service=auth.service,
            metric=auth.metric,
            quantity=None if auth.quantity is None else format_decimal(auth.quantity),
        )


class EntitlementsOut(BaseModel):
    object: Literal["entitlements"] = "entitlements"
    user: str
    service: str
    has_access: bool
    reason: str
    currency: str
    available: Amount
    debt: Amount
    remaining: dict[str, str]

    @classmethod
    def of(cls, value: Entitlements) -> EntitlementsOut:
        cur = value.currency
        return cls(
            user=value.user_id,
            service=value.service,
            has_access=value.has_access,
            reason=value.reason,
            currency=cur.code,
            available=format_amount(value.available, cur),
            debt=format_amount(value.debt, cur),
            remaining={k: format_decimal(v) for k, v in value.remaining.items()},
        )


class DefaultPlanSet(Request):
    plan: Annotated[str | None, Field(max_length=64)]
