"""People: sign-up, email verification, login and logout, password resets.

A login is an email and a password (an Argon2 hash) for one principal: a user, a provider
or the operator. Signing up as a user makes a prepaid user; as a provider, a provider
application that stays `pending` until an admin approves it. Either way the address is
confirmed by a mailed link before the login works. Failed logins are throttled per
account and per address; a wrong email and a wrong password get the same answer.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from billfold import parties
from billfold.core import audit, mail, sessions
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Work
from billfold.core.text import clean_email, clean_text
from billfold.domain.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
)
from billfold.ids import new_id
from billfold.store.tables import login_tokens, logins
from billfold.store.tables import sessions as session_rows

MIN_PASSWORD: Final = 10
MAX_PASSWORD: Final = 200
LOCALES: Final = ("en", "zh-CN")
VERIFY_TTL: Final = timedelta(days=2)
RESET_TTL: Final = timedelta(hours=1)
_HASHERS: Final = {
    "rfc_9106_low_memory": PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY),
    "cheapest": PasswordHasher.from_parameters(profiles.CHEAPEST),
}
# A hash to verify against when the email is unknown, so that both take as long: one per
# profile, since verifying costs what the hash's own parameters say.
_DUMMIES: Final = {name: h.hash(secrets.token_urlsafe(16)) for name, h in _HASHERS.items()}


def _hasher(work: Work) -> PasswordHasher:
    """New hashes use the configured parameters; a hash is verified with its own."""
    return _HASHERS[work.settings.password_hash_profile]


@dataclass(frozen=True, slots=True)
class SignedUp:
    id: str
    kind: str
    status: str


@dataclass(frozen=True, slots=True)
class LoggedIn:
    principal: Principal
    session: sessions.NewSession
    locale: str


def _password(value: object) -> str:
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise InvalidRequest(
            f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters", param="password"
        )
    return value


def _locale(value: object) -> str:
    if value is None:
        return "en"
    if value not in LOCALES:
        raise InvalidRequest('locale is "en" or "zh-CN"', param="locale")
    return str(value)


def _mail_token(work: Work, login_id: str, purpose: str, ttl: timedelta) -> str:
    token = secrets.token_urlsafe(32)
    now = work.clock.now()
    work.conn.execute(
        login_tokens.insert().values(
            token_hash=sessions.token_hash(token),
            login_id=login_id,
            purpose=purpose,
            created_at=now,
            expires_at=now + ttl,
            used_at=None,
        )
    )
    return token


def _send_at_commit(work: Work, to: str, subject: str, text: str) -> None:
    """Mails at commit: a refused request sends nothing, and a mail that cannot be sent
    refuses the request (its link would lead nowhere)."""
    settings = work.settings
    work.before_commit(f"mail:{new_id('msg')}", lambda: mail.send(settings, to, subject, text))


def _verification_mail(work: Work, login_id: str, email: str, locale: str) -> None:
    token = _mail_token(work, login_id, "verify", VERIFY_TTL)
    link = f"{work.settings.public_url.rstrip('/')}/verify?token={token}"
    if locale == "zh-CN":
        subject = "确认您的 billfold 邮箱"
        text = f"请打开以下链接确认您的邮箱地址：\n\n{link}\n"
    else:
        subject = "Confirm your billfold email address"
        text = f"Open this link to confirm your email address:\n\n{link}\n"
    _send_at_commit(work, email, subject, text)


def signup(
    work: Work,
    *,
    kind: object,
    name: object,
    email: object,
    password: object,
    currency: object = None,
    locale: object = None,
) -> SignedUp:
    """A user (prepaid) or a provider application, and its login, to be verified."""
    if kind not in ("user", "provider"):
        raise InvalidRequest('kind is "user" or "provider"', param="kind")
    address = clean_email(email)
    secret = _password(password)
    language = _locale(locale)
    display = clean_text(name, param="name", max_length=200)
    assert display is not None
    index = work.cipher.blind_index(address.lower())
    if work.conn.execute(select(logins.c.id).where(logins.c.email_index == index)).first():
        raise Conflict("an account with this email exists; log in instead", code="email_taken")
    now = work.clock.now()
    if kind == "user":
        user = parties.create_user(
            work,
            SYSTEM,
            name=display,
            email=address,
            currency_code=str(currency or "USD"),
        )
        party: dict[str, Any] = {"role": "user", "user_id": user.id, "provider_id": None}
        signed = SignedUp(user.id, "user", "active")
    else:
        provider = parties.create_provider(
            work,
            SYSTEM,
            name=display,
            email=address,
            commission_rate=work.settings.default_commission_rate,
            status="pending",
        )
        party = {"role": "provider", "user_id": None, "provider_id": provider.id}
        signed = SignedUp(provider.id, "provider", "pending")
    login_id = new_id("lgn")
    try:
        work.conn.execute(
            logins.insert().values(
                id=login_id,
                email_enc=work.cipher.encrypt(address, context="logins.email"),
                email_index=index,
                password_hash=_hasher(work).hash(secret),
                status="unverified",
                locale=language,
                created_at=now,
                verified_at=None,
                password_changed_at=now,
                **party,
            )
        )
    except IntegrityError:
        raise Conflict(
            "an account with this email exists; log in instead", code="email_taken"
        ) from None
    _verification_mail(work, login_id, address, language)
    actor = Principal(login_id, Role(party["role"]), party["provider_id"], party["user_id"])
    audit.record(work, actor, "login.signed_up", signed.kind, signed.id, at=now)
    return signed


def _use_token(work: Work, token: object, purpose: str) -> Any:
    """The login a mailed token is for, marking the token used; expired, used and
    unknown tokens are refused alike."""
    if not isinstance(token, str) or not 1 <= len(token) <= 200:
        raise InvalidRequest("this link is not valid", code="invalid_token", param="token")
    now = work.clock.now()
    row = work.conn.execute(
        select(login_tokens)
        .where(
            login_tokens.c.token_hash == sessions.token_hash(token),
            login_tokens.c.purpose == purpose,
        )
        .with_for_update()
    ).one_or_none()
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise InvalidRequest(
            "this link has expired or was already used; ask for a new one",
            code="invalid_token",
            param="token",
        )
    work.conn.execute(
        update(login_tokens).where(login_tokens.c.token_hash == row.token_hash).values(used_at=now)
    )
    return work.conn.execute(select(logins).where(logins.c.id == row.login_id)).one()


def verify_email(work: Work, *, token: object) -> str:
    login = _use_token(work, token, "verify")
    now = work.clock.now()
    work.conn.execute(
        update(logins)
        .where(logins.c.id == login.id)
        .values(status="active", verified_at=login.verified_at or now)
    )
    audit.record(work, _principal(login), "login.verified", "login", login.id, at=now)
    return "verified"


def _principal(login: Any) -> Principal:
    return Principal(login.id, Role(login.role), login.provider_id, login.user_id)


_LIMITERS: dict[tuple[str | None, str], FixedWindowRateLimiter] = {}


def _limiter(work: Work) -> FixedWindowRateLimiter:
    """Failed-login counts: in memory for one process, in Redis for several; one count
    per database, since accounts are a database's."""
    key = (work.settings.redis_url, work.settings.resolved_database_url())
    found = _LIMITERS.get(key)
    if found is None:
        storage = storage_from_string(work.settings.redis_url or "memory://")
        found = _LIMITERS[key] = FixedWindowRateLimiter(storage)
    return found


