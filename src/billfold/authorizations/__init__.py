"""Asking before using: authorizations (holds), captures, voids and entitlements."""

from billfold.authorizations.service import (
    Authorization,
    Entitlements,
    authorize,
    capture,
    entitlements,
    get_authorization,
    prefetch,
    void,
)

__all__ = [
    "Authorization",
    "Entitlements",
    "authorize",
    "capture",
    "entitlements",
    "get_authorization",
    "prefetch",
    "void",
]
