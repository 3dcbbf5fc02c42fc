"""API keys, who am I, and health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from billfold.core import keys
from billfold.core.access import Principal, Role
from billfold.core.context import Context
from billfold.core.http import UnitOfWorkRoute, Write, get_context, get_principal
from billfold.core.schemas import ApiKeyCreate, ApiKeyOut, HealthOut, MeOut

router = APIRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["operator"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


@router.post("/api-keys", status_code=201, response_model=ApiKeyOut)
def create_api_key(body: ApiKeyCreate, work: Write, who: Who) -> ApiKeyOut:
    """A new API key; its secret is in this response only (admin)."""
    key, secret = keys.create_key(
        work,
        who,
        role=Role(body.role),
        provider_id=body.provider_id,
        user_id=body.user_id,
        name=body.name,
    )
    return ApiKeyOut(
        id=key.id,
        role=str(key.role),
        provider_id=key.provider_id,
        user_id=key.user_id,
        name=key.name,
        created_at=key.created_at,
        secret=secret,
    )


@router.post("/api-keys/{key_id}/revoke", status_code=204, response_class=Response)
def revoke_api_key(key_id: str, work: Write, who: Who) -> Response:
    keys.revoke_key(work, who, key_id)
    return Response(status_code=204)


@router.get("/me", response_model=MeOut)
def whoami(who: Who) -> MeOut:
    """The role and party of the API key in use."""
    return MeOut(
        key_id=who.key_id, role=str(who.role), provider_id=who.provider_id, user_id=who.user_id
    )


health = APIRouter(tags=["operator"])


@health.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    """The server is up (no database work; for load balancers)."""
    return HealthOut()
