"""Small builders for ledger tests: a wallet with a floor and the platform's accounts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from billfold import catalog, ledger, parties
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context, Work
from billfold.domain.ledger import (
    PLATFORM_OWNER_ID,
    AccountKind,
    OwnerType,
    Posting,
    TransferKind,
    TransferSpec,
)
from billfold.ids import new_id
from billfold.store.tables import services


@dataclass(frozen=True)
class Books:
    wallet: int
    cash: int
    provider: int
    revenue: int


def open_books(ctx: Context, owner: str = "u1", *, floor: int = 0, currency: str = "USD") -> Books:
    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        ensure = ledger.ensure_account
        books = Books(
            wallet=ensure(
                uow, OwnerType.USER, owner, AccountKind.WALLET, currency, now=now, floor=floor
            ),
            cash=ensure(
                uow,
                OwnerType.PLATFORM,
                PLATFORM_OWNER_ID,
                AccountKind.EXTERNAL_CASH,
                currency,
                now=now,
            ),
            provider=ensure(
                uow, OwnerType.PROVIDER, "p1", AccountKind.PROVIDER_EARNINGS, currency, now=now
            ),
            revenue=ensure(
                uow,
                OwnerType.PLATFORM,
                PLATFORM_OWNER_ID,
                AccountKind.PLATFORM_REVENUE,
                currency,
                now=now,
            ),
        )
        uow.commit()
    return books


def top_up_spec(books: Books, units: int, transfer_id: str | None = None) -> TransferSpec:
    return TransferSpec(
        id=transfer_id or new_id("tr"),
        kind=TransferKind.TOP_UP,
        postings=(Posting(books.cash, "USD", -units), Posting(books.wallet, "USD", units)),
        user_id="u1",
    )


def charge_spec(
    books: Books,
    units: int,
    transfer_id: str | None = None,
    *,
    hold_id: str | None = None,
    commission: int | None = None,
) -> TransferSpec:
    platform = units // 5 if commission is None else commission
    return TransferSpec(
        id=transfer_id or new_id("tr"),
        kind=TransferKind.CAPTURE if hold_id else TransferKind.CHARGE,
        postings=(
            Posting(books.wallet, "USD", -units),
            Posting(books.provider, "USD", units - platform),
            Posting(books.revenue, "USD", platform),
        ),
        user_id="u1",
        provider_id="p1",
        hold_id=hold_id,
    )


def metered_catalog(
    ctx: Context, plan: dict[str, object], *, commission_rate: str = "0.2", metric: str = "calls"
) -> Principal:
    """A provider selling service "maps" with a count metric and `plan`; its principal."""
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="A", email="a@p.io", commission_rate=commission_rate
    )
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="maps", name="Maps")
    ctx.run(catalog.create_metric, me, "maps", code=metric, name="Calls", aggregation="count")
    ctx.run(catalog.create_plan, me, plan)
    return me


def funded_user(ctx: Context, n: int, amount: str, *, customer_of: str | None = "maps") -> str:
    """A prepaid USD user topped up with `amount`, subscribed to the default plan of the
    service `customer_of` when that service exists."""
    user = ctx.run(
        parties.create_user, SYSTEM, name=f"U{n}", email=f"u{n}@u.io", currency_code="USD"
    )
    ctx.run(parties.top_up, SYSTEM, user.id, amount=amount)
    if customer_of is not None and ctx.read(_has_default_plan, customer_of):
        subscribe(ctx, user.id, customer_of)
    return user.id


def _has_default_plan(work: Work, code: str) -> bool:
    row = work.conn.execute(
        select(services.c.default_plan_id).where(services.c.code == code)
    ).one_or_none()
    return row is not None and row.default_plan_id is not None


def subscribe(
    ctx: Context, user_id: str, service: str = "maps", *, start: str | None = None
) -> str:
    """Subscribes the user to the service's default plan (as the operator): the consent
    under which a provider may meter and charge them."""
    from billfold import subscriptions

    return ctx.run(
        subscriptions.create,
        SYSTEM,
        user_ref=user_id,
        plan_code=None,
        service_code=service,
        start=start,
    ).id


def make_customer(ctx: Context, provider_id: str, user_id: str, service: str = "shop") -> str:
    """Makes the user a customer of the provider: a service of the provider with a
    pay-as-you-go plan (created if missing), and the user's subscription to it."""
    me = Principal("k-setup", Role.PROVIDER, provider_id=provider_id)
    if not ctx.read(_has_default_plan, service):
        ctx.run(catalog.create_service, me, code=service, name=service)
        plan = {
            "code": f"{service}-payg",
            "name": "Pay as you go",
            "service": service,
            "currency": "USD",
            "interval": "none",
            "charges": [],
        }
        ctx.run(catalog.create_plan, me, plan)
    return subscribe(ctx, user_id, service)


def run_machine(machine: type, url: str, home: Path, *, examples: int, steps: int) -> None:
    """Runs a Hypothesis state machine whose instances open `url` (their files in `home`)."""
    from hypothesis import HealthCheck, settings

    bound = type("Machine", (machine,), {"database_url": url, "home": home})
    bound.TestCase.settings = settings(  # type: ignore[attr-defined]
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    bound.TestCase().runTest()  # type: ignore[attr-defined]
