"""People: sign-up, email verification, login and logout, password resets.

A login is an email and a password (an Argon2 hash) for one principal: a user, a provider
or the operator. Signing up as a user makes a prepaid user; as a provider, a provider
application that stays `pending` until an admin approves it. Either way the address is
confirmed by a mailed link before the login works. Failed logins are throttled per
account and per address; a wrong email and a wrong password get the same answer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import pyotp
from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from billfold import parties
from billfold.core import audit, mail, sessions
from billfold.core.access import SYSTEM, Principal, Role, require_admin
from billfold.core.context import Work
from billfold.core.text import clean_email, clean_text
from billfold.domain.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
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
INVITE_TTL: Final = timedelta(days=7)
TOTP_STEP: Final = 30
NO_PASSWORD: Final = "!"  # noqa: S105 (not a password: a hash that nothing matches)
"""The hash of a login that has no password yet (an invited member): nothing matches it."""
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


def _free_address(work: Work, email: object) -> tuple[str, str]:
    """The cleaned address and its blind index, when no login has it yet (else a 409)."""
    address = clean_email(email)
    index = work.cipher.blind_index(address.lower())
    if work.conn.execute(select(logins.c.id).where(logins.c.email_index == index)).first():
        raise Conflict("an account with this email exists; log in instead", code="email_taken")
    return address, index


def _insert_login(
    work: Work,
    address: str,
    index: str,
    *,
    role: str,
    status: str,
    password_hash: str,
    user_id: str | None = None,
    provider_id: str | None = None,
    locale: str = "en",
    totp_secret: str | None = None,
) -> str:
    """A new login row; an address taken meanwhile (a concurrent sign-up) is a 409."""
    now = work.clock.now()
    login_id = new_id("lgn")
    confirmed = status == "active"
    try:
        work.conn.execute(
            logins.insert().values(
                id=login_id,
                email_enc=work.cipher.encrypt(address, context="logins.email"),
                email_index=index,
                password_hash=password_hash,
                role=role,
                user_id=user_id,
                provider_id=provider_id,
                status=status,
                locale=locale,
                created_at=now,
                verified_at=now if confirmed else None,
                password_changed_at=None if password_hash == NO_PASSWORD else now,
                totp_secret_enc=None
                if totp_secret is None
                else work.cipher.encrypt(totp_secret, context="logins.totp"),
            )
        )
    except IntegrityError:
        raise Conflict(
            "an account with this email exists; log in instead", code="email_taken"
        ) from None
    return login_id


def _mail_token(
    work: Work, login_id: str, purpose: str, ttl: timedelta, payload: str | None = None
) -> str:
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
            payload_enc=None
            if payload is None
            else work.cipher.encrypt(payload, context="login_tokens.payload"),
        )
    )
    return token


def _send_at_commit(work: Work, to: str, subject: str, text: str) -> None:
    """Mails at commit: a refused request sends nothing, and a mail that cannot be sent
    refuses the request (its link would lead nowhere)."""
    settings = work.settings
    work.before_commit(f"mail:{new_id('msg')}", lambda: mail.send(settings, to, subject, text))


def _verification_mail(
    work: Work, login_id: str, email: str, locale: str, *, change: bool = False
) -> None:
    token = _mail_token(
        work, login_id, "email" if change else "verify", VERIFY_TTL, email if change else None
    )
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
    secret = _password(password)
    language = _locale(locale)
    display = clean_text(name, param="name", max_length=200)
    assert display is not None
    address, index = _free_address(work, email)
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
    login_id = _insert_login(
        work,
        address,
        index,
        status="unverified",
        password_hash=_hasher(work).hash(secret),
        locale=language,
        **party,
    )
    _verification_mail(work, login_id, address, language)
    actor = Principal(login_id, Role(party["role"]), party["provider_id"], party["user_id"])
    audit.record(work, actor, "login.signed_up", signed.kind, signed.id, at=now)
    return signed


def _use_token(work: Work, token: object, *purposes: str) -> tuple[Any, Any]:
    """The login a mailed token is for, and the token, marking it used; expired, used
    and unknown tokens are refused alike."""
    if not isinstance(token, str) or not 1 <= len(token) <= 200:
        raise InvalidRequest("this link is not valid", code="invalid_token", param="token")
    now = work.clock.now()
    row = work.conn.execute(
        select(login_tokens)
        .where(
            login_tokens.c.token_hash == sessions.token_hash(token),
            login_tokens.c.purpose.in_(purposes),
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
    return work.conn.execute(select(logins).where(logins.c.id == row.login_id)).one(), row


def verify_email(work: Work, *, token: object) -> str:
    """Confirms an address: a new login's, or the new one of an email change."""
    login, row = _use_token(work, token, "verify", "email")
    now = work.clock.now()
    values: dict[str, Any] = {"status": "active", "verified_at": login.verified_at or now}
    if row.purpose == "email":
        address = work.cipher.decrypt(row.payload_enc, context="login_tokens.payload")
        index = work.cipher.blind_index(address.lower())
        taken = work.conn.execute(
            select(logins.c.id).where(logins.c.email_index == index, logins.c.id != login.id)
        ).first()
        if taken:
            raise Conflict("another account has this email now", code="email_taken")
        values |= {
            "email_enc": work.cipher.encrypt(address, context="logins.email"),
            "email_index": index,
        }
    work.conn.execute(update(logins).where(logins.c.id == login.id).values(**values))
    action = "login.email_changed" if row.purpose == "email" else "login.verified"
    audit.record(work, _principal(login), action, "login", login.id, at=now)
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


