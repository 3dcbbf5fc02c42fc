"""Who is asking, and what they may see.

Every service function that reads or changes a tenant's data takes the principal and
checks it here, so the HTTP API, the CLI and workers enforce the same rules. A party that
may not know whether an object exists gets NotFound rather than PermissionDenied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from billfold.domain.errors import NotFound, PermissionDenied


class Role(StrEnum):
    ADMIN = "admin"
    PROVIDER = "provider"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: Role
    provider_id: str | None = None
    user_id: str | None = None
    scopes: frozenset[str] | None = None
    """What the key is limited to (`read_only`, `gateway`); None: all its role may do."""

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


SYSTEM = Principal(key_id="system", role=Role.ADMIN)
"""The principal of the CLI and background workers, which act as the operator."""


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("only the platform operator may do this", code="admin_only")


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        allowed = " or ".join(str(r) for r in roles)
        raise PermissionDenied(f"this needs a {allowed} key", code="role_not_allowed")


def require_user_access(principal: Principal, user_id: str, *, asked: str | None = None) -> None:
    """Admins see every user; a user sees only itself. Others learn nothing: the 404 names
    the user as asked (an external id stays an external id), never its internal id."""
    if principal.is_admin:
        return
    if principal.role == Role.USER and principal.user_id == user_id:
        return
    raise NotFound(f"no user {asked or user_id}", code="user_not_found", param="user")


def require_provider_access(principal: Principal, provider_id: str) -> None:
    if principal.is_admin:
        return
    if principal.role == Role.PROVIDER and principal.provider_id == provider_id:
        return
    raise NotFound(f"no provider {provider_id}", code="provider_not_found", param="provider")


def acting_provider(principal: Principal, provider_id: str | None) -> str | None:
    """The provider a request acts for: a provider key acts only for its own provider."""
    if principal.role == Role.PROVIDER:
        if provider_id is not None and provider_id != principal.provider_id:
            raise PermissionDenied(
                "a provider key may act only for its own provider",
                code="other_provider",
                param="provider_id",
            )
        return principal.provider_id
    require_admin(principal)
    return provider_id
