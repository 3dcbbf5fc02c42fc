"""A user's pages: home, catalog and subscriptions, usage and consumption records,
wallet, invoices, alerts and budgets, API keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from billfold import subscriptions
from billfold.alerts import router as alerts_api
from billfold.alerts.schemas import EndpointCreate
from billfold.analytics import router as analytics_api
from billfold.catalog import router as catalog_api
from billfold.core import router as core_api
from billfold.core.access import Principal, Role
from billfold.core.keys import create_key
from billfold.domain.errors import BillfoldError
from billfold.invoicing import router as invoicing_api
from billfold.metering import records
from billfold.parties import router as parties_api
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
from billfold.web.prepaid import wallet_extras
from billfold.web.words import describe_plan, usage_chart

router = APIRouter(include_in_schema=False)


PAGE = 50


def extra(model: Any, key: str) -> Any:
    """A field of an answer that carries its PLAN fields as extras (PlanOut)."""
    return (model.model_extra or {}).get(key)


def metric_names(work: Any, who: Principal, services: list[str]) -> dict[str, dict[str, str]]:
    """Each service's metric names by code, to say prices in words."""
    found: dict[str, dict[str, str]] = {}
    for code in services:
        try:
            metrics = catalog_api.list_metrics(code, work=work, who=who).data
        except BillfoldError:
            continue
        found[code] = {m.code: m.name for m in metrics}
    return found


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _days(now: datetime, count: int) -> tuple[datetime, datetime]:
    end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return end - timedelta(days=count), end


def user_home(request: Request, seen: Viewer) -> Response:
    who = seen.who
    assert who.user_id is not None
    with unit(request) as work:
        now = work.clock.now()
        user = parties_api.get_user(who.user_id, work=work, who=who)
        forecast = alerts_api.forecast(user_id=who.user_id, days=14, work=work, who=who)
        start, end = _days(now, 30)
        usage = analytics_api.usage_series(
            start=start,
            to=end,
            window="day",
            tz=None,
            group_by="service",
            user=who.user_id,
            provider=None,
            service=None,
            metric=None,
            work=work,
            who=who,
        )
        month = analytics_api.usage_series(
            start=_month_start(now),
            to=end,
            window="month",
            tz=None,
            group_by=None,
            user=who.user_id,
            provider=None,
            service=None,
            metric=None,
            work=work,
            who=who,
        )
        alerts = alerts_api.list_alerts(limit=5, work=work, who=who).data
        subs = subscriptions_api.list_subscriptions(
            user=None, limit=100, starting_after=None, work=work, who=who
        ).data
    spent = sum((Decimal(p.amount) for s in month.data for p in s.points), Decimal(0))
    labels, series = usage_chart(usage, start, 30, "amount")
    return render(
        request,
        seen,
        "console/user_home.html",
        user=user,
        forecast=forecast,
        spent=spent,
        alerts=alerts,
        subs=[s for s in subs if s.ended_at is None],
        labels=labels,
        series=series,
    )


@router.get("/catalog")
def catalog(request: Request) -> Response:
    seen = person(request, Role.USER)
    who = seen.who
    with unit(request) as work:
        services = catalog_api.list_services(limit=100, starting_after=None, work=work, who=who)
        plans = catalog_api.list_plans(
            limit=500, starting_after=None, service=None, status="active", work=work, who=who
        )
        names = metric_names(work, who, [s.code for s in services.data])
        subs = subscriptions_api.list_subscriptions(
            user=None, limit=100, starting_after=None, work=work, who=who
        ).data

    def service_of(plan: Any) -> str:
        return str(extra(plan, "service") or "")

    current = {s.service: s for s in subs if s.ended_at is None}
    by_service: dict[str, list[Any]] = {}
    for plan in plans.data:
        by_service.setdefault(service_of(plan), []).append(plan)
    explained = {
        p.code: describe_plan(p.model_dump(mode="json"), seen, names.get(service_of(p)))
        for p in plans.data
    }
    return render(
        request,
        seen,
        "console/catalog.html",
        services=services.data,
        plans=by_service,
        words=explained,
        current=current,
    )


