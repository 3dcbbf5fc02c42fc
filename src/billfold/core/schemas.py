"""Request and response bodies. Amounts travel as decimal strings, never floats."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema

from billfold.core.audit import AuditEntry
from billfold.core.keys import ApiKey

T = TypeVar("T")


# Amounts are accepted as a decimal string or a JSON number (parsed exactly); the service
# layer validates them with billfold.domain.money.parse_amount and names the field.
AmountIn = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}, {"type": "number"}],
            "examples": ["12.50"],
        }
    ),
]


def _iso_text(value: object) -> object:
    """Times come as ISO 8601 text; a bare number (which pydantic would read as a Unix
    timestamp) is not one, and the OpenAPI document's `date-time` says so."""
    if isinstance(value, bool | int | float) or (
        isinstance(value, str) and _NUMBER.fullmatch(value.strip())
    ):
        raise ValueError("a time is ISO 8601 text with an offset, such as 2026-11-23T01:30:00Z")
    return value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
Moment = Annotated[datetime, BeforeValidator(_iso_text)]
"""An instant given to the API: ISO 8601 text (checked for an offset and range later)."""

MONTH: Final = r"^(19[7-9][0-9]|[2-8][0-9]{3})-(0[1-9]|1[0-2])$"
"""A month, YYYY-MM, in the years billfold accepts (1970 to 8999)."""

Amount = Annotated[str, Field(examples=["12.50"], description="An exact decimal amount.")]


Text200 = Annotated[str, Field(max_length=200)]


Text500 = Annotated[str, Field(max_length=500)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


Flag = Annotated[bool, Strict()]
"""A request's yes or no: JSON true or false only (not 0, 1 or "yes")."""


class ListOf(BaseModel, Generic[T]):
    """A page of a list (API.md: {"data": [...], "has_more": bool})."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool


class ApiKeyCreate(Request):
    role: Literal["admin", "provider", "user"] | None = Field(
        default=None, description="Default: the asker's own role (a provider or user key)."
    )
    provider_id: Annotated[str | None, Field(max_length=40)] = None
    user_id: Annotated[str | None, Field(max_length=40)] = None
    name: Annotated[str | None, Field(max_length=200)] = None
    expires_at: Moment | None = Field(default=None, description="When the key stops working.")
    scopes: list[Literal["read_only", "gateway"]] | None = Field(
        default=None,
        max_length=2,
        description="read_only: GET only; gateway: usage events, authorizations and "
        "entitlements only. Default: all the role may do.",
    )


class ApiKeyRotate(Request):
    grace_s: int = Field(
        default=3600, ge=0, le=7 * 86400, description="How long the old key keeps working."
    )


class ApiKeyOut(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    role: str
    provider_id: str | None
    user_id: str | None
    name: str | None
    prefix: str = Field(description="The key's kind and last characters, to recognise it.")
    scopes: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    secret: str | None = Field(default=None, description="Shown only when the key is created.")

    @classmethod
    def of(cls, key: ApiKey, secret: str | None = None) -> ApiKeyOut:
        return cls(
            id=key.id,
            role=str(key.role),
            provider_id=key.provider_id,
            user_id=key.user_id,
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes) if key.scopes else None,
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
            secret=secret,
        )


class MeOut(BaseModel):
    key_id: str
    role: Literal["admin", "provider", "user"]
    provider_id: str | None
    user_id: str | None


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="The API key (or `system`) that did it.")
    role: str
    action: str
    object_type: str
    object_id: str
    details: dict[str, Any] | None = Field(description="What changed; never personal data.")

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEventOut:
        return cls(
            id=entry.id,
            at=entry.at,
            actor=entry.actor,
            role=entry.role,
            action=entry.action,
            object_type=entry.object_type,
            object_id=entry.object_id,
            details=entry.details,
        )
