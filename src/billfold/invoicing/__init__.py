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
from billfold.invoicing.notices import mail_invoices
from billfold.invoicing.receivables import (
    BUCKETS,
    AgingRow,
    aging,
    bucket_of,
    overdue,
    overdue_since,
    overdue_users,
    reopen_paid_from_credit,
)

__all__ = [
    "BUCKETS",
    "CHUNK",
    "LIVE",
    "AgingRow",
    "Batch",
    "Catalog",
    "Invoice",
    "Line",
    "Phase",
    "Progress",
    "Sub",
    "advance",
    "aging",
    "bill_run",
    "billing_key",
    "bucket_of",
    "collect_for_user",
    "collect_postpaid",
    "count_due",
    "dunning_chunk",
    "load_invoices",
    "load_subs",
    "mail_invoices",
    "money",
    "overdue",
    "overdue_since",
    "overdue_users",
    "reopen_paid_from_credit",
    "run_chunk",
    "usage_rows",
]
