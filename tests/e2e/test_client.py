"""The Python client against a real server: batching, retries, flush on exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select

from billfold import catalog, parties
from billfold.client import BillfoldClient, BillfoldClientError
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.core.keys import create_key
from billfold.store.tables import usage_events
from tests.conftest import START, LiveServer
from tests.integration.helpers import subscribe


@pytest.fixture
def setup(ctx: Context) -> tuple[str, str]:
    provider = ctx.run(
        parties.create_provider, SYSTEM, name="A", email="a@p.io", commission_rate="0.2"
    )
    user = ctx.run(parties.create_user, SYSTEM, name="U", email="u@u.io", currency_code="USD")
    ctx.run(parties.top_up, SYSTEM, user.id, amount="100")
    me = Principal("k", Role.PROVIDER, provider_id=provider.id)
    ctx.run(catalog.create_service, me, code="maps", name="Maps")
    ctx.run(catalog.create_metric, me, "maps", code="calls", name="Calls", aggregation="count")
    ctx.run(
        catalog.create_plan,
        me,
        {
            "code": "payg",
            "service": "maps",
            "currency": "USD",
            "interval": "none",
            "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.001"}],
        },
    )
    subscribe(ctx, user.id)
    return ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=provider.id)[1], user.id


def _stored(ctx: Context) -> int:
    with ctx.db.unit_of_work(read_only=True) as uow:
        return int(uow.conn.execute(select(func.count()).select_from(usage_events)).scalar_one())


class LosesResponses(httpx.BaseTransport):
    """Delivers requests but loses the first responses, as a flaky network would."""

    def __init__(self, losses: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.losses = losses

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/v1/events" and self.losses > 0:
            response.read()
            self.losses -= 1
            raise httpx.ReadTimeout("the response was lost", request=request)
        return response


def test_batches_retries_and_exactly_once(
    ctx: Context, server: LiveServer, setup: tuple[str, str]
) -> None:
    key, user = setup
    with BillfoldClient(
        server.url,
        key,
        batch_size=1000,
        flush_interval_s=None,
        backoff_s=0.01,
        transport=LosesResponses(2),
    ) as client:
        ids = [
            client.report(user=user, service="maps", metric="calls", timestamp=START)
            for _ in range(2500)
        ]
        client.report(user="usr_nobody", service="maps", metric="calls", timestamp=START)
        result = client.flush()
        assert result.accepted == 2500 and len(result.rejected) == 1
        assert client.rejected[0]["error"]["code"] == "user_not_found"
        # Sending the same ids again (a restarted reporter, say) changes nothing.
        for event_id in ids[:10]:
            client.report(
                user=user, service="maps", metric="calls", event_id=event_id, timestamp=START
            )
        assert client.flush().duplicates == 10
        with pytest.raises(TypeError):
            client.report(user=user, service="maps", metric="calls", value=0.5)  # type: ignore[arg-type]
    assert _stored(ctx) == 2500
    assert ctx.run(parties.get_balance, SYSTEM, user).posted == Decimal("97.5")


def test_authorizations_through_the_client(server: LiveServer, setup: tuple[str, str]) -> None:
    key, user = setup
    with BillfoldClient(server.url, key, flush_interval_s=None) as client:
        decision = client.authorize(user=user, service="maps", metric="calls", quantity=1000)
        assert (decision["status"], decision["amount"]) == ("approved", "1.00")
        assert client.capture(decision["id"], quantity=400)["status"] == "captured"
        refused = client.authorize(user=user, amount="1000")
        assert refused["status"] == "declined"
        assert client.entitlements(user, "maps")["has_access"]
        with pytest.raises(BillfoldClientError) as error:
            client.capture("auth_nothing")
        assert error.value.status == 404


def test_pending_events_are_sent_at_exit(
    ctx: Context, server: LiveServer, setup: tuple[str, str]
) -> None:
    key, user = setup
    script = textwrap.dedent(f"""
        from datetime import datetime
        from billfold.client import BillfoldClient
        start = datetime.fromisoformat({START.isoformat()!r})
        client = BillfoldClient({server.url!r}, {key!r}, flush_interval_s=None)
        for n in range(25):
            client.report(user={user!r}, service="maps", metric="calls", event_id=f"exit-{{n}}",
                          timestamp=start)
        # No flush, no close: the interpreter exits with 25 events buffered.
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    assert _stored(ctx) == 25
