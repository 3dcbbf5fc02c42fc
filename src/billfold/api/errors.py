"""The error format: {"error": {"type", "code", "message", "param"}} for every failure."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from billfold.domain.errors import (
    AuthenticationFailed,
    BillfoldError,
    Conflict,
    GatewayUnavailable,
    InsufficientFunds,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    RateLimited,
    StreamUnavailable,
)

log = structlog.get_logger("billfold.api")

_STATUS_TYPES = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    405: "invalid_request",
    409: "conflict",
    413: "limit_exceeded",
    415: "invalid_request",
    429: "rate_limited",
}


# The HTTP status of each kind of domain error (the domain itself knows no HTTP).
# insufficient_funds is 402, apart from bad input (400) and conflicts (409).
_STATUS_OF_ERROR: dict[type[BillfoldError], int] = {
    InvalidRequest: 400,
    LimitExceeded: 400,
    AuthenticationFailed: 401,
    InsufficientFunds: 402,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
    GatewayUnavailable: 502,
    StreamUnavailable: 503,
}


class ErrorDetail(BaseModel):
    type: str = Field(description="invalid_request, authentication, permission, not_found, ...")
    code: str = Field(description="A stable name, one of billfold.domain.errors.ErrorCode.")
    message: str = Field(description="What went wrong, in words a person can act on.")
    param: str | None = Field(description="The parameter at fault, if one is.")


class ErrorBody(BaseModel):
    """Every failure's body."""

    error: ErrorDetail


_ANY = {
    "400": "Bad input: nothing was changed.",
    "401": "No API key, or one that is unknown, revoked or expired.",
    "403": "The key may not do this.",
    "404": "No such object, or one the key may not see.",
    "429": "Too many requests; retry after the time given.",
    "500": "An internal error; nothing was changed.",
}
_WRITES = {
    "402": "The balance cannot cover it (insufficient_funds).",
    "409": "A conflict: the object exists, or the Idempotency-Key was used otherwise.",
    "413": "The request body is too large.",
}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the errors billfold really sends (its error body), in
    place of the 422 that FastAPI documents and billfold never sends."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["ErrorBody"] = body
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            errors = {**_ANY, **(_WRITES if method in ("post", "delete") else {})}
            for status, description in errors.items():
                responses.setdefault(status, {"description": description, "content": reference})
    return schema


def status_of(error: BillfoldError) -> int:
    """The HTTP status that answers `error`: that of its nearest mapped class."""
    for cls in type(error).__mro__:
        status = _STATUS_OF_ERROR.get(cls)
        if status is not None:
            return status
    return 400


def error_body(type_: str, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"type": type_, "code": code, "message": message, "param": param}}


def error_response(
    status: int, type_: str, code: str, message: str, param: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(type_, code, message, param), status_code=status)


def allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document gives the request's path: those of every route
    at it. Starlette's own `Allow` names only the first route that matched the path, not
    the others at it (a GET and a POST are two routes)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods - {"HEAD"})


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install(app: FastAPI) -> None:
    @app.exception_handler(BillfoldError)
    async def billfold_error(_request: Request, exc: BillfoldError) -> JSONResponse:
        return error_response(status_of(exc), exc.type, exc.code, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = (
            dict(errors[0]) if errors else {"loc": (), "msg": "invalid request", "type": ""}
        )
        if first.get("type") == "json_invalid":
            detail = first.get("ctx", {}).get("error", "")
            return error_response(
                400,
                "invalid_request",
                "malformed_json",
                f"the request body is not valid JSON ({detail})".replace(" ()", ""),
            )
        param = _param(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value"))
        if param:
            message = f"{param}: {message}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problems)"
        return error_response(400, "invalid_request", "invalid_parameter", message, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(exc.status_code, "invalid_request")
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code, type_)
        message = str(exc.detail) if exc.detail else type_
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(
            error_body(type_, code, message), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path, error=type(exc).__name__)
        return error_response(
            500,
            "internal",
            "internal_error",
            "billfold hit an internal error; nothing was changed by this request "
            f"(request id {getattr(request.state, 'request_id', '-')})",
        )
