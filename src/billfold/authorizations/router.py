"""Authorizations, captures, voids and entitlements: asking before using."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse

from billfold import authorizations
from billfold.authorizations.schemas import (
    AuthorizationCapture,
    AuthorizationCreate,
    AuthorizationOut,
    EntitlementsOut,
)
from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import Read, UnitOfWorkRoute, Write, get_context, get_principal

router = APIRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["authorizations"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]
EVENT_EXAMPLE = {
    "id": "evt_123",
    "user": "usr_...",
    "service": "maps",
    "metric": "api_calls",
    "timestamp": "2026-11-23T01:30:00Z",
    "value": "1",
}


@router.post(
    "/authorizations", response_model=AuthorizationOut, responses={201: {"model": AuthorizationOut}}
)
def authorize(body: AuthorizationCreate, work: Write, who: Who) -> JSONResponse:
    """May this user use this much now? An approval (201) holds the funds; a decline is 200."""
    result = authorizations.authorize(
        work,
        who,
        user_ref=body.user,
        service_code=body.service,
        metric_code=body.metric,
        quantity=body.quantity,
        amount=body.amount,
        expires_in_s=body.expires_in,
    )
    status = 201 if result.status == "approved" else 200
    return JSONResponse(AuthorizationOut.of(result).model_dump(mode="json"), status_code=status)


@router.get("/authorizations/{auth_id}", response_model=AuthorizationOut)
def get_authorization(auth_id: str, work: Read, who: Who) -> AuthorizationOut:
    return AuthorizationOut.of(authorizations.get_authorization(work, who, auth_id))


@router.post("/authorizations/{auth_id}/capture", response_model=AuthorizationOut)
def capture(
    auth_id: str, work: Write, who: Who, body: Annotated[AuthorizationCapture | None, Body()] = None
) -> AuthorizationOut:
    """Charges the authorized use: the quantity used (default: as authorized) or an amount."""
    body = body or AuthorizationCapture()
    return AuthorizationOut.of(
        authorizations.capture(work, who, auth_id, quantity=body.quantity, amount=body.amount)
    )


@router.post("/authorizations/{auth_id}/void", response_model=AuthorizationOut)
def void(auth_id: str, work: Write, who: Who) -> AuthorizationOut:
    """Releases the held funds."""
    return AuthorizationOut.of(authorizations.void(work, who, auth_id))


@router.get("/users/{user_id}/entitlements", response_model=EntitlementsOut)
def entitlements(
    user_id: str, work: Read, who: Who, service: Annotated[str, Query(max_length=64)]
) -> EntitlementsOut:
    """Whether the user may use the service now, why, and the included quota left."""
    return EntitlementsOut.of(authorizations.entitlements(work, who, user_id, service))
