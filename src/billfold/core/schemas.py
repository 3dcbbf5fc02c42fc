"""Request and response bodies. Amounts travel as decimal strings, never floats."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

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


Amount = Annotated[str, Field(examples=["12.50"], description="An exact decimal amount.")]


Text200 = Annotated[str, Field(max_length=200)]


Text500 = Annotated[str, Field(max_length=500)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListOf(BaseModel, Generic[T]):
    """A page of a list (API.md: {"data": [...], "has_more": bool})."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool


class ApiKeyCreate(Request):
    role: Literal["admin", "provider", "user"]
    provider_id: Annotated[str | None, Field(max_length=40)] = None
    user_id: Annotated[str | None, Field(max_length=40)] = None
    name: Annotated[str | None, Field(max_length=200)] = None


class ApiKeyOut(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    role: str
    provider_id: str | None
    user_id: str | None
    name: str | None
    created_at: datetime
    secret: str | None = Field(default=None, description="Shown only when the key is created.")


class MeOut(BaseModel):
    key_id: str
    role: Literal["admin", "provider", "user"]
    provider_id: str | None
    user_id: str | None


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
