"""Statements, payouts, the commission report and CSV exports."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from billfold import settlement
from billfold.core.access import Principal
from billfold.core.context import Context
from billfold.core.http import (
    Period,
    Read,
    SegmentRouter,
    UnitOfWorkRoute,
    Write,
    get_context,
    get_principal,
    transfer_id_for,
)
from billfold.settlement import exports
from billfold.settlement.schemas import (
    AgingOut,
    AgingReport,
    CommissionOut,
    CommissionReport,
    PayoutCreate,
    PayoutOut,
    PromotionsOut,
    StatementsOut,
)

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["settlement"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


@router.get("/providers/{provider_id}/statements", response_model=StatementsOut)
def statements(work: Read, who: Who, provider_id: str, period: Period) -> StatementsOut:
    """The provider's statement for a month, per currency (admin, that provider)."""
    return StatementsOut.of(period, settlement.statements(work, who, provider_id, period))


@router.post("/payouts", status_code=201, response_model=PayoutOut)
def create_payout(body: PayoutCreate, request: Request, work: Write, who: Who) -> PayoutOut:
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
    return PayoutOut.of(paid)


@router.get("/reports/commission", response_model=CommissionReport)
def commission_report(work: Read, who: Who, period: Period) -> CommissionReport:
    """The platform's commission per provider for a month (admin)."""
    rows = settlement.commission_report(work, who, period)
    costs = settlement.promotion_costs(work, who, period)
    return CommissionReport(
        period=period,
        data=[CommissionOut.of(row) for row in rows],
        promotions=[PromotionsOut.of(cost) for cost in costs],
    )


@router.get("/reports/receivables", response_model=AgingReport)
def receivables_report(
    work: Read,
    who: Who,
    by: Annotated[str, Query(pattern="^(user|provider)$", description="Group by party.")] = "user",
) -> AgingReport:
    """Open receivables by days past due (admin: all; provider: its own invoices;
    user: its own)."""
    rows = settlement.receivables(work, who, by=by)
    return AgingReport(by=by, as_of=work.clock.now(), data=[AgingOut.of(r) for r in rows])


@router.get(
    "/exports/{kind}.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "The rows as CSV."}},
)
def export(
    ctx: Ctx,
    who: Who,
    kind: Annotated[str, Path(pattern="^(usage|charges|invoices|statements)$")],
    period: Period,
) -> StreamingResponse:
    """CSV of usage, charges, invoices or statements for a month, the asker's own."""
    rows = exports.export_csv(ctx, who, kind, period)
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{kind}-{period}.csv"'},
    )
