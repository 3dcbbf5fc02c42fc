"""Metering and real-time charging: usage events in, money moved, exactly once.

`ingest` takes a batch of events (native or CloudEvents), validates each on its own, and
in one database transaction:

1. stores the valid ones, skipping any whose (provider, id) is already stored: a resent
   event changes nothing, however late it is resent;
2. rates them per user, metric, period and plan version (see `billfold.domain.rating`);
3. posts one ledger transfer per user, service, metric and period for what the batch
   added: the payer (a prepaid wallet, or a postpaid user's receivable) down, the
   provider's earnings and the platform's commission up. A prepaid wallet that cannot
   cover usage that already happened pays what it can; the rest becomes the user's debt
   (receivable), which suspends the user until a top-up pays it.

The response is sent only after the commit, so an acknowledged event is never lost.

"""

from billfold.metering._group_commit import (
    MAX_GROUP_EVENTS,
    Keyed,
)
from billfold.metering._parsing import (
    EVENT_COLUMNS,
    INSERT_CHUNK,
    MAX_AGE,
    MAX_EVENTS_PER_REQUEST,
    MAX_FUTURE,
    MAX_ID_LENGTH,
    MAX_PROPERTIES_BYTES,
    NATIVE_FIELDS,
    PERIOD_COLUMNS,
    IngestResult,
    Rejection,
)
from billfold.metering._rating import (
    Deltas,
    Group,
    GroupKey,
    Stored,
    period_state,
    stored_state,
)
from billfold.metering.service import (
    apply_streamed,
    for_stream,
    ingest,
    ingest_in,
    set_default_plan,
)

__all__ = [
    "EVENT_COLUMNS",
    "INSERT_CHUNK",
    "MAX_AGE",
    "MAX_EVENTS_PER_REQUEST",
    "MAX_FUTURE",
    "MAX_GROUP_EVENTS",
    "MAX_ID_LENGTH",
    "MAX_PROPERTIES_BYTES",
    "NATIVE_FIELDS",
    "PERIOD_COLUMNS",
    "Deltas",
    "Group",
    "GroupKey",
    "IngestResult",
    "Keyed",
    "Rejection",
    "Stored",
    "apply_streamed",
    "for_stream",
    "ingest",
    "ingest_in",
    "period_state",
    "set_default_plan",
    "stored_state",
]
