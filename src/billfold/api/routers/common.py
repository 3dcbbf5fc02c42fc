"""Helpers shared by routers: pagination parameters and idempotent transfer ids."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

from billfold.ids import derived_id, new_id
from billfold.services.access import Principal

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
