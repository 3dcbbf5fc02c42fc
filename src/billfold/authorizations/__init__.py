"""Asking before using: authorizations (holds), captures, voids and entitlements."""

from billfold.authorizations.service import (
    MAX_HOLD_TTL_S,
    Authorization,
    Entitlements,
    authorize,
    capture,
    entitlements,
    get_authorization,
    void,
)

__all__ = [
    "MAX_HOLD_TTL_S",
    "Authorization",
    "Entitlements",
    "authorize",
    "capture",
    "entitlements",
    "get_authorization",
    "void",
]
