"""Expected failures, typed, and the stable names of their codes.

Each error names what went wrong: its `type` (the API's error type) and a `code` from
`ErrorCode`, the one list of codes a client may rely on. The domain knows nothing of
HTTP: `billfold.api.errors` alone maps error classes to status codes. Programmer errors
are not here: they are assertions.
"""

from __future__ import annotations

from typing import Literal, get_args

ErrorCode = Literal[
    # Generic codes: one per error type, used where nothing more precise applies.
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "conflict",
    "insufficient_funds",
    "limit_exceeded",
    # Bad input.
    "invalid_amount",
    "unknown_currency",
    "invalid_plan",
    "invalid_usage",
    "currency_mismatch",
    "plan_incompatible",
    "no_default_plan",
    "effective_in_past",
    "draft_mismatch",
    "not_a_charge",
    "unknown_metric",
    "empty_transfer",
    "amount_too_large",
    "too_many",
    "too_many_events",
    "destination_not_allowed",
    "invalid_token",
    "invalid_totp",
    # Who is asking.
    "missing_api_key",
    "invalid_api_key",
    "admin_only",
    "role_not_allowed",
    "other_provider",
    "other_user",
    "scope_denied",
    "invalid_credentials",
    "email_not_verified",
    "session_ended",
    "csrf_failed",
    "provider_pending",
    "not_a_session",
    "totp_required",
    "totp_setup_required",
    "totp_required_for_admins",
    # Objects that are not there (or may not be seen).
    "account_not_found",
    "api_key_not_found",
    "authorization_not_found",
    "charge_not_found",
    "endpoint_not_found",
    "hold_not_found",
    "invoice_not_found",
    "metric_not_found",
    "plan_not_found",
    "provider_not_found",
    "service_not_found",
    "session_not_found",
    "member_not_found",
    "subscription_not_found",
    "transfer_not_found",
    "user_not_found",
    "test_clock_disabled",
    # Conflicts with the state of things.
    "already_subscribed",
    "email_taken",
    "totp_not_started",
    "provider_not_pending",
    "last_member",
    "not_subscribed",
    "metric_exists",
    "plan_exists",
    "provider_exists",
    "service_exists",
    "user_exists",
    "plan_retired",
    "subscription_ended",
    "user_inactive",
    "invoice_draft",
    "invoice_paid",
    "invoice_void",
    "not_billed",
    "hold_expired",
    "hold_id_reused",
    "hold_not_pending",
    "authorization_expired",
    "authorization_voided",
    "transfer_id_reused",
    # Money that is not there.
    "capture_exceeds_hold",
    "credit_exceeds_invoice",
    "payout_exceeds_balance",
    "refund_exceeds_original",
    "payment_exceeds_amount_due",
    # invoices paid outside a gateway
    "invoice_prepaid",
    "payment_reused",
    # prepaid products and payments
    "package_exists",
    "package_not_found",
    "account_suspended",
    "coupon_code_taken",
    "coupon_not_found",
    "coupon_expired",
    "coupon_used_up",
    "already_redeemed",
    "gateway_not_configured",
    "gateway_error",
    "stream_unavailable",
    "payment_not_found",
    "invalid_signature",
    "recharge_not_configured",
    # Answered by the HTTP layer itself, before or after a service runs.
    "malformed_json",
    "invalid_parameter",
    "route_not_found",
    "method_not_allowed",
    "body_too_large",
    "invalid_idempotency_key",
    "idempotency_key_in_use",
    "idempotency_key_reused",
    "internal_error",
    "rate_limited",
]
ERROR_CODES: frozenset[str] = frozenset(get_args(ErrorCode))


class BillfoldError(Exception):
    """An expected failure that a caller can act on."""

    type = "invalid_request"

    def __init__(
        self, message: str, *, code: ErrorCode | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: ErrorCode = code or self.default_code()
        self.param = param

    @classmethod
    def default_code(cls) -> ErrorCode:
        code = cls.type
        assert code in ERROR_CODES, code
        return code  # type: ignore[return-value]


class InvalidRequest(BillfoldError):
    type = "invalid_request"


class InvalidAmount(InvalidRequest):
    @classmethod
    def default_code(cls) -> ErrorCode:
        return "invalid_amount"


class UnknownCurrency(InvalidRequest):
    @classmethod
    def default_code(cls) -> ErrorCode:
        return "unknown_currency"


class AuthenticationFailed(BillfoldError):
    type = "authentication"


class PermissionDenied(BillfoldError):
    type = "permission"


class NotFound(BillfoldError):
    type = "not_found"


class Conflict(BillfoldError):
    type = "conflict"


class InsufficientFunds(BillfoldError):
    type = "insufficient_funds"


class LimitExceeded(BillfoldError):
    type = "limit_exceeded"


class RateLimited(BillfoldError):
    """Too many attempts in a while (failed logins): try again later."""

    type = "rate_limited"


class StreamUnavailable(BillfoldError):
    """The usage stream did not acknowledge the events: none of them may be counted as
    received; the client sends them again, with the same ids."""

    type = "internal"

    @classmethod
    def default_code(cls) -> ErrorCode:
        return "stream_unavailable"


class GatewayUnavailable(BillfoldError):
    """A payment gateway refused or could not be reached: nothing was changed here."""

    type = "internal"

    @classmethod
    def default_code(cls) -> ErrorCode:
        return "gateway_error"
