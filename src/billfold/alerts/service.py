"""Insight beyond the usual: balance forecasts, budgets, low-balance and spike alerts,
delivered as Standard Webhooks from a durable outbox.

An alert is stored once (its `key` says what it is about), and in the same transaction a
message for every webhook endpoint that should hear of it is put in the outbox. The
housekeeping worker delivers due messages and retries failures with backoff; a message
keeps its id across retries, so receivers can drop duplicates (delivery is at least once).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import statistics
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Final

import httpx
import structlog
from sqlalchemy import and_, or_, select, update

from billfold import ledger, prepaid
from billfold.alerts._destinations import check_destination
from billfold.core import audit
from billfold.core.access import Principal, Role, require_user_access
from billfold.core.context import Context, Work
from billfold.core.directory import load_user, user_row
from billfold.domain.analytics import Forecast, forecast, is_spike
from billfold.domain.errors import InvalidRequest, NotFound
from billfold.domain.ledger import AccountKind, OwnerType, TransferKind
from billfold.domain.money import (
    currency,
    format_decimal,
    format_money,
    from_units,
    parse_amount,
    to_units,
)
from billfold.ids import new_id
from billfold.store.bulk import upsert
from billfold.store.tables import (
    alert_settings,
    alerts,
    analytics_state,
    usage_rollup_users,
    users,
    webhook_endpoints,
    webhook_messages,
)

log = structlog.get_logger("billfold.webhooks")

DEFAULT_THRESHOLDS: Final = (50, 80, 100)
EVENT_TYPES: Final = (
    "budget.threshold",
    "balance.low",
    "usage.spike",
    "package.used",
    "package.expiring",
    "arrears.grace",
    "arrears.suspended",
    "arrears.terminated",
    "arrears.cleared",
)
PACKAGE_LEVELS: Final = (Decimal("0.8"), Decimal(1))
PACKAGE_NOTICE: Final = timedelta(days=3)
# Standard Webhooks recommends retrying with growing delays for about a day.
BACKOFF_S: Final = (5, 300, 1800, 7200, 18000, 36000, 36000)
SPIKE_FACTOR: Final = Decimal(3)
SPIKE_HISTORY_DAYS: Final = 14
SPIKE_MARK: Final = "spike_day"


# --- settings and the forecast --------------------------------------------------------


@dataclass
class AlertSettings:
    user_id: str
    currency: str
    monthly_budget: Decimal | None
    thresholds: tuple[int, ...]
    low_balance: Decimal | None


def set_settings(
    work: Work,
    principal: Principal,
    user_ref: str,
    *,
    monthly_budget: object | None,
    thresholds: list[int] | None,
    low_balance: object | None,
) -> AlertSettings:
    """A user's monthly budget (with alert thresholds, in percent) and low-balance level."""
    now = work.clock.now()
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    cur = user.currency
    budget = (
        None if monthly_budget is None else parse_amount(monthly_budget, param="monthly_budget")
    )
    low = None if low_balance is None else parse_amount(low_balance, param="low_balance")
    marks = tuple(sorted(set(thresholds or DEFAULT_THRESHOLDS)))
    if any(not 1 <= t <= 1000 for t in marks):
        raise InvalidRequest("thresholds are percentages from 1 to 1000", param="thresholds")
    values = {
        "monthly_budget": None if budget is None else to_units(budget, cur, param="monthly_budget"),
        "budget_thresholds": ",".join(map(str, marks)),
        "low_balance": None if low is None else to_units(low, cur, param="low_balance"),
        "updated_at": now,
    }
    upsert(work.conn, alert_settings, ["user_id"], [{"user_id": user.id, **values}])
    audit.record(
        work, principal, "alert_settings.set", "user", user.id, at=now,
        details={"thresholds": list(marks), "budget": values["monthly_budget"]},
    )  # fmt: skip
    return AlertSettings(user.id, cur.code, budget, marks, low)


