"""Group commit of money writes: many requests, one transaction, one fsync.

Concurrent authorizations, captures, voids, one-off charges, top-ups and refunds are
each a function of a unit of work. They queue for one writer thread per process and
database, which takes every request waiting, opens one unit of work, runs each in a
savepoint of its own and commits once; then it takes those that queued meanwhile, until
none is left. A request alone is not slowed: the group is whatever is queued when the
writer is free, and nobody waits for a group to fill (docs/DECISIONS.md, 99). A route
awaits its answer on the event loop (`run`), so it holds no thread while it waits.

Each request stays all or nothing. A refusal (a domain error: insufficient funds, not
found, ...) undoes its savepoint alone and is that request's answer; the others commit.
Anything else (a database error, a deadlock on PostgreSQL) undoes the savepoint and the
request is run again after the group, in a unit of work of its own, where its error is
its own. If the group's commit fails, nothing of it stands and every request is run
again alone. The ledger's guarantees hold as they do for one request: every ledger
writer, holds included, locks its journal chains and then its accounts, in the same
order; in a group, a lock that a later request needs and another process holds is not
waited for, and that request too runs again alone (billfold.ledger._order).

Requests of one kind can also be done together (`Together`): a group's one-off charges
are checked each on its own and posted with one set of statements, their keys claimed
and their answers recorded with one statement each, in one savepoint. Each still has its
own answer; a refused one writes nothing. If anything else goes wrong, the savepoint is
undone and each of them runs on its own in the group, as above.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError

from billfold.core import metrics
from billfold.core.context import Context, Work
from billfold.domain.errors import BillfoldError

R = TypeVar("R")
MAX_GROUP: Final = 64
"""Requests in one group at most: enough to share the commit, few enough to answer soon."""
IDLE_S: Final = 5.0
"""How long the writer thread waits for work before it ends (a quiet process holds none)."""


SEPARATELY: Final = object()
"""What `Together.many` answers for a request it leaves to be run on its own in the
group, after the others (its Idempotency-Key was used before, say)."""


class Together(Protocol):
    """A kind of request that a group does at once: `many(work, items)` is each item's
    result, its refusal (a `BillfoldError`, having written nothing) or `SEPARATELY`, in
    order. The requests of one kind in a group are those with the same `Together`."""

    def many(self, work: Work, items: list[Any]) -> list[Any]: ...


@dataclass(slots=True)
class _Job(Generic[R]):
    run: Callable[[Work], R]
    together: tuple[Together, Any] | None = None
    """Its kind and its item, when it can be done together with others of its kind."""
    # How the waiter learns its answer: an asyncio future on its loop, or an event.
    future: asyncio.Future[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None
    again: bool = False  # To be run again in a unit of work of its own.

    def finish(self) -> None:
        if self.future is None or self.loop is None:
            self.done.set()
            return
        future, error, result = self.future, self.error, self.result

        def resolve() -> None:
            if future.done():  # The waiter went away (its client disconnected).
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        self.loop.call_soon_threadsafe(resolve)


class GroupCommitter:
    """One per process and database (`committer`); its writer thread starts on first use."""

    def __init__(self, ctx: Context, *, max_group: int = MAX_GROUP) -> None:
        self._ctx = ctx
        self._max = max_group
        self._ready = threading.Condition()
        self._pending: list[_Job[Any]] = []
        self._writer: threading.Thread | None = None
        self.groups = 0
        """Groups of more than one request committed so far (for tests and metrics)."""

    async def run(
        self, run: Callable[[Work], R], *, together: tuple[Together, Any] | None = None
    ) -> R:
        """`run(work)`'s result, once committed with whatever group it joined; or its
        error. With `together` (a kind and an item), the group may do it with others of
        its kind instead: `kind.many(work, [..., item, ...])`."""
        loop = asyncio.get_running_loop()
        job: _Job[R] = _Job(run, together, loop.create_future(), loop)
        self._queue(job)
        result: R = await job.future  # type: ignore[misc]
        return result

    def submit(
        self, run: Callable[[Work], R], *, together: tuple[Together, Any] | None = None
    ) -> R:
        """`run`, from a thread: blocks until it is committed."""
        job: _Job[R] = _Job(run, together)
        self._queue(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _queue(self, job: _Job[Any]) -> None:
        with self._ready:
            self._pending.append(job)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_forever, name="billfold-money-writer", daemon=True
                )
                self._writer.start()
            self._ready.notify()

    def _write_forever(self) -> None:
        while True:
            with self._ready:
                if not self._pending:
                    self._ready.wait(IDLE_S)
                if not self._pending:  # Idle a while: the next request starts a new writer.
                    self._writer = None
                    return
                group, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                self._write(group)
            except BaseException as error:  # Never lose a waiter, whatever happened.
                for job in group:
                    if job.error is None and job.result is None:
                        job.error = error
            finally:
                for job in group:
                    job.finish()

    def _write(self, group: list[_Job[Any]]) -> None:
        metrics.observe_group("money", len(group))
        if len(group) == 1:
            self._alone(group[0])
            return
        try:
            with self._ctx.work() as work:
                work.grouped = True  # Later ledger locks do not wait (billfold.ledger).
                kinds = _kinds(group)
                for kind, jobs in kinds:
                    if kind is None or len(jobs) == 1:
                        self._part(work, jobs[0])
                    else:
                        # Alone in the group, it needs no savepoint: if it fails, the
                        # group does, and each job runs again on its own.
                        self._together(work, kind, jobs, savepoint=len(kinds) > 1)
                work.commit()
            self.groups += 1
        except Exception:  # The commit failed: nothing of the group stands.
            for job in group:
                job.result, job.error, job.again = None, None, True
        for job in group:
            if job.again:
                self._alone(job)

    def _together(
        self, work: Work, kind: Together, jobs: list[_Job[Any]], *, savepoint: bool
    ) -> None:
        """The jobs of one kind at once, in a savepoint; if that fails, each on its own
        (without a savepoint, its failure is the group's)."""
        items = [job.together[1] for job in jobs]  # type: ignore[index]
        if not savepoint:
            answers = kind.many(work, items)
        else:
            try:
                with work.savepoint():
                    answers = kind.many(work, items)
            except Exception:  # Nothing of it stands: each is done on its own instead.
                for job in jobs:
                    self._part(work, job)
                return
        assert len(answers) == len(jobs), "many answers each item"
        for job, answer in zip(jobs, answers, strict=True):
            if answer is SEPARATELY:
                self._part(work, job)
            elif isinstance(answer, BillfoldError):
                job.error = answer
            else:
                job.result = answer

    @staticmethod
    def _part(work: Work, job: _Job[Any]) -> None:
        try:
            with work.savepoint():
                job.result = job.run(work)
        except BillfoldError as error:
            job.error = error
        except Exception:
            job.again = True

    def _alone(self, job: _Job[Any], *, tries: int = 2) -> None:
        """The job in a unit of work of its own. A deadlock or a serialization failure
        (PostgreSQL) is tried once more before it is the job's error: nothing of a failed
        try stands. So is a connection found lost before the commit was asked (a pooled
        connection that a database restart ended): nothing was written. A connection lost
        during the commit is not: whether it committed is not known."""
        for attempt in range(tries):
            job.result, job.error, job.again = None, None, False
            committing = False
            try:
                with self._ctx.work() as work:
                    job.result = job.run(work)
                    committing = True
                    work.commit()
                return
            except DBAPIError as error:
                job.error = error
                lost = error.connection_invalidated and not committing
                if attempt + 1 == tries or not (lost or _transient(error)):
                    return
            except Exception as error:
                job.error = error
                return


def _kinds(group: list[_Job[Any]]) -> list[tuple[Together | None, list[_Job[Any]]]]:
    """The group's jobs in order, those of one kind together where the first of them is."""
    kinds: list[tuple[Together | None, list[_Job[Any]]]] = []
    seen: dict[int, list[_Job[Any]]] = {}
    for job in group:
        if job.together is None:
            kinds.append((None, [job]))
            continue
        kind = job.together[0]
        jobs = seen.get(id(kind))
        if jobs is None:
            jobs = seen[id(kind)] = []
            kinds.append((kind, jobs))
        jobs.append(job)
    return kinds


def _transient(error: DBAPIError) -> bool:
    """A failure that the same transaction, run again, may not meet (SQLSTATE 40xxx)."""
    code = getattr(error.orig, "sqlstate", None)
    return isinstance(code, str) and code.startswith("40")


def committer(ctx: Context) -> GroupCommitter:
    """The context's group committer of money writes, made on first use."""
    return ctx.shared(GroupCommitter, GroupCommitter)
