"""Prepaid products and payments in the console: a user's packages, codes, balance parts,
payments and auto-recharge; a provider's packages and coupons and what they cost it; the
operator's platform coupons and promotional credit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from billfold import payments, prepaid, settlement
from billfold.core.access import Role
from billfold.core.i18n import Formats
from billfold.domain.errors import BillfoldError, InvalidRequest
from billfold.web.console import (
    form_of,
    handle_form,
    person,
    redirect,
    render,
    say,
    transfer_id,
    unit,
)

router = APIRouter(include_in_schema=False)


# --- a user's packages ----------------------------------------------------------------


@router.get("/packages")
def packages_page(request: Request) -> Response:
    seen = person(request, Role.USER)
    who = seen.who
    assert who.user_id is not None
    with unit(request) as work:
        on_sale = prepaid.list_packages(work, who, limit=200).data
        held = prepaid.list_holdings(work, who, who.user_id, include_ended=True)
    return render(request, seen, "console/packages.html", on_sale=on_sale, held=held)


@router.post("/packages/{package_id}/buy")
async def buy(request: Request, package_id: str) -> Response:
    seen = person(request, Role.USER)
    fields = await form_of(request, seen)
    who = seen.who
    assert who.user_id is not None
    user_id = who.user_id
    sale = transfer_id(seen, request, fields.get("nonce", ""))

    def act(work: Any) -> str:
        holding = prepaid.buy_package(work, who, user_id, package_id, transfer_id=sale)
        return seen.t("You bought %(name)s; it lasts until %(when)s.") % {
            "name": holding.name,
            "when": Formats(seen.locale).datetime(holding.expires_at),
        }

    return await run_in_threadpool(handle_form, request, seen, "/packages", act)


# --- the wallet: codes, payments, auto-recharge ---------------------------------------


def wallet_extras(work: Any, seen: Any) -> dict[str, Any]:
    """What the wallet page shows beside the balance and the transactions."""
    who = seen.who
    user_id = who.user_id
    configured = {name: _configured(work, name) for name in payments.GATEWAYS}
    return {
        "grants": prepaid.list_grants(work, who, user_id, include_ended=False),
        "payments": payments.list_payments(work, who, user_id, limit=10),
        "recharge": payments.get_recharge(work, who, user_id),
        "gateways": [name for name, on in configured.items() if on],
    }


def _configured(work: Any, name: str) -> bool:
    try:
        payments.gateway_for(work.settings, name)
    except BillfoldError:
        return False
    return True


@router.post("/wallet/redeem")
async def redeem(request: Request) -> Response:
    seen = person(request, Role.USER)
    fields = await form_of(request, seen)
    who = seen.who
    assert who.user_id is not None
    user_id = who.user_id

    def act(work: Any) -> str:
        grant = prepaid.redeem(work, who, user_id, fields.get("code", ""))
        if grant.kind == "discount":
            return seen.t("Code accepted: %(percent)s%% off your next purchase.") % {
                "percent": grant.percent
            }
        return seen.t("Code accepted: %(amount)s added as a voucher.") % {
            "amount": Formats(seen.locale).money(grant.amount, grant.currency.code)
        }

    return await run_in_threadpool(handle_form, request, seen, "/wallet", act)


@router.post("/wallet/pay")
async def pay(request: Request) -> Response:
    """Alipay: off to Alipay's page. A card: the saved one, charged now."""
    seen = person(request, Role.USER)
    fields = await form_of(request, seen)
    who = seen.who
    assert who.user_id is not None
    user_id = who.user_id
    gateway = fields.get("gateway", "")

    def act() -> Response:
        try:
            with unit(request, write=True) as work:
                started = payments.start_checkout(
                    work, who, user_id, gateway=gateway, amount=fields.get("amount") or None,
                    saved_card=gateway == "stripe",
                )  # fmt: skip
        except BillfoldError as error:
            return redirect("/wallet", "!" + say(seen, error))
        if started.redirect_url:
            return RedirectResponse(started.redirect_url, status_code=303)
        if started.status == "succeeded":
            paid = Formats(seen.locale).money(started.amount, started.currency.code)
            return redirect(
                "/wallet", seen.t("Paid: %(amount)s is in your wallet.") % {"amount": paid}
            )
        return redirect(
            "/wallet",
            seen.t("The payment is on its way; it appears here once the card is charged."),
        )

    return await run_in_threadpool(act)


@router.post("/wallet/auto-recharge")
async def auto_recharge(request: Request) -> Response:
    seen = person(request, Role.USER)
    fields = await form_of(request, seen)
    who = seen.who
    assert who.user_id is not None
    user_id = who.user_id

    def act(work: Any) -> str:
        payments.set_recharge(
            work, who, user_id,
            threshold=fields.get("threshold") or "0", amount=fields.get("amount") or "0",
            daily_cap=fields.get("daily_cap") or None, enabled=fields.get("enabled") == "on",
        )  # fmt: skip
        return seen.t("Auto-recharge is saved.")

    return await run_in_threadpool(handle_form, request, seen, "/wallet", act)


