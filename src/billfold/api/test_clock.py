"""The test clock: an operator moves time forward and what falls due runs before the
answer (servers started with BILLFOLD_TEST_CLOCK=1). It sits above the features because
"what falls due" spans several of them: the bill run, the graded arrears, invoice mail."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from billfold import arrears
from billfold.clock import TestClock
from billfold.core import audit
from billfold.core.access import Principal, require_admin
from billfold.core.context import Context
from billfold.core.http import SegmentRouter, UnitOfWorkRoute, aware, get_context, get_principal
from billfold.domain.errors import InvalidRequest, NotFound
from billfold.invoicing import billing, mail_invoices
from billfold.invoicing.schemas import TestClockMove, TestClockOut

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["invoices"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


@router.post("/test-clock", response_model=TestClockOut)
def move_test_clock(body: TestClockMove, ctx: Ctx, who: Who) -> TestClockOut:
    """Moves time forward and runs what falls due (servers with BILLFOLD_TEST_CLOCK=1)."""
    require_admin(who)
    clock = ctx.clock
    if not ctx.settings.test_clock or not isinstance(clock, TestClock):
        raise NotFound("this server has no test clock", code="test_clock_disabled")
    aware(body.now, "now")
    if body.now < clock.now():
        raise InvalidRequest("the test clock only moves forward", param="now")
    before = clock.now()
    clock.set(body.now)
    ctx.run(
        lambda work: audit.record(
            work, who, "test_clock.moved", "test_clock", "clock", at=body.now,
            details={"from": before.isoformat(), "to": body.now.isoformat()},
        )
    )  # fmt: skip
    done = billing.bill_run(ctx, as_of=body.now)
    # What the server's housekeeping would do next: debts move on through the arrears,
    # and invoice mail that fell due goes out.
    steps = arrears.review(ctx)
    mailed = mail_invoices(ctx)
    return TestClockOut(
        now=clock.now(),
        bill_run={
            **done,
            "arrears_steps": sum(steps.values()),
            "invoice_mails_sent": mailed["sent"],
        },
    )