@router.get("/catalog/{plan_code}/subscribe")
def subscribe_preview(request: Request, plan_code: str) -> Response:
    """What subscribing (or switching) to a plan costs now, shown before confirming."""
    seen = person(request, Role.USER)
    who = seen.who
    with unit(request) as work:
        plan = catalog_api.get_plan(plan_code, at=None, work=work, who=who)
        subs = subscriptions_api.list_subscriptions(
            user=None, limit=100, starting_after=None, work=work, who=who
        ).data
        balance = parties_api.get_balance(who.user_id or "", as_of=None, work=work, who=who)
        names = metric_names(work, who, [str(extra(plan, "service"))])
    current = next(
        (
            s
            for s in subs
            if s.service == (plan.model_extra or {}).get("service") and s.ended_at is None
        ),
        None,
    )
    if current is not None and current.interval != "none" and extra(plan, "interval") == "none":
        lines: list[Any] = []
        total: Decimal | None = None
        after: Any = None
        problem: str | None = seen.t("To move to pay as you go, cancel this plan first.")
    else:
        lines, total, problem, after = _dry_run(
            request,
            seen,
            plan_code,
            current.id if current else None,
            current.interval if current else "",
        )
    return render(
        request,
        seen,
        "console/subscribe.html",
        plan=plan,
        current=current,
        words=describe_plan(
            plan.model_dump(mode="json"), seen, names.get(str(extra(plan, "service")))
        ),
        balance=balance,
        preview_lines=lines,
        preview_total=total,
        preview_error=problem,
        balance_after=after,
    )


def _lines(work: Any, who: Principal) -> dict[tuple[str, int | None, int], Any]:
    """Every invoice line the user has, by invoice, line id and position."""
    found = invoicing_api.list_invoices(
        user=None, subscription=None, status=None, limit=1000, starting_after=None,
        work=work, who=who,
    )  # fmt: skip
    return {(i.id, line.id, n): line for i in found.data for n, line in enumerate(i.lines)}


def _dry_run(
    request: Request, seen: Viewer, plan_code: str, current: str | None, current_interval: str
) -> tuple[list[Any], Decimal | None, str | None, Any]:
    """What subscribing or switching would do now, with the proration: the invoice lines
    it makes and the balance after. It is the real operation, run in a unit of work that
    is never committed."""
    who = seen.who
    assert who.user_id is not None
    try:
        with unit(request, write=True, commit=False) as work:
            before = _lines(work, who)
            if current and current_interval != "none":
                subscriptions.change_plan(work, who, current, plan_code=plan_code,
                                          timing="immediate")  # fmt: skip
            else:
                subscriptions.create(work, who, user_ref=who.user_id, plan_code=plan_code)
            after = _lines(work, who)
            balance = parties_api.get_balance(who.user_id, as_of=None, work=work, who=who)
    except BillfoldError as error:
        return [], None, say(seen, error), None
    lines = [line for key, line in after.items() if key not in before]
    return lines, sum((Decimal(line.amount) for line in lines), Decimal(0)), None, balance


@router.post("/catalog/{plan_code}/subscribe")
async def subscribe(request: Request, plan_code: str) -> Response:
    seen = person(request, Role.USER)
    fields = await form_of(request, seen)
    who = seen.who
    assert who.user_id is not None
    user_id = who.user_id

    def act(work: Any) -> str:
        current = fields.get("current")
        if current and subscriptions.get(work, who, current).interval != "none":
            subscriptions.change_plan(
                work, who, current, plan_code=plan_code, timing=fields.get("timing") or "immediate"
            )
            return seen.t("Your plan is changed.")
        subscriptions.create(work, who, user_ref=user_id, plan_code=plan_code)
        return seen.t("You are subscribed.")

    return await run_in_threadpool(handle_form, request, seen, "/subscriptions", act)


@router.get("/subscriptions")
def subscriptions_page(request: Request) -> Response:
    seen = person(request, Role.USER)
    who = seen.who
    with unit(request) as work:
        subs = subscriptions_api.list_subscriptions(
            user=None, limit=100, starting_after=None, work=work, who=who
        ).data
    return render(request, seen, "console/subscriptions.html", subs=subs)


@router.post("/subscriptions/{sub_id}/cancel")
async def cancel(request: Request, sub_id: str) -> Response:
    seen = person(request, Role.USER)
    fields = await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str:
        subscriptions.cancel(work, who, sub_id, timing=fields.get("timing") or "period_end")
        return seen.t("The subscription is cancelled.")

    return await run_in_threadpool(handle_form, request, seen, "/subscriptions", act)


