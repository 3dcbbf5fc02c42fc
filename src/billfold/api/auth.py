"""Authentication: `Authorization: Bearer <api key>` names the principal of every request."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from billfold.domain.errors import AuthenticationFailed
from billfold.services.access import Principal
from billfold.services.context import Context
from billfold.services.keys import authenticate

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
