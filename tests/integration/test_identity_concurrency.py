"""People under concurrency on PostgreSQL: one account per address however many sign up
at once, a mailed link used once however many open it at once, a TOTP code accepted once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes

import pyotp
import pytest
from sqlalchemy import func, select

from billfold import identity, parties
from billfold.core.access import SYSTEM
from billfold.core.context import Context
from billfold.domain.errors import BillfoldError
from billfold.store.tables import logins, users

PASSWORD = "correct horse battery"
CLIENTS = 8


def _race(count: int, attempt: object) -> tuple[int, int]:
    """Runs `attempt` from `count` threads at once: (successes, refusals)."""
    barrier = threading.Barrier(count)
    done = refused = 0
    lock = threading.Lock()

    def one(index: int) -> None:
        nonlocal done, refused
        barrier.wait()
        try:
            attempt(index)  # type: ignore[operator]
        except BillfoldError:
            with lock:
                refused += 1
            return
        with lock:
            done += 1

    with ThreadPoolExecutor(count) as pool:
        list(pool.map(one, range(count)))
    return done, refused


@pytest.mark.postgres
def test_simultaneous_sign_ups_with_one_address_make_one_account(pg_ctx: Context) -> None:
    def sign_up(index: int) -> None:
        pg_ctx.run(identity.signup, kind="user", name=f"Twin {index}", email="twin@example.com",
                   password=PASSWORD)  # fmt: skip

    done, refused = _race(CLIENTS, sign_up)
    assert (done, refused) == (1, CLIENTS - 1)
    with pg_ctx.db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(logins)).scalar_one() == 1
        # A refused sign-up left no user behind: each request is all or nothing.
        assert conn.execute(select(func.count()).select_from(users)).scalar_one() == 1


@pytest.mark.postgres
def test_an_invitation_opened_at_once_in_many_tabs_is_accepted_once(pg_ctx: Context) -> None:
    provider = pg_ctx.run(parties.create_provider, SYSTEM, name="P", email="p@example.com",
                          commission_rate="0.1")  # fmt: skip
    pg_ctx.run(identity.invite_member, SYSTEM, provider.id, email="m@example.com")
    (written,) = (pg_ctx.settings.home / "mail").glob("*.eml")
    body = message_from_bytes(written.read_bytes()).get_payload(decode=True)
    assert isinstance(body, bytes)
    token = body.decode().split("/invite?token=")[1].split()[0]

    def accept(index: int) -> None:
        pg_ctx.run(identity.accept_invitation, token=token, password=f"{PASSWORD} {index}")

    done, refused = _race(CLIENTS, accept)
    assert (done, refused) == (1, CLIENTS - 1)


@pytest.mark.postgres
def test_one_totp_code_logs_in_once_however_many_try_it(pg_ctx: Context) -> None:
    made = pg_ctx.run(identity.create_admin, email="op@example.com", password=PASSWORD)
    code = pyotp.TOTP(made.totp.secret).at(pg_ctx.clock.now())

    def log_in(_index: int) -> None:
        pg_ctx.run(identity.login, email="op@example.com", password=PASSWORD, totp=code)

    done, refused = _race(4, log_in)
    assert done == 1 and refused == 3
