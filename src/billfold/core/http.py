"""What every router shares: the principal and unit of work of a request, pagination,
transfer ids, and the route class that commits.

`Authorization: Bearer <api key>` names the principal of every request. A route takes
`work: Write` (or `Read`): one unit of work for the whole request. When the route has
answered, `UnitOfWorkRoute` records the answer under the request's Idempotency-Key in
the same transaction and commits once, before anything is sent; if the route raises,
or answers an error, everything it wrote is rolled back (docs/DECISIONS.md, "One unit of
work per request").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute, APIRouter
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import Scope

from billfold.core import idempotency, sessions
from billfold.core.access import Principal
from billfold.core.context import Context, Work
from billfold.core.exact_json import ExactJSONRequest
from billfold.core.group_commit import SEPARATELY, committer
from billfold.core.keys import authenticate, remembered
from billfold.core.schemas import MONTH, Moment
from billfold.domain.errors import AuthenticationFailed, BillfoldError, PermissionDenied
from billfold.domain.periods import check_moment
from billfold.ids import derived_id, new_id

# Keys of the request's scope["state"]: the Idempotency-Key this request holds (set by
# the middleware), whether the route recorded its answer, and the request's unit of work.
IDEMPOTENCY_STATE = "idempotency"
IDEMPOTENCY_RECORDED = "idempotency_recorded"
IDEMPOTENCY_CLAIM = "idempotency_claim"
# The POSTs whose work runs in the group commit (`grouped`): the middleware leaves the
# Idempotency-Key to be claimed in their group's transaction (a test checks the list).
GROUPED_WRITES = re.compile(
    r"^/v1/(authorizations(/[^/]+/(capture|void))?|charges(/[^/]+/refunds)?"
    r"|users/[^/]+/top-ups|events)$"
)
WORK_STATE = "work"
Item = TypeVar("Item")
Answer = Response | BillfoldError | object
"""What `AnsweredTogether` has for a request: its answer, its refusal, or SEPARATELY."""

bearer = HTTPBearer(auto_error=False, description="An API key: admin, provider or user.")
BEARER_SCHEME = bearer.scheme_name


def _asks_who(dependant: Dependant) -> bool:
    """Whether solving `dependant` asks `get_principal` who is asking."""
    return any(sub.call is get_principal or _asks_who(sub) for sub in dependant.dependencies)


def document_security(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the bearer scheme among its components, as FastAPI
    would list it if `get_principal` depended on `bearer` (`UnitOfWorkRoute`)."""
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.setdefault(
        BEARER_SCHEME, jsonable_encoder(bearer.model, by_alias=True, exclude_none=True)
    )
    return document


async def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def get_principal(request: Request) -> Principal:
    """Who is asking: an API key (`Authorization: Bearer`), or else a console session's
    cookie, whose state-changing requests must carry its CSRF token.

    The context comes from the app, and the key from `bearer` called here, not from
    dependencies of their own: FastAPI's solving costs more per dependency than the whole
    of `GET /v1/me` otherwise does (docs/DECISIONS.md, 124). `UnitOfWorkRoute` documents
    the bearer scheme of each route that asks, as FastAPI would for a dependency."""
    credentials = await bearer(request)
    ctx: Context = request.app.state.ctx
    if credentials is None:
        cookie = request.cookies.get(sessions.SECURE_COOKIE) or request.cookies.get(sessions.COOKIE)
        if cookie is not None:
            person = await _session_principal(request, ctx, cookie)
            request.state.principal = person
            return person
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationFailed(
            "send your API key as 'Authorization: Bearer <key>', or log in",
            code="missing_api_key",
        )
    # A key seen in the last second costs no trip to a thread or the database.
    principal: Principal
    seen = remembered(ctx, credentials.credentials)
    if seen is not None:
        principal = seen
    else:
        principal = await run_in_threadpool(authenticate, ctx, credentials.credentials)
    request.state.principal = principal
    if principal.scopes is not None and not _in_scope(
        principal.scopes, request.method, request.url.path
    ):
        raise PermissionDenied(
            f"this key is limited to {', '.join(sorted(principal.scopes))}",
            code="scope_denied",
        )
    return principal


# What a provider whose application is pending may do with its session: look, and leave.
_PENDING = re.compile(r"^(GET /v1/me|GET /v1/providers/[^/]+|DELETE /v1/sessions/current)$")