@router.get("/usage")
def usage(request: Request) -> Response:
    seen = person(request, Role.USER, Role.PROVIDER, Role.ADMIN)
    who = seen.who
    service = request.query_params.get("service") or None
    days = (
        30
        if request.query_params.get("days") not in ("7", "60", "90")
        else int(request.query_params["days"])
    )
    with unit(request) as work:
        now = work.clock.now()
        start, end = _days(now, days)
        series = analytics_api.usage_series(
            start=start,
            to=end,
            window="day",
            tz=None,
            group_by="service",
            user=None,
            provider=None,
            service=service,
            metric=None,
            work=work,
            who=who,
        )
        found = records.list_records(work, who, service=service, since=start, limit=300)
        services = catalog_api.list_services(limit=100, starting_after=None, work=work, who=who)
    labels, amounts = usage_chart(series, start, days, "amount")
    _, events = usage_chart(series, start, days, "events")
    return render(
        request,
        seen,
        "console/usage.html",
        labels=labels,
        amounts=amounts,
        events=events,
        records=found,
        services=services.data,
        service=service,
        days=days,
        month=now.strftime("%Y-%m"),
    )


@router.get("/usage/{record_id}")
def explain(request: Request, record_id: int) -> Response:
    seen = person(request, Role.USER, Role.PROVIDER, Role.ADMIN)
    who = seen.who
    with unit(request) as work:
        found = records.explain(work, who, record_id)
    return render(request, seen, "console/explain.html", x=found)


@router.get("/wallet")
def wallet(request: Request) -> Response:
    seen = person(request, Role.USER)
    who = seen.who
    assert who.user_id is not None
    after = request.query_params.get("after") or None
    with unit(request) as work:
        balance = parties_api.get_balance(who.user_id, as_of=None, work=work, who=who)
        moves = parties_api.list_transactions(
            who.user_id, limit=PAGE, starting_after=after, work=work, who=who
        )
        extras = wallet_extras(work, seen)
    return render(
        request,
        seen,
        "console/wallet.html",
        **extras,
        balance=balance,
        moves=moves.data,
        more=moves.has_more,
        after=after,
    )


@router.get("/invoices")
def invoices(request: Request) -> Response:
    seen = person(request, Role.USER, Role.PROVIDER, Role.ADMIN)
    who = seen.who
    with unit(request) as work:
        found = invoicing_api.list_invoices(
            user=None,
            subscription=None,
            status=None,
            limit=100,
            starting_after=None,
            work=work,
            who=who,
        )
        billing = (
            parties_api.get_billing_profile(who.user_id, work=work, who=who)
            if who.user_id
            else None
        )
    return render(request, seen, "console/invoices.html", invoices=found.data, billing=billing)


_BILLING_FIELDS = (
    "company", "name", "address", "tax_number", "email", "fapiao_title", "fapiao_tax_number",
)  # fmt: skip


@router.post("/invoices/billing-details")
async def save_billing_details(request: Request) -> Response:
    """The buyer on the user's invoices, and whether cash pays open invoices at once."""
    seen = person(request, Role.USER)
    fields = await form_of(request, seen)
    who = seen.who
    assert who.user_id is not None
    user_id = who.user_id
    from billfold.parties.schemas import BillingProfileUpdate

    def act(work: Any) -> str:
        body = BillingProfileUpdate.model_validate(
            {k: (fields.get(k) or "") for k in _BILLING_FIELDS}
            | {"autopay_invoices": fields.get("autopay_invoices") == "on"}
        )
        parties_api.set_billing_profile(user_id, body, work=work, who=who)
        return seen.t("Your billing details are saved.")

    try:
        return await run_in_threadpool(handle_form, request, seen, "/invoices", act)
    except ValueError as error:  # A pydantic ValidationError: a field is too long.
        return redirect("/invoices", "!" + str(error).splitlines()[0])


@router.get("/invoices/{invoice_id}")
def invoice_page(request: Request, invoice_id: str) -> Response:
    """An invoice's lines, each usage line opening to how its amount came about."""
    seen = person(request, Role.USER, Role.PROVIDER, Role.ADMIN)
    who = seen.who
    with unit(request) as work:
        invoice = invoicing_api.get_invoice(invoice_id, work=work, who=who)
        found = records.list_records(
            work, who, user_id=invoice.user, since=invoice.period.start,
            until=invoice.period.end, limit=1000,
        )  # fmt: skip
    explained = {
        n: next((r.id for r in found if r.metric == line.metric), None)
        for n, line in enumerate(invoice.lines)
        if line.metric
    }
    return render(request, seen, "console/invoice.html", invoice=invoice, explained=explained)


