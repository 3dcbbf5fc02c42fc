"""A provider's pages: home (revenue, MRR, top customers), services and metrics, the
plan editor with a live quote preview, customers, statements, the event debugger."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from billfold.analytics import router as analytics_api
from billfold.catalog import create_plan as make_plan
from billfold.catalog import quote_for
from billfold.catalog import router as catalog_api
from billfold.catalog.schemas import MetricCreate, ServiceCreate
from billfold.core.access import Role
from billfold.domain.errors import BillfoldError, InvalidRequest
from billfold.metering import records
from billfold.parties import router as parties_api
from billfold.settlement import router as settlement_api
from billfold.subscriptions import router as subscriptions_api
from billfold.web.console import (
    Viewer,
    form_of,
    handle_form,
    person,
    redirect,
    render,
    say,
    unit,
)
from billfold.web.user import metric_names
from billfold.web.words import describe_plan, usage_chart

router = APIRouter(prefix="/provider", include_in_schema=False)

# What the plan editor starts from: one example of every charge model.
EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    "graduated": {
        "metric": "calls",
        "model": "graduated",
        "tiers": [
            {"up_to": 1000, "unit_price": "0"},
            {"up_to": 10000, "unit_price": "0.002"},
            {"up_to": None, "unit_price": "0.001"},
        ],
    },
    "volume": {
        "metric": "calls",
        "model": "volume",
        "tiers": [{"up_to": 10000, "unit_price": "0.002"}, {"up_to": None, "unit_price": "0.0015"}],
    },
    "per_unit": {
        "metric": "calls",
        "model": "per_unit",
        "unit_price": "0.01",
        "free_units": "1000",
    },
    "package": {
        "metric": "calls",
        "model": "package",
        "package_size": "1000",
        "package_price": "1.5",
        "rounding": "up",
        "free_units": "0",
    },
    "percentage": {
        "metric": "calls",
        "model": "percentage",
        "rate": "0.029",
        "fixed_fee_per_event": "0.3",
    },
    "time_of_day": {
        "metric": "calls",
        "model": "time_of_day",
        "timezone": "Asia/Shanghai",
        "windows": [
            {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "from": "09:00",
                "to": "18:00",
                "unit_price": "0.05",
            }
        ],
        "default_unit_price": "0.03",
    },
}


def _month(now: datetime) -> tuple[datetime, datetime, str]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end, start.strftime("%Y-%m")


def _provider(request: Request) -> Viewer:
    return person(request, Role.PROVIDER)


def provider_home(request: Request, seen: Viewer) -> Response:
    who = seen.who
    assert who.provider_id is not None
    with unit(request) as work:
        now = work.clock.now()
        me = parties_api.get_provider(who.provider_id, work=work, who=who)
        if me.status != "active":
            return render(request, seen, "console/provider_pending.html", me=me)
        start, end, period = _month(now)
        day_end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        day_start = day_end - timedelta(days=30)
        revenue = analytics_api.revenue_series(
            start=day_start,
            to=day_end,
            window="day",
            tz=None,
            group_by="service",
            provider=None,
            service=None,
            work=work,
            who=who,
        )
        metrics = analytics_api.subscription_metrics(start=start, to=end, work=work, who=who).data
        top = analytics_api.top(
            start=day_start, to=day_end, by="user", limit=10, work=work, who=who
        ).data
        statements = settlement_api.statements(
            provider_id=who.provider_id, period=period, work=work, who=who
        )
    labels, series = usage_chart(revenue, day_start, 30, "gross", seen.t("Subscription fees"))
    return render(
        request,
        seen,
        "console/provider_home.html",
        me=me,
        labels=labels,
        series=series,
        metrics=metrics,
        top=top,
        statement=statements,
        period=period,
    )


@router.get("/services")
def services_page(request: Request) -> Response:
    seen = _provider(request)
    who = seen.who
    with unit(request) as work:
        found = catalog_api.list_services(limit=100, starting_after=None, work=work, who=who).data
        metrics = {s.code: catalog_api.list_metrics(s.code, work=work, who=who).data for s in found}
    return render(request, seen, "console/provider_services.html", services=found, metrics=metrics)


@router.post("/services")
async def create_service(request: Request) -> Response:
    seen = _provider(request)
    fields = await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str:
        body = ServiceCreate(
            code=fields.get("code", ""),
            name=fields.get("name", ""),
            description=fields.get("description") or None,
        )
        catalog_api.create_service(body, work=work, who=who)
        return seen.t("The service is created.")

    return await run_in_threadpool(_guarded, request, seen, "/provider/services", act)


@router.post("/services/{code}/metrics")
async def create_metric(request: Request, code: str) -> Response:
    seen = _provider(request)
    fields = await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str:
        body = MetricCreate.model_validate(
            {
                "code": fields.get("code", ""),
                "name": fields.get("name", ""),
                "aggregation": fields.get("aggregation", "count"),
                "field": fields.get("field") or None,
            }
        )
        catalog_api.create_metric(code, body, work=work, who=who)
        return seen.t("The metric is created.")

    return await run_in_threadpool(_guarded, request, seen, "/provider/services", act)


def _guarded(request: Request, seen: Viewer, back: str, act: Any) -> Response:
    """`handle_form`, with a malformed field (refused by the API's own schema) told too."""
    from pydantic import ValidationError

    from billfold.web.console import redirect

    try:
        return handle_form(request, seen, back, act)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return redirect(
            back,
            "!"
            + seen.t("Check the field %(field)s: %(problem)s")
            % {"field": where, "problem": first.get("msg", "")},
        )


@router.get("/plans")
def plans_page(request: Request) -> Response:
    seen = _provider(request)
    who = seen.who
    with unit(request) as work:
        found = catalog_api.list_plans(
            limit=500, starting_after=None, service=None, status=None, work=work, who=who
        ).data
        services = catalog_api.list_services(
            limit=100, starting_after=None, work=work, who=who
        ).data
        names = metric_names(work, who, [s.code for s in services])
    words = {
        p.code: describe_plan(
            p.model_dump(mode="json"), seen, names.get(str((p.model_extra or {}).get("service")))
        )
        for p in found
    }
    draft = {
        "code": "",
        "name": "",
        "service": services[0].code if services else "",
        "currency": "USD",
        "interval": "month",
        "fixed_fee": "0",
        "charges": [EXAMPLES["graduated"]],
    }
    return render(
        request,
        seen,
        "console/provider_plans.html",
        plans=found,
        words=words,
        draft=json.dumps(draft, indent=2),
        examples=EXAMPLES,
        examples_json={k: json.dumps(v) for k, v in EXAMPLES.items()},
        model_words={
            "graduated": seen.t("Graduated"),
            "volume": seen.t("Volume"),
            "per_unit": seen.t("Per unit"),
            "package": seen.t("Package"),
            "percentage": seen.t("Percentage"),
            "time_of_day": seen.t("Time of day"),
            "graduated_percentage": seen.t("Graduated percentage"),
        },
    )


def _draft(fields: dict[str, str]) -> dict[str, Any]:
    try:
        plan = json.loads(fields.get("definition") or "{}")
    except json.JSONDecodeError as error:
        raise InvalidRequest(
            f"the plan is not valid JSON: {error.msg} at line {error.lineno}", param="definition"
        ) from None
    if not isinstance(plan, dict):
        raise InvalidRequest("the plan is a JSON object", param="definition")
    return plan


@router.post("/plans/preview")
async def preview(request: Request) -> Response:
    """The live quote of the draft: what the given usage would cost under it."""
    seen = _provider(request)
    fields = await form_of(request, seen)
    who = seen.who

    def quote() -> Response:
        try:
            plan = _draft(fields)
            charges = plan.get("charges") or [{}]
            metric = str(charges[0].get("metric", "calls")) if isinstance(charges[0], dict) else ""
            usage = {"quantities": {metric: fields.get("quantity") or "0"}}
            draft = {
                **plan,
                "code": plan.get("code") or "draft",
                "name": plan.get("name") or "Draft",
            }
            with unit(request) as work:
                priced = quote_for(work, who, draft, usage)
                names = metric_names(work, who, [str(plan.get("service") or "")])
        except BillfoldError as error:
            return render(request, seen, "console/quote.html", error=say(seen, error))
        return render(
            request,
            seen,
            "console/quote.html",
            words=describe_plan(
                {"fixed_fee": "0", **draft, "currency": priced.currency.code},
                seen,
                names.get(str(plan.get("service") or "")),
            ),
            quote=priced,
            metric=names.get(str(plan.get("service") or ""), {}).get(metric, metric),
            quantity=fields.get("quantity") or "0",
        )

    return await run_in_threadpool(quote)


@router.post("/plans")
async def create_plan(request: Request) -> Response:
    seen = _provider(request)
    fields = await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str:
        made = make_plan(work, who, _draft(fields))
        return seen.t("Plan %(code)s is created.") % {"code": made.code}

    return await run_in_threadpool(_guarded, request, seen, "/provider/plans", act)


@router.get("/plans/{code}")
def plan_page(request: Request, code: str) -> Response:
    return _plan_page(request, _provider(request), code)


def _plan_page(
    request: Request,
    seen: Viewer,
    code: str,
    simulation: Any = None,
    draft: str | None = None,
    period: str | None = None,
    error: str | None = None,
) -> Response:
    who = seen.who
    with unit(request) as work:
        plan = catalog_api.get_plan(code, at=None, work=work, who=who)
        versions = catalog_api.list_plan_versions(code, work=work, who=who).data
        service = str((plan.model_extra or {}).get("service"))
        names = metric_names(work, who, [service])
        last = (work.clock.now().replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    definition = plan.model_dump(mode="json")
    editable = {
        k: v
        for k, v in definition.items()
        if k not in ("object", "id", "status", "provider_id", "version", "versions",
                     "effective_from", "created_at", "retired_at")
    }  # fmt: skip
    return render(
        request,
        seen,
        "console/provider_plan.html",
        status=400 if error else 200,
        plan=plan,
        versions=versions,
        words=describe_plan(definition, seen, names.get(service)),
        draft=draft or json.dumps(editable, indent=2),
        period=period or last,
        simulation=simulation,
        error=error,
    )


@router.post("/plans/{code}/{what}")
async def plan_action(request: Request, code: str, what: str) -> Response:
    """Simulate a draft against a past month's usage, or publish it as a new version."""
    seen = _provider(request)
    fields = await form_of(request, seen)
    who = seen.who

    def run() -> Response:
        try:
            draft = _draft(fields)
            if what == "simulate":
                from billfold.analytics.schemas import SimulateRequest

                body = SimulateRequest(plan=draft, period=fields.get("period", ""))
                with unit(request) as work:
                    result = analytics_api.simulate(work, who, code, body)
                return _plan_page(
                    request, seen, code, result, fields.get("definition"), fields.get("period")
                )
            if what == "versions":
                from billfold.catalog.schemas import PlanVersionCreate

                version = PlanVersionCreate.model_validate(
                    {"plan": draft, "effective_from": fields.get("effective_from") or None}
                )
                with unit(request, write=True) as work:
                    catalog_api.add_plan_version(code, version, work=work, who=who)
                return redirect(f"/provider/plans/{code}", seen.t("The new version is saved."))
            raise InvalidRequest("no such action")
        except BillfoldError as error:
            return _plan_page(
                request,
                seen,
                code,
                None,
                fields.get("definition"),
                fields.get("period"),
                say(seen, error),
            )
        except ValueError as error:  # A field the API's schema refuses.
            return _plan_page(
                request,
                seen,
                code,
                None,
                fields.get("definition"),
                fields.get("period"),
                str(error).splitlines()[0],
            )

    return await run_in_threadpool(run)


@router.get("/customers")
def customers(request: Request) -> Response:
    seen = _provider(request)
    who = seen.who
    with unit(request) as work:
        now = work.clock.now()
        end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        start = end - timedelta(days=30)
        subs = subscriptions_api.list_subscriptions(
            user=None, limit=1000, starting_after=None, work=work, who=who
        ).data
        top = analytics_api.top(start=start, to=end, by="user", limit=1000, work=work, who=who).data
    spend = {t.user: t for t in top}
    rows = [(s, spend.get(s.user)) for s in subs if s.ended_at is None]
    return render(request, seen, "console/provider_customers.html", rows=rows)


@router.get("/statements")
def statements(request: Request) -> Response:
    seen = _provider(request)
    who = seen.who
    assert who.provider_id is not None
    with unit(request) as work:
        now = work.clock.now()
        period = request.query_params.get("period") or now.strftime("%Y-%m")
        try:
            found = settlement_api.statements(
                provider_id=who.provider_id, period=period, work=work, who=who
            )
        except BillfoldError as error:
            found, period = None, f"{period} ({say(seen, error)})"
    months = [(now.replace(day=1) - timedelta(days=31 * i)).strftime("%Y-%m") for i in range(6)]
    return render(
        request, seen, "console/provider_statements.html", s=found, period=period, months=months
    )


@router.get("/events")
def events(request: Request) -> Response:
    seen = _provider(request)
    who = seen.who
    with unit(request) as work:
        found = records.recent_events(work, who, limit=30)
        refused = records.recent_rejections(work, who, limit=100)
    return render(request, seen, "console/provider_events.html", events=found, refused=refused)