async def _session_principal(request: Request, ctx: Context, cookie: str) -> Principal:
    seen = sessions.remembered(ctx, cookie)
    resolved: sessions.Resolved
    if seen is not None:
        resolved = seen
    else:
        resolved = await run_in_threadpool(sessions.authenticate_session, ctx, cookie)
    if request.method not in ("GET", "HEAD", "OPTIONS") and not sessions.csrf_matches(
        resolved, request.headers.get(sessions.CSRF_HEADER)
    ):
        raise PermissionDenied(
            "this form has expired or did not come from billfold; reload the page and try again",
            code="csrf_failed",
        )
    if resolved.pending and not _PENDING.match(f"{request.method} {request.url.path}"):
        raise PermissionDenied(
            "your provider application is waiting for the platform's approval",
            code="provider_pending",
        )
    return resolved.principal


# What a gateway key may do: report usage and ask before using, nothing else.
_GATEWAY = re.compile(
    r"^(POST /v1/events|POST /v1/authorizations(/[^/]+/(capture|void))?"
    r"|GET /v1/authorizations/[^/]+|GET /v1/users/[^/]+/entitlements|GET /v1/me)$"
)


def _in_scope(scopes: frozenset[str], method: str, path: str) -> bool:
    """Whether any of a key's scopes allows this request."""
    if "read_only" in scopes and method in ("GET", "HEAD"):
        return True
    return "gateway" in scopes and bool(_GATEWAY.match(f"{method} {path}"))


Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1000.")]
StartingAfter = Annotated[
    str | None, Query(max_length=255, description="The id of the last item of the previous page.")
]


def transfer_id_for(request: Request, principal: Principal) -> str:
    """A transfer id derived from the Idempotency-Key, so a retried request posts nothing twice."""
    key = request.headers.get("idempotency-key")
    if key:
        return derived_id("tr", principal.key_id, request.url.path, key)
    return new_id("tr")


From = Annotated[Moment, Query(alias="from", description="Start, ISO 8601 with an offset.")]
To = Annotated[Moment, Query(description="End (excluded).")]
Window = Annotated[str, Query(pattern="^(hour|day|month)$")]
Tz = Annotated[str | None, Query(max_length=64, description="IANA time zone, default UTC.")]
Ref = Annotated[str | None, Query(max_length=255)]
Period = Annotated[
    str,
    Query(
        pattern=MONTH,
        description="A month, YYYY-MM, from 1970 to 8999.",
    ),
]


def aware(moment: datetime, name: str) -> datetime:
    """`moment` if it carries an offset and lies between 1970 and 9000; else a 400."""
    return check_moment(moment, name)


def maybe_aware(moment: datetime | None, name: str) -> datetime | None:
    return None if moment is None else check_moment(moment, name)


# --- the unit of work of a request ----------------------------------------------------


def _unit(request: Request, *, read_only: bool) -> Iterator[Work]:
    ctx: Context = request.app.state.ctx
    with ctx.work(read_only=read_only) as work:
        request.scope.setdefault("state", {})[WORK_STATE] = work
        yield work


def write_unit(request: Request) -> Iterator[Work]:
    yield from _unit(request, read_only=False)


def read_unit(request: Request) -> Iterator[Work]:
    yield from _unit(request, read_only=True)


Write = Annotated[Work, Depends(write_unit)]
"""The request's unit of work, committed by the route once it has answered."""
Read = Annotated[Work, Depends(read_unit)]
"""A read-only unit of work: no write lock, nothing committed."""


def _finish(request: Request, response: Response) -> None:
    """Commits the request's unit of work with the record of its answer, or rolls it back."""
    state = request.scope.get("state", {})
    work: Work | None = state.get(WORK_STATE)
    if work is None or not work.is_open:
        return
    if work.read_only or response.status_code >= 400:
        work.close()
        return
    reservation = state.get(IDEMPOTENCY_STATE)
    if reservation is not None and not isinstance(response, StreamingResponse):
        idempotency.record(
            work, work.cipher, reservation, response.status_code, bytes(response.body)
        )
    work.commit()
    work.close()
    if reservation is not None:
        state[IDEMPOTENCY_RECORDED] = True


