"""Money writes over HTTP in the group commit: 32 clients on one wallet, across two server
processes on the same database, never take it below its bound; every approved request is
in the ledger once, and every retry with its Idempotency-Key gets the original answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import event as sql_event
from sqlalchemy import select

from billfold import authorizations, parties
from billfold.core.access import SYSTEM, Role
from billfold.core.context import Context
from billfold.core.group_commit import committer
from billfold.core.keys import create_key
from billfold.ledger.verify import verify
from billfold.parties.router import CHARGES
from billfold.store import db
from billfold.store.ledger_tables import transfers
from billfold.store.tables import audit_log, idempotency_keys
from tests.conftest import PG_ADMIN_DSN, LiveServer, make_context
from tests.integration.helpers import funded_user, metered_catalog, subscribe

PLAN = {
    "code": "payg",
    "service": "maps",
    "currency": "USD",
    "interval": "none",
    "charges": [{"metric": "calls", "model": "per_unit", "unit_price": "0.1"}],
}
CLIENTS = 32


def test_32_clients_on_one_wallet_across_two_processes(
    ctx: Context, server: LiveServer, tmp_path: Path
) -> None:
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 0, "10")
    _, secret = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)
    second = make_context(ctx.db.url, tmp_path / "second", ctx.clock)  # type: ignore[arg-type]

    def one(args: tuple[int, str]) -> tuple[int, httpx.Response, httpx.Response]:
        n, url = args
        headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": f"key-{n}"}
        if n % 2:
            path, body = "/v1/charges", {"user": user, "amount": "1", "service": "maps",
                                         "description": f"add-on {n}"}  # fmt: skip
        else:
            path, body = "/v1/authorizations", {"user": user, "service": "maps", "amount": "1"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            first = client.post(path, json=body)
            again = client.post(path, json=body)
        return n, first, again

    try:
        with LiveServer(second) as other:
            urls = [server.url, other.url]
            with ThreadPoolExecutor(CLIENTS) as pool:
                # Charges and authorizations alike go to both processes.
                work = [(n, urls[(n // 2) % 2]) for n in range(CLIENTS)]
                answers = list(pool.map(one, work))
    finally:
        second.db.dispose()

    charged: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for n, first, again in answers:
        assert first.status_code in (200, 201, 402), first.text
        # The retry is the first answer again, whatever it was.
        assert (again.status_code, again.json()) == (first.status_code, first.json()), n
        assert again.headers.get("idempotent-replayed") == "true"
        if n % 2 and first.status_code == 201:
            charged.append(first.json())
        elif n % 2:
            assert first.json()["error"]["code"] == "insufficient_funds"
        elif first.status_code == 201:
            assert first.json()["status"] == "approved"
            held.append(first.json())
        else:
            assert first.json()["status"] == "declined"
    # Ten units of money, one each: exactly ten requests got one, whichever they were.
    assert len(charged) + len(held) == 10
    balance = ctx.read(parties.get_balance, SYSTEM, user)
    assert balance.posted == Decimal(10 - len(charged))
    assert balance.held == Decimal(len(held))
    assert balance.available == 0
    with ctx.work(read_only=True) as work:
        ids = list(
            work.conn.execute(select(transfers.c.id).where(transfers.c.kind == "charge")).scalars()
        )
    assert sorted(ids) == sorted(c["id"] for c in charged)
    report = ctx.read(verify, SYSTEM)
    assert report.ok, [(c.name, c.problems) for c in report.checks if not c.ok]


def test_single_events_claim_their_keys_in_the_usage_group(
    ctx: Context, server: LiveServer
) -> None:
    """Single usage events with Idempotency-Keys, sent at once: each key is claimed and
    its answer recorded in the transaction that stores the event, one commit per group.
    The same key sent twice at once stores the event once and answers both alike; a
    refused event's answer is recorded too; a key reused for another event is a 409."""
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 0, "10")
    _, secret = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)
    commits = 0

    def count(_connection: object) -> None:
        nonlocal commits
        commits += 1

    def one(n: int) -> tuple[int, httpx.Response, httpx.Response]:
        # Requests n and n + 12 are the same request: the same key, the same event.
        key, event = f"key-{n % 12}", {"id": f"evt-{n % 12}", "user": user,
                                       "service": "maps", "metric": "calls"}  # fmt: skip
        if n == 24:  # Not a customer: refused, and the refusal recorded.
            key, event = "key-stranger", {**event, "id": "evt-x", "user": "usr_nobody"}
        with server.client(secret) as client:
            headers = {"Idempotency-Key": key}
            return (
                n,
                client.post("/v1/events", json=event, headers=headers),
                client.post("/v1/events", json=event, headers=headers),
            )

    sql_event.listen(ctx.db.engine, "commit", count)
    try:
        with ThreadPoolExecutor(25) as pool:
            answers = list(pool.map(one, range(25)))
    finally:
        sql_event.remove(ctx.db.engine, "commit", count)

    for n, first, again in answers:
        assert (again.status_code, again.json()) == (first.status_code, first.json()), n
        assert again.headers.get("idempotent-replayed") == "true", n
        if n == 24:
            assert first.status_code == 404, first.text
            assert first.json()["error"]["code"] == "user_not_found"
        else:
            assert first.status_code == 200, first.text
    by_key: dict[int, list[dict[str, Any]]] = {}
    for n, first, _ in answers[:24]:
        by_key.setdefault(n % 12, []).append(first.json())
    for pair in by_key.values():  # The second of a pair is the first's answer replayed...
        assert pair[0] == pair[1]
        assert sorted(p["accepted"] + p["duplicates"] for p in pair) == [1, 1]
    # ... and each event was stored and charged once: 12 events at 0.1 each.
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == Decimal("8.8")
    # A commit per group at most (a request whose key is another's of its group commits
    # once more, to replay it; the refusal is noted once for the provider), where a keyed
    # request used to cost three commits of its own and its replay one: 100.
    assert commits <= 2 * len(answers) + 12 + 1, commits
    with server.client(secret) as client:
        reused = client.post(
            "/v1/events",
            json={"id": "evt-other", "user": user, "service": "maps", "metric": "calls"},
            headers={"Idempotency-Key": "key-0"},
        )
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    with ctx.work(read_only=True) as work:
        states = work.conn.execute(select(idempotency_keys.c.state)).scalars().all()
    assert set(states) == {"done"}
    assert ctx.read(verify, SYSTEM).ok


