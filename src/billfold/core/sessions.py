"""Console sessions: a person's login held in an HttpOnly cookie, resolved to the same
`Principal` an API key gives, so every service rule applies unchanged.

Sessions live on the server (revocable, expiring); the cookie holds only a random token,
and the table only its hash. A state-changing request made with a session must carry the
session's CSRF token in `X-CSRF-Token`: a page of another site can make the browser send
the cookie, but cannot read the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import select, update

from billfold.core.access import Principal, Role
from billfold.core.context import Context, Work
from billfold.domain.errors import AuthenticationFailed
from billfold.ids import new_id
from billfold.store.tables import logins, providers, sessions

COOKIE: Final = "billfold_session"
SECURE_COOKIE: Final = "__Host-billfold_session"
"""The cookie's name over TLS: the prefix makes browsers insist on Secure, Path=/ and no
Domain, so no other site or subdomain can set it."""
CSRF_HEADER: Final = "x-csrf-token"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_for(token: str) -> str:
    """A session's CSRF token, derived from its secret cookie: the console's own pages
    can put it in their forms without storing it, and no other site can know it."""
    return hashlib.sha256(b"billfold/csrf:" + token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionView:
    id: str
    created_at: datetime
    expires_at: datetime
    address: str | None


@dataclass(frozen=True, slots=True)
class NewSession:
    view: SessionView
    token: str
    """The cookie's value: shown once, stored only as its hash."""
    csrf_token: str


@dataclass(frozen=True, slots=True)
class Resolved:
    principal: Principal
    csrf_hash: str
    pending: bool
    """A provider still waiting for the operator's approval: it may only look."""
    login_id: str = ""
    locale: str = "en"


def open_session(work: Work, login_id: str, *, address: str | None) -> NewSession:
    now = work.clock.now()
    token = secrets.token_urlsafe(32)
    csrf = csrf_for(token)
    view = SessionView(
        new_id("ses"), now, now + timedelta(seconds=work.settings.session_ttl_s), address
    )
    work.conn.execute(
        sessions.insert().values(
            id=view.id,
            token_hash=token_hash(token),
            csrf_hash=token_hash(csrf),
            login_id=login_id,
            created_at=now,
            expires_at=view.expires_at,
            revoked_at=None,
            address=address,
        )
    )
    return NewSession(view, token, csrf)


def revoke(work: Work, session_id: str) -> None:
    work.credentials_changed()
    work.conn.execute(
        update(sessions)
        .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
        .values(revoked_at=work.clock.now())
    )


def revoke_all(work: Work, login_id: str) -> None:
    work.credentials_changed()
    work.conn.execute(
        update(sessions)
        .where(sessions.c.login_id == login_id, sessions.c.revoked_at.is_(None))
        .values(revoked_at=work.clock.now())
    )


def authenticate_session(ctx: Context, token: str) -> Resolved:
    """The principal of a session cookie; refuses unknown, revoked and expired ones alike.

    Kept, as API keys are, for at most `BILLFOLD_AUTH_CACHE_S` (billfold.core.credentials)."""
    resolved = remembered(ctx, token)
    if resolved is not None:
        return resolved
    generation = ctx.credentials.generation
    found = _look_up(ctx, token, ctx.clock.now())
    ctx.credentials.put("session:" + token_hash(token), found, generation)
    return found[0]


def remembered(ctx: Context, token: str) -> Resolved | None:
    """The session looked up less than a cache lifetime ago, or None to look it up."""
    if not token or len(token) > 200:
        raise AuthenticationFailed("your session has ended; log in again", code="session_ended")
    found: tuple[Resolved, datetime] | None = ctx.credentials.get("session:" + token_hash(token))
    if found is None:
        return None
    if found[1] <= ctx.clock.now():
        raise AuthenticationFailed("your session has ended; log in again", code="session_ended")
    return found[0]


def _look_up(ctx: Context, token: str, now: datetime) -> tuple[Resolved, datetime]:
    with ctx.db.unit_of_work(read_only=True) as uow:
        row: Any = uow.conn.execute(
            select(
                sessions.c.id,
                sessions.c.csrf_hash,
                sessions.c.expires_at,
                sessions.c.revoked_at,
                logins.c.id.label("login_id"),
                logins.c.locale,
                logins.c.role,
                logins.c.user_id,
                logins.c.provider_id,
                logins.c.status,
                providers.c.status.label("provider_status"),
            )
            .join(logins, logins.c.id == sessions.c.login_id)
            .outerjoin(providers, providers.c.id == logins.c.provider_id)
            .where(sessions.c.token_hash == token_hash(token))
        ).one_or_none()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise AuthenticationFailed("your session has ended; log in again", code="session_ended")
    principal = Principal(
        key_id=row.id,
        role=Role(row.role),
        provider_id=row.provider_id,
        user_id=row.user_id,
    )
    resolved = Resolved(
        principal,
        row.csrf_hash,
        row.provider_status in ("pending", "rejected"),
        row.login_id,
        row.locale,
    )
    return resolved, row.expires_at


def csrf_matches(resolved: Resolved, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(token_hash(given), resolved.csrf_hash)