def json_answer(model: BaseModel, status: int = 200) -> Response:
    """`model` as the answer, encoded once (by pydantic-core), not validated again."""
    return Response(
        model.model_dump_json(by_alias=True), status_code=status, media_type="application/json"
    )


async def grouped(
    request: Request,
    run: Callable[[Work], Response],
    *,
    kind: AnsweredTogether[Any] | None = None,
    item: object = None,
) -> Response:
    """The answer of `run(work)`, run in the group commit of money writes
    (billfold.core.group_commit) instead of a unit of work of the request's own: many
    concurrent requests share one transaction and one commit, each still all or nothing.
    The request's Idempotency-Key is claimed, and its answer recorded, in the same
    savepoint as its work: the change and its record commit together, in one commit.
    A route that uses this takes no `Write`, and its path is in `GROUPED_WRITES`. With
    `kind`, the group may answer `item` with others of its kind (`grouped_together`);
    without, it is done on its own in the group (`EACH`)."""
    claim = pending_claim(request)
    replayed = False

    def job(work: Work) -> Response:
        nonlocal replayed
        replayed = False
        if claim is not None:
            earlier = claim.claim(work, work.cipher, work.clock.now())
            if earlier is not None:
                replayed = True
                return replay_answer(earlier)
        response = run(work)
        if claim is not None and response.status_code < 400:
            idempotency.record(
                work, work.cipher, claim.reservation, response.status_code, bytes(response.body)
            )
        return response

    if kind is None:  # Any money write: with others, still run on its own (`EACH`).
        kind, item = EACH, run
    response = await committer(request.app.state.ctx).run(job, together=(kind, (claim, item)))
    if claim is not None and (response.status_code < 400 or replayed):
        # Recorded with the work, or answered from the record: nothing left to record.
        key_recorded(request)
    return response


async def grouped_together(request: Request, kind: AnsweredTogether[Item], item: Item) -> Response:
    """`grouped` for a route whose requests the group does at once (`AnsweredTogether`):
    alone, `kind.answers(work, [item])`'s answer; with others of its kind, in one go."""

    def run(work: Work) -> Response:
        (answer,) = kind.answers(work, [item])
        if isinstance(answer, BillfoldError):
            raise answer
        assert isinstance(answer, Response), "a request alone has its answer"
        return answer

    return await grouped(request, run, kind=kind, item=item)


class AnsweredTogether(Generic[Item]):
    """A grouped route's requests answered at once (`group_commit.Together`):
    `answers(work, items)` is each item's answer or refusal, in order; their
    Idempotency-Keys are claimed with one statement before, and the answers recorded with
    one after. A request whose key is not new (used before, in use, or sent twice in the
    group) is left to run on its own after the others, where its key's record decides.
    A refused request's key is given back, to be answered on its own (`finish`), as when
    a savepoint is undone."""

    def __init__(self, answers: Callable[[Work, list[Item]], Sequence[Answer]]):
        self.answers = answers

    def many(self, work: Work, items: list[tuple[idempotency.Claim | None, Item]]) -> list[object]:
        claims = [(n, claim) for n, (claim, _) in enumerate(items) if claim is not None]
        new = idempotency.claim_new(work, [claim for _, claim in claims], work.clock.now())
        left = {n for (n, _), fresh in zip(claims, new, strict=True) if not fresh}
        todo = [n for n in range(len(items)) if n not in left]
        out: list[object] = [SEPARATELY] * len(items)
        done: list[tuple[idempotency.Reservation, int, bytes]] = []
        refused: list[idempotency.Reservation] = []
        for n, answer in zip(todo, self.answers(work, [items[n][1] for n in todo]), strict=True):
            out[n] = answer
            claim = items[n][0]
            if claim is None:
                continue
            if isinstance(answer, Response) and answer.status_code < 400:
                done.append((claim.reservation, answer.status_code, bytes(answer.body)))
            else:  # Refused, or to run on its own: its key is claimed again then.
                refused.append(claim.reservation)
        idempotency.record_many(work, work.cipher, done)
        idempotency.release(work, refused)
        return out


def each_on_its_own(work: Work, runs: list[Callable[[Work], Response]]) -> list[Answer]:
    """Each request's own work, in a savepoint of its own: a refusal undoes its own, and
    a request that fails otherwise (a lock another process holds, say) is undone and run
    again on its own, as `GroupCommitter` runs any job that fails."""
    answers: list[Answer] = []
    for run in runs:
        try:
            with work.savepoint():
                answers.append(run(work))
        except BillfoldError as error:
            answers.append(error)
        except Exception:
            answers.append(SEPARATELY)
    return answers


