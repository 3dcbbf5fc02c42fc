"""Group commit: the batches of concurrent requests applied together, in one transaction."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Final

from billfold.core import metrics
from billfold.core.context import Context
from billfold.metering._parsing import (
    IngestResult,
    Rejection,
    _Valid,
)
from billfold.metering._rating import (
    Applied,
    _apply,
    apply_isolating,
    audit_batch,
    too_large,
)
from billfold.metering._validation import (
    _merge_catalogs,
    _Prepared,
)

# --- group commit ---------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    prepared: _Prepared
    done: threading.Event = field(default_factory=threading.Event)
    result: IngestResult | None = None
    error: BaseException | None = None
    stored: list[_Valid] = field(default_factory=list)


class _GroupCommitter:
    """Applies the batches of concurrent requests together, in one transaction.

    The first request to arrive becomes the leader: it applies every batch that is
    waiting (its own included) in one unit of work, then the batches that queued up
    meanwhile, until none is left. The others wait for their result. Work per user, metric
    and period (usage rows, rating, one ledger transfer) and the commit are shared by all
    the batches of a group. If a group fails, each batch is applied alone, so one bad
    batch fails only its own request.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._leading = False

    def submit(self, prepared: _Prepared) -> IngestResult:
        job = _Job(prepared)
        with self._lock:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def apply_now(self, batches: list[_Prepared]) -> list[IngestResult]:
        """The batches applied together at once, in the caller's thread (a stream
        worker's batch): each batch's result, or the first batch's error."""
        jobs = [_Job(prepared) for prepared in batches if prepared.valid]
        if jobs:
            self._apply(jobs)
        results = []
        done = iter(jobs)
        for prepared in batches:
            if not prepared.valid:
                results.append(IngestResult(0, prepared.duplicates, prepared.rejected))
                continue
            job = next(done)
            if job.error is not None:
                raise job.error
            assert job.result is not None
            results.append(job.result)
        return results

    def _lead(self) -> None:
        while True:
            with self._lock:
                group: list[_Job] = []
                size = 0
                while self._pending and (not group or size < MAX_GROUP_EVENTS):
                    job = self._pending.pop(0)
                    group.append(job)
                    size += len(job.prepared.valid)
                if not group:
                    self._leading = False
                    return
            metrics.observe_group("usage", len(group))
            self._apply(group)

    def _apply(self, group: list[_Job]) -> None:
        try:
            results = self._apply_together(group)
        except BaseException:
            if len(group) == 1:
                group[0].error = sys.exc_info()[1]
                group[0].done.set()
                return
            for job in group:
                self._apply([job])
            return
        for job, result in zip(group, results, strict=True):
            job.result = result
            job.done.set()

    def _apply_together(self, group: list[_Job]) -> list[IngestResult]:
        ctx = self._ctx
        if len(group) == 1:
            with ctx.work() as work:
                result = _apply(work, group[0].prepared, None)
                work.commit()
            return [result]
        # The first batch to carry an event id owns it; the same id in a later batch of
        # the group is that batch's duplicate, as it would be one request later.
        owner: dict[tuple[str, str], int] = {}
        merged: list[_Valid] = []
        for index, job in enumerate(group):
            for event in job.prepared.valid:
                key = (event.provider_id, event.event_id)
                if key not in owner:
                    owner[key] = index
                    merged.append(event)
        catalog = _merge_catalogs([job.prepared.catalog for job in group])
        now = max(job.prepared.now for job in group)
        with ctx.work() as work:
            applied = apply_isolating(work, merged, catalog, now)
            results = self._results(group, owner, applied)
            for job, result in zip(group, results, strict=True):
                audit_batch(work, job.prepared, result, job.stored)
            work.commit()
        return results

    @staticmethod
    def _results(
        group: list[_Job], owner: dict[tuple[str, str], int], applied: Applied
    ) -> list[IngestResult]:
        """Each request's part of what the group did."""
        stored, pairs = applied.stored, applied.charges
        for job in group:
            job.stored.clear()
        accepted = [0] * len(group)
        for event, *_ in stored:
            index = owner[(event.provider_id, event.event_id)]
            accepted[index] += 1
            group[index].stored.append(event)
        refused: list[list[Rejection]] = [[] for _ in group]
        for event in applied.refused:
            refused[owner[(event.provider_id, event.event_id)]].append(too_large(event))
        results = []
        for index, job in enumerate(group):
            # A request sees the transfers of its own users and services only: a transfer
            # of another provider's service never reaches it, though a user be shared.
            mine = {(event.user_id, event.service_code) for event in job.prepared.valid}
            results.append(
                IngestResult(
                    accepted[index],
                    job.prepared.duplicates
                    + len(job.prepared.valid)
                    - accepted[index]
                    - len(refused[index]),
                    sorted(job.prepared.rejected + refused[index], key=lambda r: r.index),
                    [transfer for user, service, transfer in pairs if (user, service) in mine],
                )
            )
        return results


MAX_GROUP_EVENTS: Final = 20_000


def _committer(ctx: Context) -> _GroupCommitter:
    """The context's group committer of usage batches (one per process and database)."""
    return ctx.shared(_GroupCommitter, _GroupCommitter)
