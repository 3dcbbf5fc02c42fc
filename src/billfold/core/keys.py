"""API keys: random secrets shown once, stored as SHA-256 hashes, each with one role."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import select, update

from billfold.core import audit
from billfold.core.access import Principal, Role
from billfold.core.context import Context, Work
from billfold.domain.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from billfold.ids import new_id
from billfold.store.tables import api_keys, providers, users

MAX_KEY_LENGTH = 200


SCOPES: Final = ("read_only", "gateway")
"""read_only: GET only. gateway: usage events, authorizations and entitlements only."""
MAX_GRACE_S: Final = 7 * 86400


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    role: Role
    provider_id: str | None
    user_id: str | None
    name: str | None
    hint: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None
    scopes: tuple[str, ...] | None = None
    last_used_at: datetime | None = None

    @property
    def prefix(self) -> str:
        """What identifies the key to a person: its kind and last characters."""
        return f"bf_{self.role.value}_…{self.hint}"


def _hash(secret: str) -> str:
    # The secrets carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def _view(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        role=Role(row.role),
        provider_id=row.provider_id,
        user_id=row.user_id,
        name=row.name,
        hint=row.hint,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
        scopes=tuple(row.scopes.split(",")) if row.scopes else None,
        last_used_at=row.last_used_at,
    )


def _owner(
    principal: Principal, role: Role | None, provider_id: str | None, user_id: str | None
) -> tuple[Role, str | None, str | None]:
    """The role and party of a new key: any for the operator; a provider or a user makes
    keys only for itself, so never an admin key."""
    if principal.is_admin:
        return role or Role.ADMIN, provider_id, user_id
    mine = (principal.role, principal.provider_id, principal.user_id)
    asked = (role or mine[0], provider_id or mine[1], user_id or mine[2])
    if asked != mine:
        raise PermissionDenied(
            "a key can make keys only for its own provider or user", code="role_not_allowed"
        )
    return mine


def _check_binding(work: Work, role: Role, provider_id: str | None, user_id: str | None) -> None:
    if role == Role.PROVIDER and (provider_id is None or user_id is not None):
        raise InvalidRequest(
            "a provider key needs provider_id (and no user_id)", param="provider_id"
        )
    if role == Role.USER and (user_id is None or provider_id is not None):
        raise InvalidRequest("a user key needs user_id (and no provider_id)", param="user_id")
    if role == Role.ADMIN and (user_id is not None or provider_id is not None):
        raise InvalidRequest("an admin key is bound to no provider or user", param="role")
    if (
        provider_id is not None
        and work.conn.execute(select(providers.c.id).where(providers.c.id == provider_id)).first()
        is None
    ):
        raise NotFound(f"no provider {provider_id}", code="provider_not_found", param="provider_id")
    if (
        user_id is not None
        and work.conn.execute(select(users.c.id).where(users.c.id == user_id)).first() is None
    ):
        raise NotFound(f"no user {user_id}", code="user_not_found", param="user_id")


def _scopes(scopes: Sequence[str] | None) -> tuple[str, ...] | None:
    if scopes is None:
        return None
    found = tuple(dict.fromkeys(scopes))
    wrong = [s for s in found if s not in SCOPES]
    if wrong or not found:
        raise InvalidRequest(
            f"scopes are some of {', '.join(SCOPES)}", code="invalid_request", param="scopes"
        )
    return found


def create_key(
    work: Work,
    principal: Principal,
    *,
    role: Role | None = None,
    provider_id: str | None = None,
    user_id: str | None = None,
    name: str | None = None,
    expires_at: datetime | None = None,
    scopes: Sequence[str] | None = None,
    rotated_from: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret is returned this once and never stored."""
    role, provider_id, user_id = _owner(principal, role, provider_id, user_id)
    _check_binding(work, role, provider_id, user_id)
    if name is not None and len(name) > 200:
        raise InvalidRequest("name may have at most 200 characters", param="name")
    now = work.clock.now()
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("expires_at must be in the future", param="expires_at")
    chosen = _scopes(scopes)
    secret = f"bf_{role.value}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        id=new_id("key"),
        role=role,
        provider_id=provider_id,
        user_id=user_id,
        name=name,
        hint=secret[-4:],
        created_at=now,
        revoked_at=None,
        expires_at=expires_at,
        scopes=chosen,
    )
    work.conn.execute(
        api_keys.insert().values(
            id=key.id,
            secret_hash=_hash(secret),
            hint=key.hint,
            role=str(role),
            provider_id=provider_id,
            user_id=user_id,
            name=name,
            created_at=now,
            revoked_at=None,
            expires_at=expires_at,
            scopes=",".join(chosen) if chosen else None,
            rotated_from=rotated_from,
        )
    )
    audit.record(
        work,
        principal,
        "api_key.created",
        "api_key",
        key.id,
        at=now,
        details={
            "role": str(role),
            "provider_id": provider_id,
            "user_id": user_id,
            "scopes": list(chosen) if chosen else None,
            "rotated_from": rotated_from,
        },
    )
    return key, secret


def _own(principal: Principal) -> Any:
    """The keys a principal may see and manage: all for the operator, else its party's."""
    if principal.is_admin:
        return api_keys.c.id.is_not(None)
    if principal.role == Role.PROVIDER:
        return api_keys.c.provider_id == principal.provider_id
    return api_keys.c.user_id == principal.user_id