EACH: AnsweredTogether[Callable[[Work], Response]] = AnsweredTogether(each_on_its_own)
"""The money writes that have no way of their own to be done together: in a group, their
keys are still claimed and their answers recorded with one statement each."""


def pending_claim(request: Request) -> idempotency.Claim | None:
    """The request's Idempotency-Key, when the middleware left it to be claimed in the
    transaction of the request's work (a path of `GROUPED_WRITES`); else None."""
    state = request.scope.get("state", {})
    reservation: idempotency.Reservation | None = state.get(IDEMPOTENCY_STATE)
    pending: tuple[str, str] | None = state.get(IDEMPOTENCY_CLAIM)
    if reservation is None or pending is None:
        return None
    return idempotency.Claim(reservation, *pending)


def key_recorded(request: Request) -> None:
    """The request's answer is recorded under its key (or was answered from the record):
    the middleware has nothing left to record."""
    request.scope.setdefault("state", {})[IDEMPOTENCY_RECORDED] = True


def key_reserved(request: Request) -> None:
    """The route reserved its key itself, in a transaction of its own, instead of
    claiming it with its work: the middleware records the answer as for any route."""
    request.scope.setdefault("state", {}).pop(IDEMPOTENCY_CLAIM, None)


def replay_answer(decision: idempotency.Replay) -> Response:
    """What a request answers instead of running, its Idempotency-Key having been used."""
    if decision.conflict is not None:
        body = (
            idempotency.KEY_REUSED
            if decision.conflict == "idempotency_key_reused"
            else idempotency.KEY_IN_USE
        )
        return JSONResponse(body, status_code=409)
    headers = {"idempotent-replayed": "true"} if decision.replayed else {}
    if decision.status == 204:
        return Response(status_code=204, headers=headers)
    return JSONResponse(decision.body, status_code=decision.status, headers=headers)


class UnitOfWorkRoute(APIRoute):
    """A route whose body numbers are parsed exactly (never through a float), and whose
    unit of work commits once, with the record of its answer, before it is sent."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        if _asks_who(self.dependant):
            # `get_principal` calls `bearer` itself, out of FastAPI's sight: the route's
            # operation names the scheme, as it would for a dependency on `bearer`.
            self.openapi_extra = {"security": [{BEARER_SCHEME: []}], **(self.openapi_extra or {})}

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            exact = ExactJSONRequest(request.scope, request.receive)
            try:
                response = await original(exact)
            except BaseException:
                work = exact.scope.get("state", {}).get(WORK_STATE)
                if work is not None:
                    await run_in_threadpool(work.close)
                raise
            work = exact.scope.get("state", {}).get(WORK_STATE)
            if work is not None and work.is_open:
                # Only routes with a unit of work pay for the trip to the thread pool.
                await run_in_threadpool(_finish, exact, response)
            return response

        return handler


def path_key(path: str) -> str:
    """What `SegmentRouter` sorts paths by: the first segment after /v1 (`users` of
    /v1/users/{user_id}/balance), else the first segment (`healthz`)."""
    parts = path.split("/", 3)
    if len(parts) > 2 and parts[1] == "v1":
        return parts[2]
    return parts[1] if len(parts) > 1 else ""


class SegmentRouter(APIRouter):
    """An APIRouter that FastAPI passes over at once for a path none of its routes can
    match, by the path's first segment (`path_key`), instead of trying each route.

    FastAPI tries the routers of an app in order and each route in turn, at about 1 µs
    a route: a route late in the list spent more finding itself than answering
    (docs/DECISIONS.md, 123). A router with a route whose first segment is a parameter
    is always tried, as is every router behind a root path. For routers included
    without a prefix of their own, as billfold includes them."""

    _keys: frozenset[str] | None = None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        keys = self._keys
        if keys is None:
            found = {path_key(getattr(route, "path", "{}")) for route in self.routes}
            # Empty: some route could match any first segment, so try them all.
            keys = self._keys = frozenset() if any("{" in k for k in found) else frozenset(found)
        if keys and not scope.get("root_path") and path_key(scope.get("path", "")) not in keys:
            return Match.NONE, {}
        return super().matches(scope)
