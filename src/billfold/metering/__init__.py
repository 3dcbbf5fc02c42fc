"""Usage events: validation, dedupe, rating and real-time charging."""

from billfold.metering.service import (
    EVENT_COLUMNS,
    INSERT_CHUNK,
    MAX_AGE,
    MAX_EVENTS_PER_REQUEST,
    MAX_FUTURE,
    MAX_GROUP_EVENTS,
    MAX_ID_LENGTH,
    MAX_PROPERTIES_BYTES,
    NATIVE_FIELDS,
    PERIOD_COLUMNS,
    IngestResult,
    Rejection,
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
    "IngestResult",
    "Rejection",
    "ingest",
    "ingest_in",
    "set_default_plan",
]
