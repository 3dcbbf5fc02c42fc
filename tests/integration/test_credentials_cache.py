"""Who is asking is remembered for at most a second: a revoked key or an ended session
stops at once in the process that ended it, and within the cache's lifetime in every
other process on the same database."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from billfold.clock import TestClock
from billfold.core import keys, sessions
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.credentials import Credentials
from billfold.domain.errors import AuthenticationFailed
from billfold.store.tables import logins
from tests.conftest import make_context


def _other_process(ctx: Context, tmp_path: Path) -> Context:
    """A second server process: its own context and cache, the same database."""
    assert isinstance(ctx.clock, TestClock)
    return make_context(ctx.db.url, tmp_path / "other", ctx.clock)


def test_a_key_is_looked_up_once_a_second(ctx: Context) -> None:
    _, secret = ctx.run(keys.create_key, SYSTEM, role=Role.ADMIN)
    first = keys.authenticate(ctx, secret)
    assert keys.remembered(ctx, secret) == first  # No database read for the next request.
    assert keys.remembered(ctx, secret + "x") is None
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(ctx, secret + "x")
    assert keys.remembered(ctx, secret + "x") is None  # Failures are never remembered.


def test_a_revoked_key_stops_at_once_here_and_within_the_lifetime_elsewhere(
    ctx: Context, tmp_path: Path
) -> None:
    other = _other_process(ctx, tmp_path)
    try:
        key, secret = ctx.run(keys.create_key, SYSTEM, role=Role.ADMIN)
        keys.authenticate(ctx, secret)
        keys.authenticate(other, secret)
        revoked_at = time.monotonic()
        ctx.run(keys.revoke_key, SYSTEM, key.id)
        with pytest.raises(AuthenticationFailed):
            keys.authenticate(ctx, secret)  # This process forgot it on commit.
        # The other process trusts what it read for at most its cache's lifetime.
        while True:
            try:
                keys.authenticate(other, secret)
            except AuthenticationFailed:
                break
            assert time.monotonic() - revoked_at <= other.settings.auth_cache_s + 0.2
            time.sleep(0.05)
        assert other.settings.auth_cache_s <= 1
    finally:
        other.db.dispose()


def test_a_remembered_key_still_expires_on_time(ctx: Context, clock: TestClock) -> None:
    _, secret = ctx.run(
        keys.create_key, SYSTEM, role=Role.ADMIN, expires_at=ctx.clock.now() + timedelta(minutes=1)
    )
    keys.authenticate(ctx, secret)
    clock.advance(minutes=2)
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(ctx, secret)


def test_an_ended_session_stops_at_once(ctx: Context) -> None:
    login_id = "lgn_cache"
    with ctx.work() as work:
        work.conn.execute(
            logins.insert().values(
                id=login_id, role="admin", email_enc="x", email_index="cache@x", locale="en",
                password_hash="-", status="active", created_at=ctx.clock.now(),
            )
        )  # fmt: skip
        opened = sessions.open_session(work, login_id, address=None)
        work.commit()
    assert sessions.authenticate_session(ctx, opened.token).login_id == login_id
    assert sessions.remembered(ctx, opened.token) is not None
    ctx.run(sessions.revoke, opened.view.id)
    assert sessions.remembered(ctx, opened.token) is None
    with pytest.raises(AuthenticationFailed):
        sessions.authenticate_session(ctx, opened.token)


def test_a_lookup_that_started_before_a_revocation_is_not_kept() -> None:
    """A request that read a key just before another revoked it must not put the old
    answer back after the revocation emptied the cache."""
    cache = Credentials(1.0)
    started = cache.generation
    cache.clear()  # A revocation committed meanwhile.
    cache.put("key:x", "principal", started)
    assert cache.get("key:x") is None
    cache.put("key:x", "principal", cache.generation)
    assert cache.get("key:x") == "principal"
