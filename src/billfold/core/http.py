"""What every router shares: the context and principal of a request, pagination, transfer ids.

`Authorization: Bearer <api key>` names the principal of every request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.keys import authenticate
from billfold.domain.errors import AuthenticationFailed, InvalidRequest
from billfold.domain.money import currency, format_decimal, from_units
from billfold.ids import derived_id, new_id

_bearer = HTTPBearer(auto_error=False, description="An API key: admin, provider or user.")


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def get_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ctx: Context = Depends(get_context),
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationFailed(
            "send your API key as 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    principal = authenticate(ctx, credentials.credentials)
    request.state.principal = principal
    return principal


Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1000.")]
StartingAfter = Annotated[
    str | None, Query(max_length=255, description="The id of the last item of the previous page.")
]


def transfer_id_for(request: Request, principal: Principal) -> str:
    """A transfer id derived from the Idempotency-Key, so a retried request posts nothing twice."""
    key = request.headers.get("idempotency-key")
    if key:
        return derived_id("tr", principal.key_id, request.url.path, key)
    return new_id("tr")


From = Annotated[datetime, Query(alias="from", description="Start, ISO 8601 with an offset.")]
To = Annotated[datetime, Query(description="End (excluded).")]
Window = Annotated[str, Query(pattern="^(hour|day|month)$")]
Tz = Annotated[str | None, Query(max_length=64, description="IANA time zone, default UTC.")]
Ref = Annotated[str | None, Query(max_length=255)]
Period = Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="A month, YYYY-MM.")]


def money_text(units: int, code: str) -> str:
    """Ledger units of a currency as the API's decimal string."""
    return format_decimal(from_units(units, currency(code)))


def aware(moment: datetime, name: str) -> datetime:
    """`moment` if it carries an offset; a naive time is a 400 naming the parameter."""
    if moment.tzinfo is None:
        raise InvalidRequest(f"{name} needs an offset, such as 2026-11-01T00:00:00Z", param=name)
    return moment
