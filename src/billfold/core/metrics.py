"""Prometheus metrics of a billfold process: requests, latencies, events, group commits.

The metric objects live in prometheus-client's default registry, one per process. With
`billfold serve --workers N` the processes share a folder (`PROMETHEUS_MULTIPROC_DIR`,
set by `serve` before its workers start), and a scrape of any of them adds up all of
them, as prometheus-client's multiprocess mode does. Labels come from route templates
and fixed words, never from a request's own values, so that their number stays bounded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "billfold_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ("method", "route", "status"),
)
LATENCY = Histogram(
    "billfold_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template.",
    ("method", "route"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS = Counter(
    "billfold_usage_events",
    "Usage events received, by outcome: accepted (stored, rated and charged), duplicate "
    "or rejected.",
    ("outcome",),
)
USAGE_TRANSFERS = Counter(
    "billfold_usage_transfers",
    "Ledger transfers that charged accepted usage.",
)
GROUP_SIZE = Histogram(
    "billfold_group_commit_size",
    "Requests written in one group commit: money (authorizations, charges, top-ups, "
    "refunds) or usage (event batches).",
    ("kind",),
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)

STREAM_LAG = Gauge(
    "billfold_stream_lag_messages",
    "Messages of the usage stream acknowledged at the edge and not yet charged, as "
    "JetStream last reported them (each one request's events for one shard).",
    multiprocess_mode="max",
)

UNMATCHED: Final = "(unmatched)"
"""The route label of a request that matched no route (a 404 or 405)."""


def route_label(route: object) -> str:
    """The label of a request's route: its path template, never the path itself."""
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


def observe_ingest(accepted: int, duplicates: int, rejected: int, transfers: int) -> None:
    if accepted:
        EVENTS.labels("accepted").inc(accepted)
    if duplicates:
        EVENTS.labels("duplicate").inc(duplicates)
    if rejected:
        EVENTS.labels("rejected").inc(rejected)
    if transfers:
        USAGE_TRANSFERS.inc(transfers)


def observe_group(kind: str, size: int) -> None:
    GROUP_SIZE.labels(kind).observe(size)


def observe_lag(messages: int) -> None:
    STREAM_LAG.set(messages)


def share_between_processes(home: Path) -> Path:
    """Prepares a fresh folder for the metrics of several server processes, and names it
    in the environment they inherit; call before they start."""
    folder = home / "metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROCESS_ENV] = str(folder)
    return folder


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type: this process's, or
    those of every process sharing the folder."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
