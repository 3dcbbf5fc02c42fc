"""Strangers on an open platform: what a hostile provider or a broken client cannot do."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billfold import authorizations, ledger
from billfold.core.context import Context
from billfold.domain.errors import InvalidRequest
from tests.integration.helpers import funded_user, metered_catalog, subscribe

PLAN = {
    "code": "maps-payg",
    "name": "Maps",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.5"}],
}


def _wallet(ctx: Context, user: str) -> tuple[int, int]:
    standing = ctx.read(ledger.user_standing, user, "USD", 0)
    return standing.posted, standing.held


def test_a_capture_never_takes_more_than_its_authorization(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "100")
    hold = ctx.run(
        authorizations.authorize,
        me,
        user_ref=user,
        service_code="maps",
        metric_code="calls",
        quantity="2",
    )
    assert hold.status == "approved" and hold.amount == Decimal(1)
    before = _wallet(ctx, user)
    with pytest.raises(InvalidRequest) as refused:
        ctx.run(authorizations.capture, me, hold.id, quantity="200")
    assert refused.value.code == "capture_exceeds_hold"
    assert _wallet(ctx, user) == before  # Nothing charged, the hold still stands.
    done = ctx.run(authorizations.capture, me, hold.id, quantity="2")
    assert done.status == "captured"
    assert _wallet(ctx, user)[0] == before[0] - 10**8


def test_a_hold_lives_at_most_the_configured_maximum(ctx: Context) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 1, "100")
    longest = ctx.settings.hold_max_ttl_s
    assert longest == 86_400
    with pytest.raises(InvalidRequest) as refused:
        ctx.run(authorizations.authorize, me, user_ref=user, amount="1", expires_in_s=longest + 1)
    assert refused.value.param == "expires_in"
    assert _wallet(ctx, user)[1] == 0  # Nothing held.
    hold = ctx.run(authorizations.authorize, me, user_ref=user, amount="1", expires_in_s=longest)
    assert hold.status == "approved"
    assert (hold.expires_at - ctx.clock.now()).total_seconds() == longest


def test_a_group_commit_gives_each_request_only_its_own_transfers(ctx: Context) -> None:
    from billfold import catalog, parties
    from billfold.core.access import SYSTEM, Principal, Role
    from billfold.metering._group_commit import _GroupCommitter, _Job
    from billfold.metering._validation import _prepare

    user = funded_user(ctx, 1, "100")
    principals = []
    for name, service in (("a", "maps"), ("b", "geo")):
        provider = ctx.run(
            parties.create_provider, SYSTEM, name=name, email=f"{name}@p.io", commission_rate="0.2"
        )
        me = Principal(f"k{name}", Role.PROVIDER, provider_id=provider.id)
        ctx.run(catalog.create_service, me, code=service, name=service)
        ctx.run(catalog.create_metric, me, service, code="calls", name="Calls", aggregation="count")
        ctx.run(catalog.create_plan, me, {**PLAN, "code": f"{service}-payg", "service": service})
        subscribe(ctx, user, service)
        principals.append((me, service))
    now = ctx.clock.now()
    jobs = []
    for me, service in principals:
        event = {"id": "e1", "user": user, "service": service, "metric": "calls", "value": 1}
        with ctx.work(read_only=True) as work:
            jobs.append(
                _Job(_prepare(work, me, [{**event, "timestamp": now.isoformat()}], False, now))
            )
    _GroupCommitter(ctx)._apply_together(jobs)
    results = [job.result for job in jobs]
    assert all(r is not None for r in results)
    assert [r.accepted for r in results if r is not None] == [1, 1]
    with ctx.work(read_only=True) as work:
        services = [
            {t.service for t in ledger.load_transfers(work, r.charges)}
            for r in results
            if r is not None
        ]
    assert services == [{"maps"}, {"geo"}]


def test_a_404_for_an_external_id_never_names_the_internal_id(ctx: Context) -> None:
    from billfold import parties
    from billfold.core.access import SYSTEM, Principal, Role
    from billfold.domain.errors import NotFound

    mine = funded_user(ctx, 1, "1")
    other = ctx.run(
        parties.create_user,
        SYSTEM,
        name="O",
        email="o@u.io",
        currency_code="USD",
        external_id="crm-42",
    )
    me = Principal("ku", Role.USER, user_id=mine)
    for look in (parties.get_user, parties.get_balance, parties.transactions):
        with pytest.raises(NotFound) as hidden:
            ctx.read(look, me, "crm-42")
        assert other.id not in hidden.value.message and "crm-42" in hidden.value.message
