"""The operator's pages: platform revenue and commission, provider applications, users
(search, credit limit, manual credit), dunning, verify and reconcile, the audit trail."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from billfold import parties, settlement
from billfold.analytics import router as analytics_api
from billfold.core import router as core_api
from billfold.core.access import SYSTEM, Role
from billfold.core.http import maybe_aware
from billfold.domain.errors import BillfoldError, InvalidRequest
from billfold.identity import router as identity_api
from billfold.ledger.verify import verify
from billfold.parties import router as parties_api
from billfold.parties.schemas import CreditLimitUpdate, ProviderUpdate
from billfold.payments import reconcile
from billfold.settlement import router as settlement_api
from billfold.subscriptions import router as subscriptions_api
from billfold.web.console import (
    Viewer,
    context_of,
    form_of,
    handle_form,
    nonce,
    person,
    render,
    say,
    transfer_id,
    unit,
)
from billfold.web.words import usage_chart

router = APIRouter(prefix="/admin", include_in_schema=False)


def _admin(request: Request) -> Viewer:
    return person(request, Role.ADMIN)


def admin_home(request: Request, seen: Viewer) -> Response:
    who = seen.who
    with unit(request) as work:
        now = work.clock.now()
        day_end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        day_start = day_end - timedelta(days=30)
        revenue = analytics_api.revenue_series(
            start=day_start,
            to=day_end,
            window="day",
            tz=None,
            group_by=None,
            provider=None,
            service=None,
            work=work,
            who=who,
        )
        months = [(now.replace(day=1) - timedelta(days=31 * i)).strftime("%Y-%m") for i in range(6)]
        period = request.query_params.get("period") or months[0]
        if period not in months:
            period = months[0]
        report = settlement_api.commission_report(period=period, work=work, who=who)
        commission, promotions = report.data, report.promotions
        everyone = parties_api.list_providers(
            limit=1000, starting_after=None, work=work, who=who
        ).data
        pending = [p for p in everyone if p.status == "pending"]
    labels, gross = usage_chart(revenue, day_start, 30, "gross")
    _, cut = usage_chart(revenue, day_start, 30, "commission")
    series = [
        {"name": seen.t("Gross"), "data": gross[0]["data"] if gross else ["0"] * 30},
        {"name": seen.t("Commission"), "data": cut[0]["data"] if cut else ["0"] * 30},
    ]
    return render(
        request,
        seen,
        "console/admin_home.html",
        labels=labels,
        series=series,
        commission=commission,
        promotions=promotions,
        period=period,
        months=months,
        names={p.id: p.name for p in everyone},
        pending=pending,
        currency=revenue.data[0].currency if revenue.data else None,
    )


@router.get("/providers")
def providers(request: Request) -> Response:
    seen = _admin(request)
    with unit(request) as work:
        found = parties_api.list_providers(
            limit=1000, starting_after=None, work=work, who=seen.who
        ).data
    order = {"pending": 0, "active": 1}
    found.sort(key=lambda p: (order.get(p.status, 2), p.created_at))
    return render(request, seen, "console/admin_providers.html", providers=found, nonce=nonce())


@router.post("/providers/{provider_id}/{what}")
async def provider_action(request: Request, provider_id: str, what: str) -> Response:
    seen = _admin(request)
    fields = await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str | None:
        if what == "approve":
            identity_api.approve_provider(provider_id, work=work, who=who)
            return seen.t("The provider is approved and can sell now.")
        if what == "reject":
            identity_api.reject_provider(provider_id, work=work, who=who)
            return seen.t("The application is rejected.")
        if what == "payout":
            settlement.payout(
                work, who, provider_id=provider_id, amount=fields.get("amount", ""),
                reference=fields.get("reference") or None,
                transfer_id=transfer_id(seen, request, fields.get("nonce", "")),
            )  # fmt: skip
            return seen.t("The payout is recorded.")
        if what == "commission":
            body = ProviderUpdate(commission_rate=fields.get("commission_rate", ""))
            parties_api.update_provider(provider_id, body, work=work, who=who)
            return seen.t("The commission rate is saved.")
        raise InvalidRequest("no such action")

    return await run_in_threadpool(handle_form, request, seen, "/admin/providers", act)


@router.get("/users")
def users(request: Request) -> Response:
    seen = _admin(request)
    wanted = (request.query_params.get("q") or "").strip().lower()
    with unit(request) as work:
        found = parties_api.list_users(
            limit=1000, starting_after=None, work=work, who=seen.who
        ).data
    if wanted:
        found = [
            u
            for u in found
            if wanted in u.name.lower()
            or wanted in u.email.lower()
            or wanted == u.id.lower()
            or wanted == (u.external_id or "").lower()
        ]
    return render(request, seen, "console/admin_users.html", users=found[:200], q=wanted)


@router.get("/users/{user_id}")
def user_page(request: Request, user_id: str) -> Response:
    seen = _admin(request)
    who = seen.who
    with unit(request) as work:
        user = parties_api.get_user(user_id, work=work, who=who)
        moves = parties_api.list_transactions(
            user_id, limit=20, starting_after=None, work=work, who=who
        ).data
        subs = subscriptions_api.list_subscriptions(
            user=user_id, limit=100, starting_after=None, work=work, who=who
        ).data
    return render(
        request, seen, "console/admin_user.html", user=user, moves=moves, subs=subs, nonce=nonce()
    )


@router.post("/users/{user_id}/{what}")
async def user_action(request: Request, user_id: str, what: str) -> Response:
    seen = _admin(request)
    fields = await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str | None:
        if what == "credit-limit":
            body = CreditLimitUpdate(credit_limit=fields.get("credit_limit", ""))
            parties_api.set_credit_limit(user_id, body, work=work, who=who)
            return seen.t("The credit limit is saved.")
        if what == "credit":
            parties.top_up(
                work,
                who,
                user_id,
                amount=fields.get("amount", ""),
                reference=fields.get("reference") or None,
                transfer_id=transfer_id(seen, request, fields.get("nonce", "")),
            )
            return seen.t("The account is credited.")
        raise InvalidRequest("no such action")

    return await run_in_threadpool(handle_form, request, seen, f"/admin/users/{user_id}", act)


@router.get("/dunning")
def dunning(request: Request) -> Response:
    seen = _admin(request)
    with unit(request) as work:
        subs = subscriptions_api.list_subscriptions(
            user=None, limit=1000, starting_after=None, work=work, who=seen.who
        ).data
    late = [s for s in subs if s.status in ("past_due", "suspended")]
    return render(request, seen, "console/admin_dunning.html", subs=late)


@router.get("/operations")
def operations(request: Request) -> Response:
    seen = _admin(request)
    with unit(request) as work:
        period = (work.clock.now().replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    return render(
        request,
        seen,
        "console/admin_operations.html",
        period=period,
        report=None,
        reconciliation=None,
    )


@router.post("/operations/{what}")
async def run_operation(request: Request, what: str) -> Response:
    seen = _admin(request)
    fields = await form_of(request, seen)

    def run() -> Response:
        report = reconciliation = None
        period = fields.get("period") or ""
        try:
            if what == "verify":
                with unit(request) as work:
                    report = verify(work, SYSTEM)
            elif what == "bill-run":
                from billfold.invoicing.billing import bill_run

                billed = bill_run(context_of(request))
                return render(
                    request,
                    seen,
                    "console/admin_operations.html",
                    period=period,
                    report=None,
                    reconciliation=None,
                    billed=billed,
                )
            elif what == "reconcile":
                with unit(request) as work:
                    reconciliation = reconcile(work, period)
        except BillfoldError as error:
            return render(
                request,
                seen,
                "console/admin_operations.html",
                period=period,
                report=None,
                reconciliation=None,
                error=say(seen, error),
                status=400,
            )
        return render(
            request,
            seen,
            "console/admin_operations.html",
            period=period,
            report=report,
            reconciliation=reconciliation,
        )

    return await run_in_threadpool(run)


@router.get("/audit")
def audit(request: Request) -> Response:
    seen = _admin(request)
    q = request.query_params
    error = None

    def moment(name: str) -> datetime | None:
        text = q.get(name)
        if not text:
            return None
        return maybe_aware(
            datetime.fromisoformat(text + ("T00:00:00+00:00" if len(text) == 10 else "")), name
        )

    try:
        start, end = moment("from"), moment("to")
    except (ValueError, BillfoldError):
        start = end = None
        error = seen.t("Give dates as YYYY-MM-DD.")
    with unit(request) as work:
        found = core_api.list_audit_events(
            actor=q.get("actor") or None,
            object=q.get("object") or None,
            start=start,
            to=end,
            limit=50,
            starting_after=int(q["before"]) if (q.get("before") or "").isdigit() else None,
            work=work,
            who=seen.who,
        )
    return render(
        request,
        seen,
        "console/admin_audit.html",
        events=found.data,
        more=found.has_more,
        q=q,
        error=error,
    )