def get_settings(work: Work, principal: Principal, user_ref: str) -> AlertSettings:
    """A user's budget and alert levels (the defaults until set)."""
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    cur = user.currency
    row = work.conn.execute(
        select(alert_settings).where(alert_settings.c.user_id == user.id)
    ).one_or_none()
    if row is None:
        return AlertSettings(user.id, cur.code, None, tuple(DEFAULT_THRESHOLDS), None)
    return AlertSettings(
        user.id,
        cur.code,
        None if row.monthly_budget is None else from_units(row.monthly_budget, cur),
        tuple(int(t) for t in row.budget_thresholds.split(",") if t),
        None if row.low_balance is None else from_units(row.low_balance, cur),
    )


def _accounts_of(work: Work, user_ids: list[str]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    kinds = (AccountKind.WALLET, AccountKind.RECEIVABLE)
    for account in ledger.accounts_of(work, OwnerType.USER, user_ids, kinds):
        found[account.owner_id].append(account.id)
    return found


def spent_since(work: Work, account_ids: list[int], since: datetime) -> dict[datetime, int]:
    """What the user spent per UTC day since `since`: every movement of its wallet and
    receivable but top-ups (money in) and invoice payments (between the two)."""
    if not account_ids:
        return {}
    per_day: dict[datetime, int] = defaultdict(int)
    spending = ledger.TransferFilter(
        posted_from=since, exclude_kinds=(TransferKind.TOP_UP, TransferKind.INVOICE_PAYMENT)
    )
    for posted_at, amount in ledger.postings_on(work, account_ids, spending):
        day = posted_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        per_day[day] -= amount
    return per_day


def balance_forecast(
    work: Work, principal: Principal, user_ref: str, *, days: int = 14
) -> tuple[str, Decimal, Forecast]:
    """Days until a prepaid user's balance runs out at the mean daily spend of `days` days."""
    if not 1 <= days <= 365:
        raise InvalidRequest("days is from 1 to 365", param="days")
    now = work.clock.now()
    user = load_user(work, user_ref)
    require_user_access(principal, user.id, asked=user_ref)
    own = _accounts_of(work, [user.id])[user.id]
    spent = spent_since(work, own, now - timedelta(days=days))
    available = prepaid.user_balance(work, user).available
    cur = user.currency
    return (
        cur.code,
        available,
        forecast(available, [from_units(v, cur) for v in spent.values()], now, days),
    )


# --- alerts ---------------------------------------------------------------------------


@dataclass
class AlertView:
    id: str
    type: str
    user_id: str | None
    provider_id: str | None
    data: dict[str, Any]
    created_at: datetime


def announce(
    work: Work,
    key: str,
    type_: str,
    data: dict[str, Any],
    *,
    now: datetime,
    user_id: str | None,
    provider_id: str | None = None,
) -> bool:
    """Raises an alert of another feature (an arrears step), once per `key`, and queues
    its webhook for every endpoint of the user's and the platform's that listens."""
    return _raise(work, key, type_, data, now=now, user_id=user_id, provider_id=provider_id)


def _raise(
    work: Work,
    key: str,
    type_: str,
    data: dict[str, Any],
    *,
    now: datetime,
    user_id: str | None,
    provider_id: str | None,
) -> bool:
    """Stores the alert unless it exists, and queues it for every endpoint that listens."""
    if work.conn.execute(select(alerts.c.id).where(alerts.c.key == key)).first() is not None:
        return False
    alert_id = new_id("alrt")
    work.conn.execute(
        alerts.insert().values(
            id=alert_id,
            key=key,
            type=type_,
            user_id=user_id,
            provider_id=provider_id,
            data=json.dumps(data, sort_keys=True),
            created_at=now,
        )
    )
    owners = [("platform", "platform")]
    if user_id:
        owners.append(("user", user_id))
    if provider_id:
        owners.append(("provider", provider_id))
    for endpoint in work.conn.execute(
        select(webhook_endpoints).where(
            or_(
                *(
                    and_(webhook_endpoints.c.owner_type == t, webhook_endpoints.c.owner_id == o)
                    for t, o in owners
                )
            )
        )
    ):
        wanted = endpoint.event_types.split(",") if endpoint.event_types else EVENT_TYPES
        if type_ not in wanted:
            continue
        payload = {
            "type": type_,
            "timestamp": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": {"alert": alert_id, "user": user_id, "provider": provider_id, **data},
        }
        work.conn.execute(
            webhook_messages.insert().values(
                id=new_id("msg"),
                endpoint_id=endpoint.id,
                event_type=type_,
                payload=json.dumps(payload, sort_keys=True, separators=(",", ":")),
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return True


def evaluate(ctx: Context) -> dict[str, int]:
    """Raises the alerts the facts now call for: budgets, low balances and spikes."""
    now = ctx.clock.now()
    raised = {"budget": 0, "low_balance": 0, "spike": 0, "package": 0}
    with ctx.work() as work:
        settings_rows = list(work.conn.execute(select(alert_settings)))
        if settings_rows:
            _budgets_and_balances(work, settings_rows, now, raised)
        raised["spike"] = _spikes(work, now)
        raised["package"] = _packages(work, now)
        work.commit()
    return raised


def _packages(work: Work, now: datetime) -> int:
    """A resource package 80% and 100% used in its cycle, and 3 days before it expires:
    each once per holding, metric and cycle (a reset starts the count again)."""
    raised = 0
    for holding, metric, share in prepaid.usage_levels(work, now):
        for level in PACKAGE_LEVELS:
            if share < level:
                continue
            data: dict[str, Any] = {
                "holding_id": holding.id,
                "package": holding.package_code,
                "metric": metric,
                "level": format_decimal(level),
                "used": format_decimal(holding.used[metric]),
                "quantity": format_decimal(holding.quantities[metric]),
                "cycle_end": holding.cycle_end.isoformat(),
            }
            key = f"package:{holding.id}:{metric}:{holding.cycle_start.isoformat()}:{level}"
            raised += _raise(
                work, key, "package.used", data, now=now, user_id=holding.user_id, provider_id=None
            )
    for holding in prepaid.expiring(work, now, PACKAGE_NOTICE):
        data = {
            "holding_id": holding.id,
            "package": holding.package_code,
            "expires_at": holding.expires_at.isoformat(),
            "remaining": {m: format_decimal(q) for m, q in holding.remaining.items()},
        }
        raised += _raise(
            work, f"package_expiring:{holding.id}", "package.expiring", data,
            now=now, user_id=holding.user_id, provider_id=None,
        )  # fmt: skip
    return raised


def _budgets_and_balances(
    work: Work, rows: list[Any], now: datetime, raised: dict[str, int]
) -> None:
    month = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    own = _accounts_of(work, [r.user_id for r in rows])
    people = {
        r.id: r
        for r in work.conn.execute(
            select(users.c.id, users.c.currency, users.c.credit_limit).where(
                users.c.id.in_([r.user_id for r in rows])
            )
        )
    }
    for row in rows:
        cur = currency(people[row.user_id].currency)
        if row.monthly_budget:
            spent = sum(spent_since(work, own[row.user_id], month).values())
            for pct in (int(t) for t in row.budget_thresholds.split(",") if t):
                if spent * 100 >= row.monthly_budget * pct and _raise(
                    work,
                    f"budget:{row.user_id}:{month:%Y-%m}:{pct}",
                    "budget.threshold",
                    {
                        "month": f"{month:%Y-%m}",
                        "threshold_percent": pct,
                        "budget": format_money(from_units(row.monthly_budget, cur), cur),
                        "spent": format_money(from_units(spent, cur), cur),
                        "currency": cur.code,
                    },
                    now=now,
                    user_id=row.user_id,
                    provider_id=None,
                ):
                    raised["budget"] += 1
        if row.low_balance is not None:
            wallet = ledger.find_account(
                work, OwnerType.USER, row.user_id, AccountKind.WALLET, cur.code
            )
            if wallet is None:
                continue
            limit = int(user_row(work, row.user_id).credit_limit)
            available = prepaid.spendable(work, row.user_id, cur.code, limit)
            if available >= row.low_balance:
                continue
            # One alert per time the balance ran low: a top-up starts a new episode.
            top_ups = ledger.TransferFilter(kinds=(TransferKind.TOP_UP,))
            last_top_up = ledger.last_seq_on(work, wallet, top_ups)
            if _raise(
                work,
                f"low_balance:{row.user_id}:{last_top_up or 0}",
                "balance.low",
                {
                    "available": format_money(from_units(available, cur), cur),
                    "threshold": format_money(from_units(row.low_balance, cur), cur),
                    "currency": cur.code,
                },
                now=now,
                user_id=row.user_id,
                provider_id=None,
            ):
                raised["low_balance"] += 1


def _spikes(work: Work, now: datetime) -> int:
    """Once a day: users whose usage charges yesterday were far above their pattern."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = today - timedelta(days=1)
    mark = int(day.timestamp())
    done = work.conn.execute(
        select(analytics_state.c.value)
        .where(analytics_state.c.name == SPIKE_MARK)
        .with_for_update()
    ).scalar_one_or_none()
    if done is not None and done >= mark:
        return 0
    if done is None:
        work.conn.execute(analytics_state.insert().values(name=SPIKE_MARK, value=mark))
    else:
        work.conn.execute(
            update(analytics_state).where(analytics_state.c.name == SPIKE_MARK).values(value=mark)
        )
    return len(detect_spikes(work, day, now=now, raise_alerts=True))


def detect_spikes(
    work: Work, day: datetime, *, now: datetime, raise_alerts: bool = False
) -> list[tuple[str, str, int]]:
    """(user, provider, amount) of the spikes on `day` (a UTC day), from the user rollup."""
    since = day - timedelta(days=SPIKE_HISTORY_DAYS)
    daily: dict[tuple[str, str, str], dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
    active = (
        select(usage_rollup_users.c.user_id)
        .where(
            usage_rollup_users.c.bucket >= day,
            usage_rollup_users.c.bucket < day + timedelta(days=1),
        )
        .distinct()
    )
    for row in work.conn.execute(
        select(
            usage_rollup_users.c.user_id,
            usage_rollup_users.c.provider_id,
            usage_rollup_users.c.currency,
            usage_rollup_users.c.bucket,
            usage_rollup_users.c.amount,
        ).where(
            usage_rollup_users.c.bucket >= since,
            usage_rollup_users.c.bucket < day + timedelta(days=1),
            usage_rollup_users.c.user_id.in_(active),
        )
    ):
        start = row.bucket.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        daily[(row.user_id, row.provider_id, row.currency)][start] += int(row.amount)
    found = []
    for (user_id, provider_id, code), per_day in daily.items():
        cur = currency(code)
        history = [
            from_units(per_day.get(since + timedelta(days=n), 0), cur)
            for n in range(SPIKE_HISTORY_DAYS)
        ]
        amount = per_day.get(day, 0)
        if not is_spike(from_units(amount, cur), history, factor=SPIKE_FACTOR, minimum=Decimal(1)):
            continue
        found.append((user_id, provider_id, amount))
        if raise_alerts:
            _raise(
                work,
                f"spike:{user_id}:{provider_id}:{day:%Y-%m-%d}",
                "usage.spike",
                {
                    "day": f"{day:%Y-%m-%d}",
                    "amount": format_money(from_units(amount, cur), cur),
                    "median_before": format_money(statistics.median(history), cur),
                    "currency": code,
                },
                now=now,
                user_id=user_id,
                provider_id=provider_id,
            )
    return found


def list_alerts(work: Work, principal: Principal, *, limit: int = 100) -> list[AlertView]:
    query = select(alerts).order_by(alerts.c.created_at.desc(), alerts.c.id.desc()).limit(limit)
    if principal.role == Role.PROVIDER:
        query = query.where(alerts.c.provider_id == principal.provider_id)
    elif principal.role == Role.USER:
        query = query.where(alerts.c.user_id == principal.user_id)
    return [
        AlertView(r.id, r.type, r.user_id, r.provider_id, json.loads(r.data), r.created_at)
        for r in work.conn.execute(query)
    ]


# --- webhooks -------------------------------------------------------------------------


def _owner(principal: Principal) -> tuple[str, str]:
    if principal.role == Role.PROVIDER:
        return "provider", str(principal.provider_id)
    if principal.role == Role.USER:
        return "user", str(principal.user_id)
    return "platform", "platform"


@dataclass
class Endpoint:
    id: str
    url: str
    event_types: tuple[str, ...]
    created_at: datetime
    secret: str | None = None


def create_endpoint(
    work: Work, principal: Principal, *, url: str, event_types: list[str] | None
) -> Endpoint:
    """An endpoint of the asker's own; its signing secret is shown only now."""
    if not isinstance(url, str):
        raise InvalidRequest("url must be a text", param="url")
    check_destination(url, allow_private=work.settings.webhook_allow_private)
    types = tuple(dict.fromkeys(event_types or EVENT_TYPES))
    wrong = [t for t in types if t not in EVENT_TYPES]
    if wrong:
        raise InvalidRequest(
            f"unknown event types {', '.join(wrong)}; use {', '.join(EVENT_TYPES)}",
            param="event_types",
        )
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    owner_type, owner_id = _owner(principal)
    now = work.clock.now()
    endpoint = Endpoint(new_id("we"), url, types, now, secret)
    work.conn.execute(
        webhook_endpoints.insert().values(
            id=endpoint.id,
            owner_type=owner_type,
            owner_id=owner_id,
            url=url,
            secret_enc=work.cipher.encrypt(secret, context="webhook_endpoints.secret"),
            event_types=",".join(types),
            created_at=now,
        )
    )
    audit.record(
        work, principal, "webhook_endpoint.created", "webhook_endpoint", endpoint.id, at=now,
        details={"event_types": list(types)},
    )  # fmt: skip
    return endpoint


def _own_endpoints(principal: Principal) -> Any:
    owner_type, owner_id = _owner(principal)
    return and_(
        webhook_endpoints.c.owner_type == owner_type, webhook_endpoints.c.owner_id == owner_id
    )


def list_endpoints(work: Work, principal: Principal) -> list[Endpoint]:
    return [
        Endpoint(r.id, r.url, tuple(r.event_types.split(",")), r.created_at)
        for r in work.conn.execute(
            select(webhook_endpoints)
            .where(_own_endpoints(principal))
            .order_by(webhook_endpoints.c.id)
        )
    ]


def list_messages(
    work: Work, principal: Principal, endpoint_id: str, *, limit: int = 100
) -> list[Any]:
    owned = work.conn.execute(
        select(webhook_endpoints.c.id).where(
            webhook_endpoints.c.id == endpoint_id, _own_endpoints(principal)
        )
    ).first()
    if owned is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}", code="endpoint_not_found")
    return list(
        work.conn.execute(
            select(webhook_messages)
            .where(webhook_messages.c.endpoint_id == endpoint_id)
            .order_by(webhook_messages.c.created_at.desc(), webhook_messages.c.id.desc())
            .limit(limit)
        )
    )


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The Standard Webhooks signature: base64 HMAC-SHA256 of "id.timestamp.body", keyed
    with the base64 part of the `whsec_` secret, as `v1,<signature>`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# How long a claimed message is kept from other senders while it is being sent; a sender
# that dies leaves it to be claimed again after this, with the same webhook-id.
CLAIM_LEASE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: str
    url: str
    payload: str
    headers: dict[str, str]
    attempts: int


def deliver_due(
    ctx: Context, client: httpx.Client | None = None, *, limit: int = 100
) -> dict[str, int]:
    """Sends due outbox messages: each is claimed in a transaction, sent with none open,
    and its outcome recorded in another, so no database lock waits on a slow receiver.

    Messages are sent BILLFOLD_WEBHOOK_CONCURRENCY at a time, each with a short timeout,
    so one slow or stalled endpoint cannot hold back every other tenant's webhooks. A
    crash after sending and before recording sends the message again later, with the same
    `webhook-id`: at least once, and receivers can tell a repeat.
    """
    counts = {"delivered": 0, "retried": 0, "failed": 0}
    # A client of our own is made only when a message is due: the worker calls this
    # every round, and most rounds have nothing to send.
    http = client
    width = ctx.settings.webhook_concurrency
    try:
        done = 0
        while done < limit:
            batch = _claim_many(ctx, min(width, limit - done))
            if not batch:
                break
            if http is None:
                http = httpx.Client(timeout=ctx.settings.webhook_timeout_s)
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                outcomes = list(pool.map(partial(_send, ctx, http), batch))
            for claimed, (status, error) in zip(batch, outcomes, strict=True):
                counts[_record(ctx, claimed, status, error)] += 1
                log.info(
                    "webhook", id=claimed.id, status=status, attempts=claimed.attempts, error=error
                )
            done += len(batch)
    finally:
        if client is None and http is not None:
            http.close()
    return counts


def _claim_many(ctx: Context, count: int) -> list[_Claimed]:
    found: list[_Claimed] = []
    while len(found) < count:
        claimed = _claim(ctx)
        if claimed is None:
            break
        found.append(claimed)
    return found


def _send(ctx: Context, http: httpx.Client, claimed: _Claimed) -> tuple[int | None, str | None]:
    """(the receiver's status, or None and why nothing was received)."""
    try:
        # Checked again now: the name's DNS answer may have changed since it was created.
        check_destination(claimed.url, allow_private=ctx.settings.webhook_allow_private)
    except InvalidRequest as refused:
        return None, f"not sent: {refused.message}"[:500]
    try:
        response = http.post(
            claimed.url,
            content=claimed.payload.encode(),
            headers=claimed.headers,
            timeout=ctx.settings.webhook_timeout_s,
        )
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    return response.status_code, None


def _claim(ctx: Context) -> _Claimed | None:
    """The next due message, leased to this sender for CLAIM_LEASE; None if none is due."""
    now = ctx.clock.now()
    with ctx.work() as work:
        query = (
            select(webhook_messages, webhook_endpoints.c.url, webhook_endpoints.c.secret_enc)
            .join(webhook_endpoints, webhook_endpoints.c.id == webhook_messages.c.endpoint_id)
            .where(
                webhook_messages.c.status == "pending",
                webhook_messages.c.next_attempt_at <= now,
            )
            .order_by(webhook_messages.c.next_attempt_at, webhook_messages.c.id)
            .limit(1)
        )
        if work.dialect == "postgresql":
            query = query.with_for_update(of=webhook_messages, skip_locked=True)
        row = work.conn.execute(query).first()
        if row is None:
            return None
        work.conn.execute(
            update(webhook_messages)
            .where(webhook_messages.c.id == row.id)
            .values(next_attempt_at=now + CLAIM_LEASE)
        )
        work.commit()
    secret = ctx.cipher.decrypt(row.secret_enc, context="webhook_endpoints.secret")
    stamp = int(now.timestamp())
    headers = {
        "content-type": "application/json",
        "webhook-id": row.id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, row.id, stamp, row.payload),
    }
    return _Claimed(row.id, row.url, row.payload, headers, int(row.attempts) + 1)


def _record(ctx: Context, claimed: _Claimed, status: int | None, error: str | None) -> str:
    """Writes a sending's outcome: delivered, retried later (backing off) or failed."""
    now = ctx.clock.now()
    values: dict[str, Any] = {
        "attempts": claimed.attempts,
        "last_status": status,
        "last_error": error,
    }
    if status is not None and 200 <= status < 300:
        values.update(status="delivered", delivered_at=now, next_attempt_at=None)
        outcome = "delivered"
    elif claimed.attempts > len(BACKOFF_S):
        values.update(status="failed", next_attempt_at=None)
        outcome = "failed"
    else:
        values["next_attempt_at"] = now + timedelta(seconds=BACKOFF_S[claimed.attempts - 1])
        outcome = "retried"
    with ctx.work() as work:
        work.conn.execute(
            update(webhook_messages).where(webhook_messages.c.id == claimed.id).values(values)
        )
        work.commit()
    return outcome
