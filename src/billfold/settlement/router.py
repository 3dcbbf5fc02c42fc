"""Statements, payouts, the commission report and CSV exports."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from billfold import settlement
from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import (
    Period,
    Read,
    UnitOfWorkRoute,
    Write,
    get_context,
    get_principal,
    transfer_id_for,
)
from billfold.core.schemas import AmountIn
from billfold.core.schemas import Request as Body
from billfold.domain.money import format_decimal, from_units
from billfold.settlement import exports

router = APIRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["settlement"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


# --- settlement -----------------------------------------------------------------------


def _statement(st: settlement.Statement) -> dict[str, Any]:
    m = st.money
    return {
        "object": "statement",
        "provider": st.provider_id,
        "period": st.period,
        "currency": st.currency.code,
        "gross": format_decimal(m(st.gross)),
        "commission": format_decimal(m(st.commission)),
        "refunds": format_decimal(m(st.refunds)),
        "net": format_decimal(m(st.net)),
        "payouts": format_decimal(m(st.payouts)),
        "opening_balance": format_decimal(m(st.opening)),
        "closing_balance": format_decimal(m(st.closing)),
        "transfers": st.transfers,
        "services": [
            {
                "service": service or None,
                "gross": format_decimal(m(g)),
                "refunds": format_decimal(m(r)),
                "commission": format_decimal(m(c)),
                "net": format_decimal(m(g - r - c)),
            }
            for service, (g, r, c) in sorted(st.by_service.items())
        ],
    }


@router.get("/providers/{provider_id}/statements")
def statements(work: Read, who: Who, provider_id: str, period: Period) -> dict[str, Any]:
    """The provider's statement for a month, per currency (admin, that provider). The
    first statement's fields are repeated at the top level, as API.md shows them."""
    found = [_statement(st) for st in settlement.statements(work, who, provider_id, period)]
    head = found[0] if found else {"gross": "0", "commission": "0", "refunds": "0", "net": "0"}
    return {**head, "object": "statements", "period": period, "data": found}


class PayoutCreate(Body):
    provider: str = Field(max_length=64)
    amount: AmountIn
    currency: str | None = Field(default=None, pattern="^[A-Z]{3}$")
    reference: str | None = Field(default=None, max_length=255)


@router.post("/payouts", status_code=201)
def create_payout(body: PayoutCreate, request: Request, work: Write, who: Who) -> dict[str, Any]:
    """Pays out part of a provider's earned balance; never more than it holds (admin)."""
    paid = settlement.payout(
        work,
        who,
        provider_id=body.provider,
        amount=body.amount,
        currency_code=body.currency,
        reference=body.reference,
        transfer_id=transfer_id_for(request, who),
    )
    return {
        "object": "payout",
        "id": paid.id,
        "provider": paid.provider_id,
        "currency": paid.currency.code,
        "amount": format_decimal(from_units(paid.amount, paid.currency)),
        "balance_after": format_decimal(from_units(paid.balance_after, paid.currency)),
        "reference": paid.reference,
        "created_at": paid.created_at.isoformat(),
    }


@router.get("/reports/commission")
def commission_report(work: Read, who: Who, period: Period) -> dict[str, Any]:
    """The platform's commission per provider for a month (admin)."""
    rows = settlement.commission_report(work, who, period)
    return {
        "object": "list",
        "period": period,
        "data": [
            {k: format_decimal(v) if isinstance(v, Decimal) else v for k, v in row.items()}
            for row in rows
        ],
    }


@router.get("/exports/{kind}.csv")
def export(ctx: Ctx, who: Who, kind: str, period: Period) -> StreamingResponse:
    """CSV of usage, charges, invoices or statements for a month, the asker's own."""
    rows = exports.export_csv(ctx, who, kind, period)
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{kind}-{period}.csv"'},
    )
