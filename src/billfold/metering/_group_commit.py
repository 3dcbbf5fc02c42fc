"""Group commit: the batches of concurrent requests applied together, in one transaction."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from billfold.core import idempotency, metrics
from billfold.core.context import Context, Work
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
class Keyed:
    """A request's Idempotency-Key, claimed in the transaction that stores its events, and
    how its answer is made from its result: the answer is recorded in the same commit, so
    a request costs one commit, not three (docs/DECISIONS.md, 100). After the group:
    `replay` if the key was used before (the events were not applied), else `answered`,
    the answer recorded with the events (a batch with nothing to store too)."""

    claim: idempotency.Claim
    answer: Callable[[IngestResult], tuple[int, bytes]]
    replay: idempotency.Replay | None = None
    answered: tuple[int, bytes] | None = None


@dataclass(slots=True)
class _Job:
    prepared: _Prepared
    keyed: Keyed | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: IngestResult | None = None
    error: BaseException | None = None
    stored: list[_Valid] = field(default_factory=list)
    again: bool = False  # Its key is another job's of the same group: applied after it.

    def reset(self) -> None:
        """Nothing of a group that failed stands: the job is applied again from scratch."""
        self.result, self.error, self.again = None, None, False
        self.stored.clear()
        if self.keyed is not None:
            self.keyed.replay, self.keyed.answered = None, None


class _GroupCommitter:
    """Applies the batches of concurrent requests together, in one transaction.

    The first request to arrive becomes the leader: it applies every batch that is
    waiting (its own included) in one unit of work, then the batches that queued up
    meanwhile, until none is left. The others wait for their result. Work per user, metric
    and period (usage rows, rating, one ledger transfer) and the commit are shared by all
    the batches of a group, and so are each request's Idempotency-Key claim and the
    record of its answer. If a group fails, each batch is applied alone, so one bad
    batch fails only its own request.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._leading = False

    def submit(self, prepared: _Prepared, keyed: Keyed | None = None) -> IngestResult:
        """The batch's result once committed; with `keyed`, an empty result when the
        key's earlier answer is to be replayed instead (`keyed.replay`)."""
        job = _Job(prepared, keyed)
        with self._lock:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        job.done.wait()
        if job.error is not None:
            raise job.error
        if keyed is not None and keyed.replay is not None:
            return IngestResult(0, 0, [])
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
            self._apply_together(group)
        except BaseException:
            if len(group) == 1:
                group[0].reset()
                group[0].error = sys.exc_info()[1]
                group[0].done.set()
                return
            for job in group:
                job.reset()
                self._apply([job])
            return
        for job in group:
            if job.again:  # Now that the other's answer is recorded, it is replayed.
                job.again = False
                self._apply([job])
            else:
                job.done.set()

    def _apply_together(self, group: list[_Job]) -> None:
        ctx = self._ctx
        with ctx.work() as work:
            live = self._claim(work, group)
            storing = [job for job in live if job.prepared.valid]
            for job in live:
                if not job.prepared.valid:  # Only its key to claim and its answer.
                    job.result = IngestResult(0, job.prepared.duplicates, job.prepared.rejected)
            if len(storing) == 1:
                storing[0].result = _apply(work, storing[0].prepared, None)
            elif storing:
                self._apply_merged(work, storing)
            answers = []
            for job in live:
                if job.keyed is not None:
                    assert job.result is not None
                    answer = job.keyed.answer(job.result)
                    answers.append((job.keyed.claim.reservation, *answer))
                    job.keyed.answered = answer
            idempotency.record_many(work, work.cipher, answers)  # One statement for all.
            work.commit()

    @staticmethod
    def _claim(work: Work, group: list[_Job]) -> list[_Job]:
        """Claims the group's keys, in the order of the keys (two processes claiming the
        same keys wait for each other in one order); the jobs whose events are to be
        applied, in the group's order. A key used before is replayed; a key that an
        earlier job of the group holds waits for that job's answer (`again`)."""
        keyed = [job for job in group if job.keyed is not None]
        if not keyed:
            return group
        now = work.clock.now()
        # One statement claims every new key (in the keys' order); a key that was not
        # new is asked again on its own, for what to answer instead.
        fresh = idempotency.claim_new(work, [job.keyed.claim for job in keyed if job.keyed], now)
        held: set[tuple[str, str]] = set()
        for job, new in zip(keyed, fresh, strict=True):
            assert job.keyed is not None
            key = _key_of(job)
            if key in held:
                job.again = True
                continue
            held.add(key)
            if not new:
                job.keyed.replay = job.keyed.claim.claim(work, work.cipher, now)
        return [
            job
            for job in group
            if not job.again and (job.keyed is None or job.keyed.replay is None)
        ]

    def _apply_merged(self, work: Work, group: list[_Job]) -> None:
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
        applied = apply_isolating(work, merged, catalog, now)
        results = self._results(group, owner, applied)
        for job, result in zip(group, results, strict=True):
            audit_batch(work, job.prepared, result, job.stored)
            job.result = result

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


def _key_of(job: _Job) -> tuple[str, str]:
    assert job.keyed is not None
    reservation = job.keyed.claim.reservation
    return reservation.principal, reservation.key


def _committer(ctx: Context) -> _GroupCommitter:
    """The context's group committer of usage batches (one per process and database)."""
    return ctx.shared(_GroupCommitter, _GroupCommitter)
