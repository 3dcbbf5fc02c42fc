"""Ledger verification over HTTP."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import Read, SegmentRouter, UnitOfWorkRoute, get_context, get_principal
from billfold.ledger import verify
from billfold.ledger.schemas import VerifyOut

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["ledger"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


@router.get("/ledger/verify", response_model=VerifyOut)
def verify_ledger(work: Read, who: Who) -> VerifyOut:
    """Checks every ledger invariant, as `billfold verify` does (admin)."""
    return VerifyOut.of(verify.verify(work, who))
