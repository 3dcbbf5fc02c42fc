"""Invoicing: subscription periods, invoice lines, settlement, dunning and the bill run."""

from billfold.invoicing.batch import (
    Batch,
    usage_rows,
)
from billfold.invoicing.billing import (
    Progress,
    advance,
    bill_run,
    collect_for_user,
    collect_postpaid,
    count_due,
    dunning_chunk,
    run_chunk,
)
from billfold.invoicing.model import (
    CHUNK,
    LIVE,
    Catalog,
    Invoice,
    Line,
    Phase,
    Sub,
    billing_key,
    load_invoices,
    load_subs,
    money,
)

__all__ = [
    "CHUNK",
    "LIVE",
    "Batch",
    "Catalog",
    "Invoice",
    "Line",
    "Phase",
    "Progress",
    "Sub",
    "advance",
    "bill_run",
    "billing_key",
    "collect_for_user",
    "collect_postpaid",
    "count_due",
    "dunning_chunk",
    "load_invoices",
    "load_subs",
    "money",
    "run_chunk",
    "usage_rows",
]
