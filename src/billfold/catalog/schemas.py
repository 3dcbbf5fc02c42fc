"""Request and response schemas of catalog."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from billfold.catalog import MetricView, PlanView, ServiceView, VersionView
from billfold.core.schemas import ListOf, Moment, Request, Text200
from billfold.domain.pricing import Quote


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
    effective_from: Moment | None = Field(default=None, description="Default: now.")


class QuoteCreate(Request):
    plan: dict[str, Any] | Annotated[str, Field(max_length=64)] = Field(
        description="A PLAN, or the code of a plan in the catalog."
    )
    usage: dict[str, Any] = Field(default_factory=dict)
    at: Moment | None = Field(
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


class QuoteLineOut(BaseModel):
    kind: str = Field(description="fixed_fee, usage or minimum.")
    metric: str | None
    model: str | None
    quantity: str
    amount: str = Field(description="Exact, not rounded.")
    details: list[dict[str, Any]] = Field(description="How the amount came about.")


class QuoteOut(BaseModel):
    """The price of some usage under a plan; amounts are exact and not rounded."""

    currency: str
    total: str = Field(description="The exact sum of the lines.")
    lines: list[QuoteLineOut]
    ignored_metrics: list[str] = Field(description="Metrics in the usage the plan does not price.")

    @classmethod
    def of(cls, quote: Quote) -> QuoteOut:
        # The quote's own form (also what `billfold quote` prints), checked by this schema.
        return cls.model_validate(quote.to_dict())