def list_keys(work: Work, principal: Principal, *, limit: int = 100) -> list[ApiKey]:
    """The keys the asker may see, newest first; never a secret."""
    rows = work.conn.execute(
        select(api_keys).where(_own(principal)).order_by(api_keys.c.id.desc()).limit(limit)
    )
    return [_view(row) for row in rows]


def _load_own(work: Work, principal: Principal, key_id: str) -> Any:
    row = work.conn.execute(
        select(api_keys).where(api_keys.c.id == key_id, _own(principal))
    ).one_or_none()
    if row is None:
        raise NotFound(f"no key {key_id}", code="api_key_not_found")
    return row


def rotate_key(
    work: Work, principal: Principal, key_id: str, *, grace_s: int = 3600
) -> tuple[ApiKey, str]:
    """A new key in the old one's place (same role, party, name and scopes); the old one
    keeps working for `grace_s` seconds, so that clients can move over without a gap."""
    if not 0 <= grace_s <= MAX_GRACE_S:
        raise InvalidRequest(f"grace is 0 to {MAX_GRACE_S} seconds", param="grace_s")
    old = _load_own(work, principal, key_id)
    now = work.clock.now()
    if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
        raise Conflict("the key no longer works; create a new one", code="api_key_not_found")
    ends = now + timedelta(seconds=grace_s)
    work.credentials_changed()
    if old.expires_at is None or old.expires_at > ends:
        work.conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(expires_at=ends))
    return create_key(
        work,
        principal,
        role=Role(old.role),
        provider_id=old.provider_id,
        user_id=old.user_id,
        name=old.name,
        expires_at=old.expires_at if old.expires_at and old.expires_at > ends else None,
        scopes=old.scopes.split(",") if old.scopes else None,
        rotated_from=key_id,
    )


# Last uses seen by this process, written out by the housekeeper (`flush_last_used`):
# authenticating never writes, so a GET stays a read.
_LAST_USED: dict[str, datetime] = {}
_LAST_USED_LOCK = threading.Lock()


def authenticate(ctx: Context, secret: str) -> Principal:
    """The principal a secret stands for; refuses unknown, revoked and expired keys alike.

    What the database said is kept for at most `BILLFOLD_AUTH_CACHE_S` (a second), and
    forgotten in this process as soon as a key is revoked or rotated here."""
    principal = remembered(ctx, secret)
    if principal is not None:
        return principal
    now = ctx.clock.now()
    digest = _hash(secret)
    generation = ctx.credentials.generation
    found = _look_up(ctx, digest, now)
    ctx.credentials.put("key:" + digest, found, generation)
    return _used(found[0], now)


def remembered(ctx: Context, secret: str) -> Principal | None:
    """The principal of a secret looked up less than a cache lifetime ago, without
    touching the database; None if it must be looked up. Refuses what is known bad."""
    if not secret or len(secret) > MAX_KEY_LENGTH:
        raise AuthenticationFailed("invalid API key", code="invalid_api_key")
    found: tuple[Principal, datetime | None] | None = ctx.credentials.get("key:" + _hash(secret))
    if found is None:
        return None
    now = ctx.clock.now()
    principal, expires_at = found
    if expires_at is not None and expires_at <= now:
        raise AuthenticationFailed("invalid API key", code="invalid_api_key")
    return _used(principal, now)


def _used(principal: Principal, now: datetime) -> Principal:
    with _LAST_USED_LOCK:
        _LAST_USED[principal.key_id] = now
    return principal


def _look_up(ctx: Context, digest: str, now: datetime) -> tuple[Principal, datetime | None]:
    with ctx.db.unit_of_work(read_only=True) as uow:
        row = uow.conn.execute(
            select(
                api_keys.c.id,
                api_keys.c.role,
                api_keys.c.provider_id,
                api_keys.c.user_id,
                api_keys.c.revoked_at,
                api_keys.c.expires_at,
                api_keys.c.scopes,
            ).where(api_keys.c.secret_hash == digest)
        ).one_or_none()
    if (
        row is None
        or row.revoked_at is not None
        or (row.expires_at is not None and row.expires_at <= now)
    ):
        raise AuthenticationFailed("invalid API key", code="invalid_api_key")
    principal = Principal(
        key_id=row.id,
        role=Role(row.role),
        provider_id=row.provider_id,
        user_id=row.user_id,
        scopes=frozenset(row.scopes.split(",")) if row.scopes else None,
    )
    return principal, row.expires_at


def flush_last_used(ctx: Context) -> int:
    """Writes the last uses seen since the previous flush (never moving one back)."""
    with _LAST_USED_LOCK:
        seen = dict(_LAST_USED)
        _LAST_USED.clear()
    if not seen:
        return 0
    with ctx.db.unit_of_work() as uow:
        for key_id, at in seen.items():
            uow.conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    (api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at < at),
                )
                .values(last_used_at=at)
            )
        uow.commit()
    return len(seen)


def revoke_key(work: Work, principal: Principal, key_id: str) -> None:
    """Stops a key at once (the operator any key; a provider or user its own)."""
    _load_own(work, principal, key_id)
    now = work.clock.now()
    result = work.conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    if result.rowcount == 0:
        raise NotFound(f"no active key {key_id}", code="api_key_not_found")
    work.credentials_changed()
    audit.record(work, principal, "api_key.revoked", "api_key", key_id, at=now)
