"""Refused events are noted for their sender's debugger, within bounds: 100 a request,
1,000 a provider, a week; and the note never costs the request its answer."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from billfold import metering, parties
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context
from billfold.metering import service as metering_service
from billfold.store.tables import event_rejections


def _count(ctx: Context, provider_id: str | None = None) -> int:
    query = select(func.count()).select_from(event_rejections)
    if provider_id is not None:
        query = query.where(event_rejections.c.provider_id == provider_id)
    with ctx.db.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _bad(n: int, tag: str) -> list[dict[str, str]]:
    return [{"id": f"{tag}-{i}", "user": "usr_nobody"} for i in range(n)]


def test_notes_are_bounded_per_request_per_provider_and_in_time(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metering_service, "KEEP_PER_SENDER", 150)
    made = [
        ctx.run(parties.create_provider, SYSTEM, name=n, email=f"{n}@p.io", commission_rate="0.1")
        for n in ("a", "b")
    ]
    keys = [Principal(f"key_{p.id}", Role.PROVIDER, p.id) for p in made]
    result = metering.ingest(ctx, keys[0], _bad(500, "a"))
    assert len(result.rejected) == 500  # Every refusal is answered ...
    assert _count(ctx, made[0].id) == 100  # ... the first 100 are noted.
    metering.ingest(ctx, keys[0], _bad(120, "a2"))
    assert _count(ctx, made[0].id) == 150  # The newest 150 of this sender are kept,
    metering.ingest(ctx, keys[1], _bad(3, "b"))
    assert _count(ctx, made[1].id) == 3  # and another sender's are its own.
    with ctx.db.engine.connect() as conn:
        newest = conn.execute(
            select(event_rejections.c.event_id).order_by(event_rejections.c.id.desc()).limit(1)
        ).scalar_one()
    assert newest == "b-2"
    ctx.clock.advance(days=8)
    metering.ingest(ctx, keys[1], _bad(1, "later"))
    assert _count(ctx) == 1  # A week on, the old notes are gone.