def _throttle_keys(work: Work, index: str, address: str | None) -> list[tuple[Any, str]]:
    per_account = parse(work.settings.login_throttle)
    per_address = type(per_account)(per_account.amount * 5, per_account.multiples)
    # The database's URL may hold a password: the keys name a hash of it.
    database = hashlib.sha256(work.settings.resolved_database_url().encode()).hexdigest()[:16]
    found = [(per_account, f"{database}:account:{index}")]
    if address:
        found.append((per_address, f"{database}:address:{address}"))
    return found


def login(work: Work, *, email: object, password: object, address: str | None = None) -> LoggedIn:
    """A session for the login, if the email and password match and the address is
    confirmed. Every mismatch is the same 401; repeated failures are a 429."""
    if not isinstance(email, str) or not isinstance(password, str):
        raise InvalidRequest("give an email and a password", param="email")
    index = work.cipher.blind_index(email.strip().lower())
    limiter = _limiter(work)
    keys = _throttle_keys(work, index, address)
    if any(not limiter.test(limit, "login", key) for limit, key in keys):
        raise RateLimited("too many failed logins; wait a minute and try again")
    row = work.conn.execute(select(logins).where(logins.c.email_index == index)).one_or_none()
    try:
        dummy = _DUMMIES[work.settings.password_hash_profile]
        _hasher(work).verify(row.password_hash if row is not None else dummy, password)
        matched = row is not None
    except (VerificationError, InvalidHashError):
        matched = False
    if not matched:
        for limit, key in keys:
            limiter.hit(limit, "login", key)
        raise AuthenticationFailed("the email or the password is wrong", code="invalid_credentials")
    assert row is not None
    if row.status != "active":
        raise PermissionDenied(
            "confirm your email address first: open the link we mailed you",
            code="email_not_verified",
        )
    opened = sessions.open_session(work, row.id, address=address)
    audit.record(
        work, _principal(row), "session.created", "session", opened.view.id,
        at=work.clock.now(),
    )  # fmt: skip
    return LoggedIn(_principal(row), opened, row.locale)


