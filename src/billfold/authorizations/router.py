"""Authorizations, captures, voids and entitlements: asking before using."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Body, Depends, Query, Request, Response

from billfold import authorizations
from billfold.authorizations.schemas import (
    AuthorizationCapture,
    AuthorizationCreate,
    AuthorizationOut,
    EntitlementsOut,
)
from billfold.core.access import Principal
from billfold.core.context import Context, Work
from billfold.core.http import (
    Answer,
    AnsweredTogether,
    Read,
    SegmentRouter,
    UnitOfWorkRoute,
    each_on_its_own,
    get_context,
    get_principal,
    grouped,
    json_answer,
)

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["authorizations"])
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
async def authorize(body: AuthorizationCreate, request: Request, who: Who) -> Response:
    """May this user use this much now? An approval (201) holds the funds; a decline is 200."""

    def run(work: Work) -> Response:
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
        return json_answer(AuthorizationOut.of(result), status)

    asked = (who, body.user, body.service)
    return await grouped(request, run, kind=AUTHORIZATIONS, item=(asked, run))


def _decided_together(
    work: Work, items: list[tuple[tuple[Principal, str, str | None], Callable[[Work], Response]]]
) -> list[Answer]:
    """A group's authorizations: what they all read, read at once (`prefetch`), then each
    decided on its own, in its savepoint."""
    added = authorizations.prefetch(work, [asked for asked, _ in items])
    try:
        return each_on_its_own(work, [run for _, run in items])
    finally:
        for key in added:  # What others in the group may change is read again after.
            work.memo.pop(key, None)


AUTHORIZATIONS = AnsweredTogether(_decided_together)


@router.get("/authorizations/{auth_id}", response_model=AuthorizationOut)
def get_authorization(auth_id: str, work: Read, who: Who) -> AuthorizationOut:
    return AuthorizationOut.of(authorizations.get_authorization(work, who, auth_id))


@router.post("/authorizations/{auth_id}/capture", response_model=AuthorizationOut)
async def capture(
    auth_id: str,
    request: Request,
    who: Who,
    body: Annotated[AuthorizationCapture | None, Body()] = None,
) -> Response:
    """Charges the authorized use: the quantity used (default: as authorized) or an amount."""
    asked = body or AuthorizationCapture()
    return await grouped(
        request,
        lambda work: json_answer(
            AuthorizationOut.of(
                authorizations.capture(
                    work, who, auth_id, quantity=asked.quantity, amount=asked.amount
                )
            )
        ),
    )


@router.post("/authorizations/{auth_id}/void", response_model=AuthorizationOut)
async def void(auth_id: str, request: Request, who: Who) -> Response:
    """Releases the held funds."""
    return await grouped(
        request,
        lambda work: json_answer(AuthorizationOut.of(authorizations.void(work, who, auth_id))),
    )


@router.get("/users/{user_id}/entitlements", response_model=EntitlementsOut)
def entitlements(
    user_id: str, work: Read, who: Who, service: Annotated[str, Query(max_length=64)]
) -> EntitlementsOut:
    """Whether the user may use the service now, why, and the included quota left."""
    return EntitlementsOut.of(authorizations.entitlements(work, who, user_id, service))
