"""API keys: random secrets shown once, stored as SHA-256 hashes, each with one role."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from billfold.core import audit
from billfold.core.access import Principal, Role, require_admin
from billfold.core.context import Context, Work
from billfold.domain.errors import AuthenticationFailed, InvalidRequest, NotFound
from billfold.ids import new_id
from billfold.store.tables import api_keys, providers, users

MAX_KEY_LENGTH = 200


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


def _hash(secret: str) -> str:
    # The secrets carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    work: Work,
    principal: Principal,
    *,
    role: Role,
    provider_id: str | None = None,
    user_id: str | None = None,
    name: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret is returned this once and never stored."""
    require_admin(principal)
    if role == Role.PROVIDER and (provider_id is None or user_id is not None):
        raise InvalidRequest(
            "a provider key needs provider_id (and no user_id)", param="provider_id"
        )
    if role == Role.USER and (user_id is None or provider_id is not None):
        raise InvalidRequest("a user key needs user_id (and no provider_id)", param="user_id")
    if role == Role.ADMIN and (user_id is not None or provider_id is not None):
        raise InvalidRequest("an admin key is bound to no provider or user", param="role")
    if name is not None and len(name) > 200:
        raise InvalidRequest("name may have at most 200 characters", param="name")
    now = work.clock.now()
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
    )
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
        )
    )
    audit.record(
        work,
        principal,
        "api_key.created",
        "api_key",
        key.id,
        at=now,
        details={"role": str(role), "provider_id": provider_id, "user_id": user_id},
    )
    return key, secret


def authenticate(ctx: Context, secret: str) -> Principal:
    """The principal a secret stands for; refuses unknown and revoked keys alike."""
    if not secret or len(secret) > MAX_KEY_LENGTH:
        raise AuthenticationFailed("invalid API key", code="invalid_api_key")
    with ctx.db.unit_of_work(read_only=True) as uow:
        row = uow.conn.execute(
            select(
                api_keys.c.id,
                api_keys.c.role,
                api_keys.c.provider_id,
                api_keys.c.user_id,
                api_keys.c.revoked_at,
            ).where(api_keys.c.secret_hash == _hash(secret))
        ).one_or_none()
    if row is None or row.revoked_at is not None:
        raise AuthenticationFailed("invalid API key", code="invalid_api_key")
    return Principal(
        key_id=row.id, role=Role(row.role), provider_id=row.provider_id, user_id=row.user_id
    )


def revoke_key(work: Work, principal: Principal, key_id: str) -> None:
    require_admin(principal)
    now = work.clock.now()
    result = work.conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    if result.rowcount == 0:
        raise NotFound(f"no active key {key_id}", code="api_key_not_found")
    audit.record(work, principal, "api_key.revoked", "api_key", key_id, at=now)
