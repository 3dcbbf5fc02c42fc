"""Expected failures, typed.

Each error carries the API error `type` and a machine-readable `code`, so the HTTP layer
maps it without knowing the cause. Programmer errors are not here: they are assertions.
"""

from __future__ import annotations


class BillfoldError(Exception):
    """An expected failure that a caller can act on."""

    type = "invalid_request"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code()
        self.param = param

    @classmethod
    def default_code(cls) -> str:
        return cls.type


class InvalidRequest(BillfoldError):
    type = "invalid_request"
    status = 400


class InvalidAmount(InvalidRequest):
    @classmethod
    def default_code(cls) -> str:
        return "invalid_amount"


class UnknownCurrency(InvalidRequest):
    @classmethod
    def default_code(cls) -> str:
        return "unknown_currency"


class AuthenticationFailed(BillfoldError):
    type = "authentication"
    status = 401


class PermissionDenied(BillfoldError):
    type = "permission"
    status = 403


class NotFound(BillfoldError):
    type = "not_found"
    status = 404


class Conflict(BillfoldError):
    type = "conflict"
    status = 409


class InsufficientFunds(BillfoldError):
    type = "insufficient_funds"
    status = 402


class LimitExceeded(BillfoldError):
    type = "limit_exceeded"
    status = 400
