"""What the browser journeys start from: a provider selling a maps API."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from billfold import catalog, metering, parties
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.keys import create_key

PAYG = {
    "code": "maps-payg", "name": "Maps pay as you go", "service": "maps", "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "graduated", "tiers": [
        {"up_to": 1000, "unit_price": "0"}, {"up_to": None, "unit_price": "0.002"}]}],
}  # fmt: skip
PRO = {
    "code": "maps-pro", "name": "Maps Pro", "service": "maps", "currency": "USD",
    "interval": "month", "fixed_fee": "10",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.01", "free_units": "5"}],
}  # fmt: skip


@dataclass
class Maps:
    provider_id: str
    provider_key: str


def maps_provider(ctx: Context) -> Maps:
    with ctx.work() as work:
        made = parties.create_provider(
            work, SYSTEM, name="Atlas Maps", email="atlas@example.com", commission_rate="0.2"
        )
        catalog.create_service(work, SYSTEM, code="maps", name="Maps API", provider_id=made.id)
        catalog.create_metric(work, SYSTEM, "maps", code="calls", name="API calls",
                              aggregation="count")  # fmt: skip
        catalog.create_plan(work, SYSTEM, PAYG)
        catalog.create_plan(work, SYSTEM, PRO)
        metering.set_default_plan(work, SYSTEM, "maps", "maps-payg")
        work.commit()
    _key, secret = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=made.id)
    return Maps(made.id, secret)


def send_calls(base: str, key: str, user_id: str, values: list[int], at: str) -> None:
    """Usage, as the provider's program reports it: through the API."""
    events = [
        {"id": f"call-{user_id}-{n}", "user": user_id, "service": "maps", "metric": "calls",
         "timestamp": at, "value": str(v)}
        for n, v in enumerate(values)
    ]  # fmt: skip
    answer = httpx.post(
        f"{base}/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == len(values), answer.text