@router.post("/invoices/{invoice_id}/pay")
async def pay(request: Request, invoice_id: str) -> Response:
    seen = person(request, Role.USER)
    await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str:
        invoicing_api.pay_invoice(invoice_id, work=work, who=who)
        return seen.t("The invoice is paid from your wallet.")

    return await run_in_threadpool(handle_form, request, seen, "/invoices", act)


@router.get("/alerts")
def alerts(request: Request) -> Response:
    seen = person(request, Role.USER)
    who = seen.who
    with unit(request) as work:
        found = alerts_api.list_alerts(limit=100, work=work, who=who).data
        settings = alerts_api.get_alert_settings(work=work, who=who, user_id=who.user_id or "")
        user = parties_api.get_user(who.user_id or "", work=work, who=who)
    return render(
        request,
        seen,
        "console/alerts.html",
        alerts=found,
        settings=settings,
        currency=user.currency,
    )


@router.post("/alerts")
async def save_alerts(request: Request) -> Response:
    seen = person(request, Role.USER)
    fields = await form_of(request, seen)
    who = seen.who
    assert who.user_id is not None
    user_id = who.user_id
    from billfold.alerts.schemas import AlertSettingsIn

    def act(work: Any) -> str:
        body = AlertSettingsIn.model_validate(
            {k: (fields.get(k) or None) for k in ("monthly_budget", "low_balance", "thresholds")}
            | {
                "thresholds": [
                    t.strip() for t in (fields.get("thresholds") or "").split(",") if t.strip()
                ]
            }
        )
        alerts_api.set_alert_settings(user_id=user_id, body=body, work=work, who=who)
        return seen.t("Your budget and alerts are saved.")

    try:
        return await run_in_threadpool(handle_form, request, seen, "/alerts", act)
    except ValueError as error:  # A pydantic ValidationError: a field is malformed.
        return redirect(
            "/alerts",
            "!"
            + seen.t("Check the amounts: use numbers such as 50 or 12.5.")
            + f" ({str(error).splitlines()[0]})",
        )


def _keys_page(
    request: Request, seen: Viewer, secret: str | None = None, hook_secret: str | None = None
) -> Response:
    """The keys and webhook endpoints, with a new secret shown once if there is one."""
    with unit(request) as work:
        found = core_api.list_api_keys(limit=100, work=work, who=seen.who).data
        hooks = alerts_api.list_endpoints(work=work, who=seen.who).data
    return render(request, seen, "console/keys.html", keys=found, hooks=hooks, secret=secret,
                  hook_secret=hook_secret)  # fmt: skip


@router.get("/keys")
def keys(request: Request) -> Response:
    return _keys_page(request, person(request, Role.USER, Role.PROVIDER, Role.ADMIN))


@router.post("/keys")
async def new_key(request: Request) -> Response:
    seen = person(request, Role.USER, Role.PROVIDER, Role.ADMIN)
    fields = await form_of(request, seen)
    who = seen.who

    def make() -> Response:
        try:
            with unit(request, write=True) as work:
                _key, secret = create_key(
                    work, who, role=who.role, provider_id=who.provider_id, user_id=who.user_id,
                    name=fields.get("name") or None,
                )  # fmt: skip
        except BillfoldError as error:
            return redirect("/keys", "!" + say(seen, error))
        return _keys_page(request, seen, secret=secret)

    return await run_in_threadpool(make)


@router.post("/webhooks")
async def new_webhook(request: Request) -> Response:
    """A webhook endpoint for the asker's alerts; its signing secret is shown once."""
    seen = person(request, Role.USER, Role.PROVIDER, Role.ADMIN)
    fields = await form_of(request, seen)
    try:
        body = EndpointCreate(url=fields.get("url", ""))
    except ValueError:  # The API's own schema refuses it (too long).
        return redirect("/keys", "!" + seen.t("Check what you entered: %(detail)s") % {
            "detail": "url"})  # fmt: skip

    def make() -> Response:
        try:
            with unit(request, write=True) as work:
                made = alerts_api.create_endpoint(work=work, who=seen.who, body=body)
        except BillfoldError as error:
            return redirect("/keys", "!" + say(seen, error))
        return _keys_page(request, seen, hook_secret=made.secret)

    return await run_in_threadpool(make)