def logout(work: Work, principal: Principal) -> None:
    if not principal.key_id.startswith("ses_"):
        raise InvalidRequest("this request was not made with a session", code="not_a_session")
    sessions.revoke(work, principal.key_id)
    audit.record(
        work, principal, "session.revoked", "session", principal.key_id, at=work.clock.now()
    )


def list_sessions(work: Work, principal: Principal) -> list[sessions.SessionView]:
    """The asker's own open sessions (a session's login, or every login of its party)."""
    table = session_rows
    now = work.clock.now()
    query = select(table).join(logins, logins.c.id == table.c.login_id)
    if principal.role == Role.USER:
        query = query.where(logins.c.user_id == principal.user_id)
    elif principal.role == Role.PROVIDER:
        query = query.where(logins.c.provider_id == principal.provider_id)
    else:
        query = query.where(logins.c.role == "admin")
    rows = work.conn.execute(
        query.where(table.c.revoked_at.is_(None), table.c.expires_at > now).order_by(
            table.c.created_at.desc()
        )
    )
    return [sessions.SessionView(r.id, r.created_at, r.expires_at, r.address) for r in rows]


def request_reset(work: Work, *, email: object) -> None:
    """Mails a reset link if a login has this address; the answer is the same either way."""
    address = clean_email(email)
    row = work.conn.execute(
        select(logins).where(logins.c.email_index == work.cipher.blind_index(address.lower()))
    ).one_or_none()
    if row is None:
        return
    token = _mail_token(work, row.id, "reset", RESET_TTL)
    link = f"{work.settings.public_url.rstrip('/')}/reset?token={token}"
    if row.locale == "zh-CN":
        subject, text = (
            "重置您的 billfold 密码",
            f"请在一小时内打开以下链接设置新密码：\n\n{link}\n",
        )
    else:
        subject = "Reset your billfold password"
        text = f"Open this link within an hour to choose a new password:\n\n{link}\n"
    _send_at_commit(work, address, subject, text)


def reset_password(work: Work, *, token: object, password: object) -> None:
    """A new password from a reset link; every session of the login ends."""
    secret = _password(password)
    login = _use_token(work, token, "reset")
    now = work.clock.now()
    work.conn.execute(
        update(logins)
        .where(logins.c.id == login.id)
        .values(
            password_hash=_hasher(work).hash(secret),
            password_changed_at=now,
            # The mailed link proves the address, as a verification would.
            status="active",
            verified_at=login.verified_at or now,
        )
    )
    sessions.revoke_all(work, login.id)
    audit.record(work, _principal(login), "login.password_reset", "login", login.id, at=now)
