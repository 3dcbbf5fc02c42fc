"""Group commit of money writes: many requests, one transaction, one fsync.

Concurrent authorizations, captures, voids, one-off charges, top-ups and refunds are
each a function of a unit of work. Whoever submits one while no group is being written
becomes the leader: it opens one unit of work and runs every request waiting (its own
first), each in a savepoint of its own, then commits once, and goes on with those that
queued meanwhile until none is left. The others wait for their answer. A request alone
is not slowed: the group is whatever is queued when the writer is free, and nobody waits
for a group to fill (docs/DECISIONS.md, 99).

Each request stays all or nothing. A refusal (a domain error: insufficient funds, not
found, ...) undoes its savepoint alone and is that request's answer; the others commit.
Anything else (a database error, a deadlock on PostgreSQL) undoes the savepoint and the
request is run again after the group, in a unit of work of its own, where its error is
its own. If the group's commit fails, nothing of it stands and every request is run
again alone. The ledger's guarantees hold as they do for one request: every transfer
still locks the journal head and its accounts, in the same order, in the one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from billfold.core.context import Context, Work
from billfold.domain.errors import BillfoldError

R = TypeVar("R")
MAX_GROUP: Final = 64
"""Requests in one group at most: enough to share the commit, few enough to answer soon."""


@dataclass(slots=True)
class _Job(Generic[R]):
    run: Callable[[Work], R]
    opening: Callable[[Work], None] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None
    again: bool = False  # To be run again in a unit of work of its own.
    leads: bool = False  # Woken to write the next group, its own first.


class GroupCommitter:
    """One per process and database (`committer`)."""

    def __init__(self, ctx: Context, *, max_group: int = MAX_GROUP) -> None:
        self._ctx = ctx
        self._max = max_group
        self._lock = threading.Lock()
        self._pending: list[_Job[Any]] = []
        self._leading = False
        self.groups = 0
        """Groups committed so far (for tests and metrics)."""

    def submit(
        self, run: Callable[[Work], R], *, opening: Callable[[Work], None] | None = None
    ) -> R:
        """`run(work)`'s result, once committed with whatever group it joined; or its error.

        `opening(work)` runs once at the start of a group that holds this request, before
        any request of it: where the requests of a group must take their locks in one
        order (the ledger's journal head before any account), it takes the first."""
        job: _Job[R] = _Job(run, opening)
        with self._lock:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        job.done.wait()
        while job.leads:
            job.leads = False
            job.done.clear()
            self._lead()
            job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _lead(self) -> None:
        """Writes one group (the leader's own request is the first of it), then hands the
        lead to the first request that queued meanwhile: no request waits behind more
        than the group being written."""
        with self._lock:
            group, self._pending = self._pending[: self._max], self._pending[self._max :]
        try:
            self._write(group)
        finally:
            for job in group:
                job.done.set()
            with self._lock:
                if self._pending:
                    successor = self._pending[0]
                    successor.leads = True
                    successor.done.set()
                else:
                    self._leading = False

    def _write(self, group: list[_Job[Any]]) -> None:
        if len(group) == 1:
            self._alone(group[0])
            return
        try:
            with self._ctx.work() as work:
                for opening in dict.fromkeys(job.opening for job in group if job.opening):
                    opening(work)
                for job in group:
                    self._part(work, job)
                work.commit()
            self.groups += 1
        except Exception:  # The commit failed: nothing of the group stands.
            for job in group:
                job.result, job.error, job.again = None, None, True
        for job in group:
            if job.again:
                self._alone(job)

    @staticmethod
    def _part(work: Work, job: _Job[Any]) -> None:
        try:
            with work.savepoint():
                job.result = job.run(work)
        except BillfoldError as error:
            job.error = error
        except Exception:
            job.again = True

    def _alone(self, job: _Job[Any]) -> None:
        job.result, job.error, job.again = None, None, False
        try:
            with self._ctx.work() as work:
                job.result = job.run(work)
                work.commit()
        except BaseException as error:
            job.error = error


_COMMITTERS_LOCK = threading.Lock()


def committer(ctx: Context) -> GroupCommitter:
    """The context's group committer of money writes, made on first use."""
    with _COMMITTERS_LOCK:
        found = ctx.money_committer
        if not isinstance(found, GroupCommitter):
            found = ctx.money_committer = GroupCommitter(ctx)
        return found