def login(
    work: Work,
    *,
    email: object,
    password: object,
    totp: object = None,
    address: str | None = None,
) -> LoggedIn:
    """A session for the login, if the email and password match, the address is
    confirmed and, where the login has a second factor, the code is right. Every
    mismatch is the same 401; repeated failures are a 429."""
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
    if row.totp_secret_enc is not None:
        if not isinstance(totp, str) or not totp.strip():
            raise AuthenticationFailed(
                "enter the 6-digit code from your authenticator app", code="totp_required"
            )
        step = _totp_step(work, row.totp_secret_enc, totp, row.totp_last_step)
        if step is None:
            for limit, key in keys:
                limiter.hit(limit, "login", key)
            raise AuthenticationFailed(
                "the code from your authenticator app is wrong or was already used",
                code="invalid_totp",
            )
        # Claimed by a conditional update: of two logins racing with one code, one wins.
        claimed = work.conn.execute(
            update(logins)
            .where(
                logins.c.id == row.id,
                (logins.c.totp_last_step.is_(None)) | (logins.c.totp_last_step < step),
            )
            .values(totp_last_step=step)
        )
        if claimed.rowcount != 1:
            raise AuthenticationFailed(
                "the code from your authenticator app is wrong or was already used",
                code="invalid_totp",
            )
    elif row.role == "admin":
        raise PermissionDenied(
            "an operator login needs a second factor: make it with 'billfold admins create'",
            code="totp_setup_required",
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


def _password_from_link(work: Work, token: object, password: object, purpose: str) -> Any:
    """Sets the password of the login a mailed link is for; the link proves the address,
    as a verification would. Answers the login as it was."""
    secret = _password(password)
    login, _row = _use_token(work, token, purpose)
    now = work.clock.now()
    work.conn.execute(
        update(logins)
        .where(logins.c.id == login.id)
        .values(
            password_hash=_hasher(work).hash(secret),
            password_changed_at=now,
            status="active",
            verified_at=login.verified_at or now,
        )
    )
    return login


def reset_password(work: Work, *, token: object, password: object) -> None:
    """A new password from a reset link; every session of the login ends."""
    login = _password_from_link(work, token, password, "reset")
    sessions.revoke_all(work, login.id)
    audit.record(work, _principal(login), "login.password_reset", "login", login.id,
                 at=work.clock.now())  # fmt: skip


def _totp_step(work: Work, secret_enc: str, code: str, last_step: int | None) -> int | None:
    """The time step a code belongs to (this one or either neighbour, for clock drift),
    or None; a step at or before the last one used is refused, so a code works once."""
    secret = work.cipher.decrypt(secret_enc, context="logins.totp")
    totp = pyotp.TOTP(secret, interval=TOTP_STEP)
    now = work.clock.now().timestamp()
    given = code.strip().replace(" ", "")
    for offset in (0, -1, 1):
        moment = now + offset * TOTP_STEP
        step = int(moment // TOTP_STEP)
        if hmac.compare_digest(totp.at(moment), given) and (last_step is None or step > last_step):
            return step
    return None


def _own_login(work: Work, principal: Principal) -> Any:
    """The login behind a session; an API key is no person, and is refused."""
    if not principal.key_id.startswith("ses_"):
        raise InvalidRequest(
            "this is done by a person logged in to the console, not with an API key",
            code="not_a_session",
        )
    return work.conn.execute(
        select(logins)
        .join(session_rows, session_rows.c.login_id == logins.c.id)
        .where(session_rows.c.id == principal.key_id)
    ).one()


def _check_password(work: Work, login: Any, password: object) -> None:
    try:
        _hasher(work).verify(login.password_hash, password if isinstance(password, str) else "")
    except (VerificationError, InvalidHashError):
        raise AuthenticationFailed(
            "the current password is wrong", code="invalid_credentials"
        ) from None


def change_password(
    work: Work, principal: Principal, *, current_password: object, password: object
) -> None:
    """A new password; every other session of the login ends."""
    login = _own_login(work, principal)
    _check_password(work, login, current_password)
    secret = _password(password)
    now = work.clock.now()
    work.conn.execute(
        update(logins)
        .where(logins.c.id == login.id)
        .values(password_hash=_hasher(work).hash(secret), password_changed_at=now)
    )
    work.credentials_changed()
    work.conn.execute(
        update(session_rows)
        .where(
            session_rows.c.login_id == login.id,
            session_rows.c.id != principal.key_id,
            session_rows.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    audit.record(work, principal, "login.password_changed", "login", login.id, at=now)


def change_email(work: Work, principal: Principal, *, password: object, email: object) -> None:
    """Mails a link to the new address; the login keeps the old one until it is opened."""
    login = _own_login(work, principal)
    _check_password(work, login, password)
    address, _index = _free_address(work, email)
    _verification_mail(work, login.id, address, login.locale, change=True)
    audit.record(work, principal, "login.email_change_requested", "login", login.id,
                 at=work.clock.now())  # fmt: skip


def set_locale(work: Work, principal: Principal, *, locale: object) -> str:
    """The language of the person's console and mail, remembered in their login."""
    login = _own_login(work, principal)
    language = _locale(locale)
    work.conn.execute(update(logins).where(logins.c.id == login.id).values(locale=language))
    work.credentials_changed()
    return language


@dataclass(frozen=True, slots=True)
class TotpSetup:
    secret: str
    uri: str
    """An otpauth:// URI, for an authenticator app's QR code."""


def _totp_uri(work: Work, login: Any, secret: str) -> str:
    email = work.cipher.decrypt(login.email_enc, context="logins.email")
    return pyotp.TOTP(secret, interval=TOTP_STEP).provisioning_uri(
        name=email, issuer_name="billfold"
    )


def start_totp(work: Work, principal: Principal) -> TotpSetup:
    """A new secret, in force once a code from it is confirmed."""
    login = _own_login(work, principal)
    secret = pyotp.random_base32()
    work.conn.execute(
        update(logins)
        .where(logins.c.id == login.id)
        .values(totp_pending_enc=work.cipher.encrypt(secret, context="logins.totp"))
    )
    return TotpSetup(secret, _totp_uri(work, login, secret))


def confirm_totp(work: Work, principal: Principal, *, code: object) -> None:
    login = _own_login(work, principal)
    if login.totp_pending_enc is None:
        raise Conflict("start setting up the second factor first", code="totp_not_started")
    step = _totp_step(work, login.totp_pending_enc, str(code or ""), None)
    if step is None:
        raise InvalidRequest("the code is wrong; try the one showing now", param="code",
                             code="invalid_totp")  # fmt: skip
    now = work.clock.now()
    work.conn.execute(
        update(logins)
        .where(logins.c.id == login.id)
        .values(totp_secret_enc=login.totp_pending_enc, totp_pending_enc=None, totp_last_step=step)
    )
    audit.record(work, principal, "login.totp_enabled", "login", login.id, at=now)


def disable_totp(work: Work, principal: Principal, *, password: object) -> None:
    login = _own_login(work, principal)
    if login.role == "admin":
        raise PermissionDenied("an operator's second factor cannot be turned off",
                               code="totp_required_for_admins")  # fmt: skip
    _check_password(work, login, password)
    work.conn.execute(
        update(logins)
        .where(logins.c.id == login.id)
        .values(totp_secret_enc=None, totp_pending_enc=None, totp_last_step=None)
    )
    audit.record(work, principal, "login.totp_disabled", "login", login.id, at=work.clock.now())


@dataclass(frozen=True, slots=True)
class NewAdmin:
    login_id: str
    totp: TotpSetup


def create_admin(work: Work, *, email: object, password: object) -> NewAdmin:
    """An operator login, confirmed, with a second factor that its first login needs."""
    secret = _password(password)
    address, index = _free_address(work, email)
    now = work.clock.now()
    totp = pyotp.random_base32()
    login_id = _insert_login(
        work,
        address,
        index,
        role="admin",
        status="active",
        password_hash=_hasher(work).hash(secret),
        totp_secret=totp,
    )
    audit.record(work, SYSTEM, "login.admin_created", "login", login_id, at=now)
    row = work.conn.execute(select(logins).where(logins.c.id == login_id)).one()
    return NewAdmin(login_id, TotpSetup(totp, _totp_uri(work, row, totp)))


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    email: str
    status: str
    created_at: Any


def _member_provider(work: Work, principal: Principal, provider_id: str) -> None:
    if principal.role == Role.ADMIN:
        parties.get_provider(work, principal, provider_id)
        return
    if principal.role != Role.PROVIDER or principal.provider_id != provider_id:
        raise NotFound(f"no provider {provider_id}", code="provider_not_found")


def list_members(work: Work, principal: Principal, provider_id: str) -> list[Member]:
    """The logins of a provider's team, with their addresses: the team's own data."""
    _member_provider(work, principal, provider_id)
    rows = work.conn.execute(
        select(logins)
        .where(logins.c.provider_id == provider_id, logins.c.status != "removed")
        .order_by(logins.c.created_at)
    )
    return [
        Member(
            r.id, work.cipher.decrypt(r.email_enc, context="logins.email"), r.status, r.created_at
        )
        for r in rows
    ]


def remove_member(work: Work, principal: Principal, provider_id: str, member_id: str) -> None:
    """Takes a login off the provider's team: its sessions end at once, it can no longer
    log in, and its address is free to be invited again. The team keeps at least one
    active member, so a provider cannot lock itself out."""
    _member_provider(work, principal, provider_id)
    team = work.conn.execute(
        select(logins)
        .where(logins.c.provider_id == provider_id, logins.c.status != "removed")
        .with_for_update()
    ).all()
    member = next((m for m in team if m.id == member_id), None)
    if member is None:
        raise NotFound(f"no member {member_id}", code="member_not_found")
    if member.status == "active" and sum(m.status == "active" for m in team) == 1:
        raise Conflict("the team needs at least one active member", code="last_member")
    now = work.clock.now()
    work.conn.execute(
        update(logins)
        .where(logins.c.id == member.id)
        .values(
            status="removed",
            # The address is free again; the row stays for the audit trail.
            email_index=hashlib.sha256(f"removed:{member.id}".encode()).hexdigest(),
            password_hash=NO_PASSWORD,
            totp_secret_enc=None,
            totp_pending_enc=None,
        )
    )
    sessions.revoke_all(work, member.id)
    audit.record(work, principal, "login.member_removed", "provider", provider_id, at=now,
                 details={"login": member.id})  # fmt: skip


def invite_member(work: Work, principal: Principal, provider_id: str, *, email: object) -> Member:
    """Mails an invitation to join the provider's team; it holds for a week."""
    _member_provider(work, principal, provider_id)
    address, index = _free_address(work, email)
    now = work.clock.now()
    login_id = _insert_login(
        work,
        address,
        index,
        role="provider",
        status="invited",
        password_hash=NO_PASSWORD,
        provider_id=provider_id,
    )
    token = _mail_token(work, login_id, "invite", INVITE_TTL)
    link = f"{work.settings.public_url.rstrip('/')}/invite?token={token}"
    provider = parties.get_provider(work, SYSTEM, provider_id)
    subject = f"Join {provider.name} on billfold / 加入 {provider.name}"
    text = (
        f"You are invited to manage {provider.name} on billfold. Open this link within a "
        f"week to choose your password:\n\n{link}\n\n"
        f"您被邀请在 billfold 上管理 {provider.name}。请在一周内打开上面的链接设置密码。\n"
    )
    _send_at_commit(work, address, subject, text)
    audit.record(work, principal, "login.member_invited", "provider", provider_id, at=now,
                 details={"login": login_id})  # fmt: skip
    return Member(login_id, address, "invited", now)


def accept_invitation(work: Work, *, token: object, password: object) -> None:
    """The invited member's password; then they can log in."""
    login = _password_from_link(work, token, password, "invite")
    audit.record(work, _principal(login), "login.member_joined", "login", login.id,
                 at=work.clock.now())  # fmt: skip


def grant_login(
    work: Work,
    principal: Principal,
    *,
    email: object,
    password: object,
    user_id: str | None = None,
    provider_id: str | None = None,
    locale: object = None,
) -> str:
    """A confirmed login for an existing user or provider (an operator's act, as when
    loading the demo); the person logs in with it at once."""
    if principal.role != Role.ADMIN:
        raise PermissionDenied("only the operator grants logins", code="admin_only")
    if (user_id is None) == (provider_id is None):
        raise InvalidRequest("give a user or a provider", param="user_id")
    address, index = _free_address(work, email)
    now = work.clock.now()
    login_id = _insert_login(
        work,
        address,
        index,
        role="user" if user_id else "provider",
        status="active",
        password_hash=_hasher(work).hash(_password(password)),
        user_id=user_id,
        provider_id=provider_id,
        locale=_locale(locale),
    )
    audit.record(work, principal, "login.granted", "login", login_id, at=now)
    return login_id


@dataclass(frozen=True, slots=True)
class AccountView:
    login_id: str
    email: str
    locale: str
    totp_enabled: bool
    session_id: str


def account_of(work: Work, principal: Principal) -> AccountView:
    """The logged-in person's own login: address, language, second factor."""
    login = _own_login(work, principal)
    return AccountView(
        login.id,
        work.cipher.decrypt(login.email_enc, context="logins.email"),
        login.locale,
        login.totp_secret_enc is not None,
        principal.key_id,
    )


def revoke_session(work: Work, principal: Principal, session_id: str) -> None:
    """Ends one of the asker's party's sessions (another device, say); others' are not
    found."""
    if not any(s.id == session_id for s in list_sessions(work, principal)):
        raise NotFound(f"no open session {session_id}", code="session_not_found")
    sessions.revoke(work, session_id)
    audit.record(work, principal, "session.revoked", "session", session_id, at=work.clock.now())


_DECISIONS: Final = {
    ("active", "en"): ("Your billfold provider application is approved",
                       "{name} is approved: log in to publish your services and plans."),
    ("active", "zh-CN"): ("您的 billfold 服务商申请已获批准",
                          "{name} 已获批准：请登录发布您的服务和套餐。"),
    ("rejected", "en"): ("Your billfold provider application",
                         "The platform has turned down the application of {name}. "
                         "Reply to this mail to ask why."),
    ("rejected", "zh-CN"): ("您的 billfold 服务商申请",
                            "平台未批准 {name} 的申请。如有疑问，请回复此邮件。"),
}  # fmt: skip


def decide_application(work: Work, principal: Principal, provider_id: str, *, approve: bool) -> Any:
    """Approves or rejects a provider application, and tells the applicant by mail (in
    the language of each of its logins). Deciding again changes and mails nothing."""
    require_admin(principal)
    before = parties.get_provider(work, principal, provider_id)
    after = (
        parties.approve_provider(work, principal, provider_id)
        if approve
        else parties.reject_provider(work, principal, provider_id)
    )
    if before.status == "pending" and after.status != "pending":
        for login in work.conn.execute(
            select(logins).where(
                logins.c.provider_id == provider_id, logins.c.status.in_(("active", "unverified"))
            )
        ):
            subject, text = _DECISIONS[(after.status, login.locale)]
            address = work.cipher.decrypt(login.email_enc, context="logins.email")
            _send_at_commit(work, address, subject, text.format(name=after.name) + "\n")
    return after