# --- a provider's packages and coupons ------------------------------------------------


@router.get("/provider/packages")
def provider_packages(request: Request) -> Response:
    seen = person(request, Role.PROVIDER)
    who = seen.who
    assert who.provider_id is not None
    month = datetime.now(UTC).strftime("%Y-%m")
    with unit(request) as work:
        own = prepaid.list_packages(work, who, limit=200).data
        coupons = prepaid.list_coupons(work, who, limit=200).data
        from billfold.catalog import list_services

        services = list_services(work, who).data
        statements = settlement.statements(work, who, who.provider_id, month)
    return render(
        request, seen, "console/provider_packages.html", packages=own, coupons=coupons,
        services=services, statements=statements, month=month,
    )  # fmt: skip


def _quantities(text: str) -> dict[str, str]:
    """'api_calls=10000, storage_gb=50' as {metric: quantity}."""
    found: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise InvalidRequest(
                "write quantities as metric=quantity, separated by commas", param="quantities"
            )
        metric, quantity = part.split("=", 1)
        found[metric.strip()] = quantity.strip()
    return found


@router.post("/provider/packages")
async def new_package(request: Request) -> Response:
    seen = person(request, Role.PROVIDER)
    fields = await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str:
        days = fields.get("validity_days", "")
        package = prepaid.create_package(
            work, who, code=fields.get("code"), name=fields.get("name"),
            service=fields.get("service", ""), currency_code=fields.get("currency"),
            price=fields.get("price"), quantities=_quantities(fields.get("quantities", "")),
            validity_days=int(days) if days.isdigit() else days,
            reset=fields.get("reset") or "none",
        )  # fmt: skip
        return seen.t("The package %(code)s is on sale.") % {"code": package.code}

    return await run_in_threadpool(handle_form, request, seen, "/provider/packages", act)


def _coupon(work: Any, who: Any, fields: dict[str, str]) -> Any:
    kind = fields.get("kind", "amount")
    services = [s.strip() for s in fields.get("services", "").split(",") if s.strip()] or None
    expires = fields.get("expires_at") or None
    return prepaid.create_coupon(
        work, who, code=fields.get("code"), kind=kind, currency_code=fields.get("currency"),
        amount=(fields.get("value") or None) if kind == "amount" else None,
        percent=(fields.get("value") or None) if kind == "percent" else None,
        max_discount=fields.get("max_discount") or None, min_spend=fields.get("min_spend") or None,
        services=services,
        expires_at=_day(expires),
        max_redemptions=_whole(fields.get("max_redemptions", "")),
    )  # fmt: skip


def _whole(text: str) -> int | str | None:
    """A form's whole number (a malformed one is passed on, for the service to refuse)."""
    return None if not text else int(text) if text.isdigit() else text


def _day(text: str | None) -> datetime | None:
    """A date input's day, as its first moment in UTC."""
    return None if not text else datetime.fromisoformat(text).replace(tzinfo=UTC)


@router.post("/provider/coupons")
async def new_provider_coupon(request: Request) -> Response:
    return await _new_coupon(request, Role.PROVIDER, "/provider/packages")


async def _new_coupon(request: Request, role: Role, back: str) -> Response:
    """A provider's code (its services, its earnings) or the platform's, from the form."""
    seen = person(request, role)
    fields = await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str:
        coupon = _coupon(work, who, fields)
        return seen.t("The code %(code)s is ready to hand out.") % {"code": coupon.code}

    return await run_in_threadpool(_guarded, request, seen, back, act)


def _guarded(request: Request, seen: Any, back: str, act: Any) -> Response:
    """handle_form, with a malformed date told in words."""
    try:
        return handle_form(request, seen, back, act)
    except ValueError:
        return redirect(back, "!" + seen.t("Check the date: use the form 2027-01-31."))


# --- the operator's coupons and credit ------------------------------------------------


@router.get("/admin/coupons")
def admin_coupons(request: Request) -> Response:
    seen = person(request, Role.ADMIN)
    with unit(request) as work:
        found = prepaid.list_coupons(work, seen.who, limit=500).data
    return render(request, seen, "console/admin_coupons.html", coupons=found)


@router.post("/admin/coupons")
async def new_platform_coupon(request: Request) -> Response:
    return await _new_coupon(request, Role.ADMIN, "/admin/coupons")


@router.post("/admin/users/{user_id}/credits")
async def grant_credit(request: Request, user_id: str) -> Response:
    seen = person(request, Role.ADMIN)
    fields = await form_of(request, seen)
    who = seen.who

    def act(work: Any) -> str:
        expires = fields.get("expires_at") or None
        grant = prepaid.grant_credit(
            work, who, user_id, amount=fields.get("amount"),
            expires_at=_day(expires),
            reason=fields.get("reason") or "",
        )  # fmt: skip
        return seen.t("%(amount)s of promotional credit granted.") % {
            "amount": Formats(seen.locale).money(grant.amount, grant.currency.code)
        }

    return await run_in_threadpool(_guarded, request, seen, f"/admin/users/{user_id}", act)
