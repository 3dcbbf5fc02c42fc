"""The scheduler inside `billfold serve`: expire lapsed holds, forget old keys, and run the
bill run (renewals, invoice finalization, dunning) every `bill_run_interval_s`."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import structlog

from billfold import alerts, analytics, arrears, invoicing, ledger, payments
from billfold.core import idempotency, keys
from billfold.core.context import Context
from billfold.invoicing import billing

log = structlog.get_logger("billfold.workers")


def run_once(ctx: Context) -> dict[str, int]:
    """One round of housekeeping; each step is its own unit of work and safe to repeat."""
    now = ctx.clock.now()
    with ctx.db.unit_of_work() as uow:
        expired = ledger.expire_holds(uow, now=now)
        uow.commit()
    # What expired vouchers and credit had left goes back to their funders.
    grants_ended = billing.expire_grants(ctx, now)
    with ctx.db.unit_of_work() as uow:
        purged = idempotency.purge(uow, now, timedelta(seconds=ctx.settings.idempotency_ttl_s))
        uow.commit()
    keys.flush_last_used(ctx)
    folded = analytics.fold(ctx)
    raised = alerts.evaluate(ctx)
    recharged = payments.recharge_due(ctx)
    in_arrears = arrears.review(ctx)
    sent = alerts.deliver_due(ctx)
    mailed = invoicing.mail_invoices(ctx)
    return {
        "alerts_raised": sum(raised.values()),
        "webhooks_delivered": sent["delivered"],
        "webhooks_retried": sent["retried"],
        "webhooks_failed": sent["failed"],
        "holds_expired": expired,
        "recharges_started": recharged,
        "arrears_steps": sum(in_arrears.values()),
        "invoice_mails_sent": mailed["sent"],
        "invoice_mails_failed": mailed["failed"],
        "grants_expired": grants_ended,
        "idempotency_keys_purged": int(purged),
        "usage_deltas_folded": folded["usage_deltas"],
        "transfers_folded": folded["transfers"],
    }


class Housekeeper:
    """Runs `run_once` every interval on a daemon thread until stopped."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="billfold-housekeeping", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        last_bill_run = 0.0
        while not self._stop.wait(self.ctx.settings.hold_sweep_interval_s):
            try:
                done = run_once(self.ctx)
                if any(done.values()):
                    log.info("housekeeping", **done)
                if time.monotonic() - last_bill_run >= self.ctx.settings.bill_run_interval_s:
                    last_bill_run = time.monotonic()
                    billed = billing.bill_run(self.ctx)
                    if any(billed.values()):
                        log.info("bill_run", **billed)
            except Exception:  # A failed round is logged and retried next interval.
                log.exception("housekeeping_failed")