def test_two_providers_using_one_idempotency_key_at_once_get_their_own_answers(
    ctx: Context, server: LiveServer
) -> None:
    """Keys are scoped to the API key that sent them, in a usage group too: a hostile
    provider that sends another's Idempotency-Key at the same moment neither replays
    the other's answer nor stops the other's events."""
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 0, "10")
    _, mine = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)
    other = ctx.run(
        parties.create_provider, SYSTEM, name="B", email="b@p.io", commission_rate="0.2"
    )
    _, theirs = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=other.id)
    event = {"id": "evt-1", "user": user, "service": "maps", "metric": "calls"}

    def send(secret: str) -> httpx.Response:
        with server.client(secret) as client:
            return client.post("/v1/events", json=event, headers={"Idempotency-Key": "shared"})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, [mine, theirs] * 4))
    for n, answer in enumerate(answers):
        if n % 2 == 0:  # The provider's own: accepted once, then duplicates replayed.
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] + answer.json()["duplicates"] == 1
        else:  # The stranger's: its own refusal, never the provider's answer.
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["code"] == "service_not_found"
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == Decimal("9.9")


def test_a_groups_charges_are_answered_together_each_as_if_alone(
    ctx: Context, server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Charges that queue while the writer is busy are answered at once (one posting, one
    claim of their keys, one record of their answers), and each gets the answer it would
    get alone: a refusal writes nothing and is recorded on its own, a key sent twice in
    the group charges once and replays, a reused key is a 409, a charge without a key
    is charged, and another provider's user is not found."""
    user, stranger, known, secret = _three_users(ctx, external_id="crm-7")
    sizes: list[int] = []
    answers_of = CHARGES.answers

    def counted(work: Any, asked: list[Any]) -> Any:
        sizes.append(len(asked))
        return answers_of(work, asked)

    monkeypatch.setattr(CHARGES, "answers", counted)

    def body(amount: str, who: str = user) -> dict[str, str]:
        return {"user": who, "amount": amount, "service": "maps", "description": "x"}

    asked = {
        "ok": ("key-a", body("1")),
        "twice": ("key-a", body("1")),  # The same request again, in the same group.
        "poor": ("key-b", body("100")),  # More than the wallet holds.
        "stranger": ("key-c", body("1", stranger)),  # Not this provider's customer.
        "unkeyed": (None, body("2")),
        "zero": ("key-d", body("0")),  # Not an amount to charge.
        "nobody": ("key-e", body("1", "usr_nobody")),
        "external": ("key-f", body("4", "crm-7")),  # By the user's external id.
        "elsewhere": ("key-g", {**body("1"), "service": "nowhere"}),
        "as_another": ("key-h", {**body("1"), "provider_id": "prv_someone_else"}),
    }
    sent = {name: ("/v1/charges", key, data) for name, (key, data) in asked.items()}
    got = _sent_in_one_group(ctx, server, secret, sent)

    assert sizes[0] == len(asked) - 1  # All but the key's second use, at once ...
    assert got["ok"].status_code == 201, got["ok"].text
    assert got["twice"].status_code == 201  # ... which replays the first's answer
    assert got["twice"].json() == got["ok"].json()  # (whichever queued first).
    replayed = [got[n].headers.get("idempotent-replayed") for n in ("ok", "twice")]
    assert sorted(replayed, key=str) == [None, "true"]
    assert got["unkeyed"].status_code == 201
    assert got["poor"].status_code == 402
    assert got["poor"].json()["error"]["code"] == "insufficient_funds"
    assert got["stranger"].status_code == 404
    assert got["stranger"].json()["error"]["code"] == "user_not_found"
    assert got["zero"].status_code == 400
    assert got["nobody"].json()["error"]["code"] == "user_not_found"
    assert got["elsewhere"].json()["error"]["code"] == "service_not_found"
    assert got["as_another"].status_code == 403
    assert got["as_another"].json()["error"]["code"] == "other_provider"
    assert got["external"].status_code == 201 and got["external"].json()["user"] == known
    # Each refusal is recorded under its key and replayed; a key reused is refused.
    with server.client(secret) as client:
        for name in ("poor", "stranger", "zero", "nobody", "elsewhere", "as_another", "ok"):
            key, data = asked[name]
            again = client.post("/v1/charges", json=data, headers={"Idempotency-Key": key})
            assert (again.status_code, again.json()) == (
                got[name].status_code,
                got[name].json(),
            ), name
            assert again.headers.get("idempotent-replayed") == "true", name
        reused = client.post("/v1/charges", json=body("3"), headers={"Idempotency-Key": "key-a"})
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    # Three charges stand (1 and 2, and 4 of the other user), each once, with one audit
    # entry each.
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == Decimal("7")
    assert ctx.read(parties.get_balance, SYSTEM, known).posted == Decimal("6")
    assert ctx.read(parties.get_balance, SYSTEM, stranger).posted == Decimal("10")
    with ctx.work(read_only=True) as work:
        charges = work.conn.execute(
            select(transfers.c.id).where(transfers.c.kind == "charge")
        ).all()
        entries = work.conn.execute(
            select(audit_log.c.object_id).where(audit_log.c.action == "user.charged")
        ).all()
        states = work.conn.execute(select(idempotency_keys.c.state)).scalars().all()
    assert len(charges) == 3 and sorted(entries) == sorted(charges)
    assert set(states) == {"done"}
    assert ctx.read(verify, SYSTEM).ok


def test_other_money_writes_in_a_group_claim_and_record_their_keys_together(
    ctx: Context, server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authorizations, captures and refunds queued together are each done on its own in
    the group (a refusal undoes only its own work), while their keys are claimed and their
    answers recorded for all of them at once; every retry gets the original answer. One
    that fails unexpectedly once is undone and run again on its own, under its key."""
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 0, "10")
    flaky = funded_user(ctx, 1, "10")
    _, secret = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)
    original, failed = authorizations.authorize, []

    def once_broken(work: Any, *args: Any, **kwargs: Any) -> Any:
        answer = original(work, *args, **kwargs)  # It writes its hold, then fails.
        if kwargs["user_ref"] == flaky and not failed:
            failed.append(True)
            raise RuntimeError("a lock another process holds, say")
        return answer

    monkeypatch.setattr(authorizations, "authorize", once_broken)
    hold = {"user": user, "service": "maps", "amount": "3"}
    asked = {
        "flaky": ("/v1/authorizations", "k-0", {**hold, "user": flaky}),
        "hold": ("/v1/authorizations", "k-1", hold),
        "too_much": ("/v1/authorizations", "k-2", {**hold, "amount": "30"}),
        "capture": ("/v1/authorizations/auth_nothing/capture", "k-3", {}),
        "refund": ("/v1/charges/tr_nothing/refunds", "k-4", {}),
        "charge": ("/v1/charges", "k-5", {**hold, "description": "x"}),
    }
    got = _sent_in_one_group(ctx, server, secret, asked)

    assert got["hold"].status_code == 201 and got["hold"].json()["status"] == "approved"
    assert got["too_much"].status_code == 200
    assert got["too_much"].json()["reason"] == "insufficient_funds"
    assert got["capture"].status_code == 404 and got["refund"].status_code == 404
    assert got["charge"].status_code == 201
    with server.client(secret) as client:
        for name, (path, key, data) in asked.items():
            again = client.post(path, json=data, headers={"Idempotency-Key": key})
            assert (again.status_code, again.json()) == (
                got[name].status_code,
                got[name].json(),
            ), name
            assert again.headers.get("idempotent-replayed") == "true", name
    assert failed and got["flaky"].status_code == 201  # On its second try, alone.
    balance = ctx.read(parties.get_balance, SYSTEM, user)
    assert (balance.posted, balance.held) == (Decimal("7"), Decimal("3"))
    balance = ctx.read(parties.get_balance, SYSTEM, flaky)  # One hold: the first undone.
    assert (balance.posted, balance.held) == (Decimal("10"), Decimal("3"))
    with ctx.work(read_only=True) as work:
        states = work.conn.execute(select(idempotency_keys.c.state)).scalars().all()
    assert sorted(states) == ["done"] * len(asked)
    assert ctx.read(verify, SYSTEM).ok


def _sent_in_one_group(
    ctx: Context,
    server: LiveServer,
    secret: str,
    requests: dict[str, tuple[str, str | None, dict[str, Any]]],
    secrets: dict[str, str] | None = None,
) -> dict[str, httpx.Response]:
    """Each (path, Idempotency-Key, body)'s answer, the requests sent at once while the
    money writer is held busy, so that they queue and are written as one group; each
    with `secret`, or its own key in `secrets`."""
    secrets = secrets or {}
    writer = committer(ctx)
    entered, release = threading.Event(), threading.Event()

    def busy(_work: Any) -> None:
        entered.set()
        release.wait(10)

    holder = threading.Thread(target=writer.submit, args=(busy,))
    holder.start()
    assert entered.wait(10)

    def send(name: str) -> tuple[str, httpx.Response]:
        path, key, data = requests[name]
        headers = {"Idempotency-Key": key} if key else {}
        with server.client(secrets.get(name, secret)) as client:
            return name, client.post(path, json=data, headers=headers)

    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(send, name) for name in requests]
        deadline = time.monotonic() + 10
        while len(writer._pending) < len(requests) and time.monotonic() < deadline:
            time.sleep(0.01)
        queued = len(writer._pending)
        release.set()
        got = dict(f.result() for f in futures)
    holder.join(10)
    assert queued == len(requests)
    return got


def _cut_connections(ctx: Context) -> int:
    """Ends every connection to the test's database, as a restart of PostgreSQL would."""
    database = ctx.db.url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_money_write_on_a_lost_connection_is_written_on_a_new_one(
    pg_ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled connections that PostgreSQL ended (a restart): a connection lent again at
    once is not pinged first, so the write meets the loss; nothing was written, so it
    runs again on a new connection and the client never knows. One idle for a while is
    pinged and replaced before it is lent."""
    ctx = pg_ctx
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 0, "10")
    _, secret = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)
    charge = {"user": user, "amount": "1", "service": "maps", "description": "x"}
    with LiveServer(ctx) as server, server.client(secret) as client:
        assert client.post("/v1/charges", json=charge).status_code == 201
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)  # Never pinged.
        assert _cut_connections(ctx) > 0
        answer = client.post("/v1/charges", json=charge, headers={"Idempotency-Key": "c-1"})
        assert answer.status_code == 201, answer.text
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # Always pinged.
        assert _cut_connections(ctx) > 0
        services = client.get("/v1/services")  # A read, which is not run again.
        assert services.status_code == 200, services.text
        assert client.post("/v1/charges", json=charge).status_code == 201
    ctx.db.dispose()
    assert ctx.read(parties.get_balance, SYSTEM, user).posted == Decimal("7")
    assert ctx.read(verify, SYSTEM).ok


def test_a_group_remembers_the_catalog_per_asker(ctx: Context, server: LiveServer) -> None:
    """Authorizations of two providers in one group: the first's service, remembered for
    the group, is not the second's to use, and the second's own is priced by its plan."""
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 0, "10")
    _, secret = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)
    other = ctx.run(
        parties.create_provider, SYSTEM, name="B", email="b@p.io", commission_rate="0.1"
    )
    _, hostile = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=other.id)
    use = {"user": user, "service": "maps", "metric": "calls", "quantity": 10}
    got = _sent_in_one_group(
        ctx,
        server,
        secret,
        {
            "mine": ("/v1/authorizations", "a-1", use),
            "again": ("/v1/authorizations", "a-2", {**use, "quantity": 20}),
            "theirs": ("/v1/authorizations", "b-1", use),
        },
        {"theirs": hostile},
    )
    assert got["mine"].status_code == 201 and got["mine"].json()["amount"] == "1.00"
    assert got["again"].status_code == 201 and got["again"].json()["amount"] == "2.00"
    assert got["theirs"].status_code == 404, got["theirs"].text
    assert got["theirs"].json()["error"]["code"] in ("service_not_found", "user_not_found")
    assert ctx.read(parties.get_balance, SYSTEM, user).held == Decimal("3")


def test_a_groups_authorizations_read_together_answer_as_alone(
    ctx: Context, server: LiveServer
) -> None:
    """Authorizations in one group, whose payers, phases and customers are read for all
    of them at once on PostgreSQL: each answers what it would alone, a user named by
    external id, one named twice, a stranger, nobody, and a wrong service or metric."""
    user, stranger, known, secret = _three_users(ctx, external_id="crm-9")

    def use(who: str, **changes: object) -> tuple[str, str, dict[str, Any]]:
        body = {"user": who, "service": "maps", "metric": "calls", "quantity": 10, **changes}
        return "/v1/authorizations", f"k-{len(asked)}", body

    asked: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for name, who, changes in (
        ("mine", user, {}),
        ("twice", user, {"quantity": 30}),
        ("external", "crm-9", {}),
        ("stranger", stranger, {}),
        ("nobody", "usr_nobody", {}),
        ("no_metric", user, {"metric": "nope"}),
        ("no_service", user, {"service": "nowhere"}),
    ):
        asked[name] = use(who, **changes)
    got = _sent_in_one_group(ctx, server, secret, dict(asked))
    assert got["mine"].status_code == got["twice"].status_code == 201
    assert (got["mine"].json()["amount"], got["twice"].json()["amount"]) == ("1.00", "3.00")
    assert got["external"].status_code == 201 and got["external"].json()["user"] == known
    codes = {name: got[name].json()["error"]["code"] for name in list(asked)[3:]}
    assert codes == {
        "stranger": "user_not_found",
        "nobody": "user_not_found",
        "no_metric": "metric_not_found",
        "no_service": "service_not_found",
    }
    assert ctx.read(parties.get_balance, SYSTEM, user).held == Decimal("4")
    assert ctx.read(parties.get_balance, SYSTEM, known).held == Decimal("1")


def _three_users(ctx: Context, *, external_id: str) -> tuple[str, str, str, str]:
    """A provider's customer, a stranger to it, and a customer known by `external_id`,
    10.00 each; and the provider's key."""
    me = metered_catalog(ctx, PLAN)
    user = funded_user(ctx, 0, "10")
    stranger = funded_user(ctx, 1, "10", customer_of=None)
    known = ctx.run(
        parties.create_user, SYSTEM, name="E", email="e@u.io", currency_code="USD",
        external_id=external_id,
    ).id  # fmt: skip
    ctx.run(parties.top_up, SYSTEM, known, amount="10")
    subscribe(ctx, known)
    _, secret = ctx.run(create_key, SYSTEM, role=Role.PROVIDER, provider_id=me.provider_id)
    return user, stranger, known, secret
