"""Holds (authorizations): funds reserved on an account until captured, voided or expired."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select, update

from billfold.domain.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
)
from billfold.domain.ledger import (
    Balance,
    HoldStatus,
    TransferSpec,
    check_hold,
)
from billfold.ledger._order import chain_for, lock_chains, lock_journal
from billfold.ledger._records import HoldView
from billfold.store.db import UnitOfWork
from billfold.store.ledger_tables import accounts, holds
from billfold.store.prepared import Prepared

# --- holds ----------------------------------------------------------------------------


def _hold_view(row: object) -> HoldView:
    return HoldView(**{name: getattr(row, name) for name in HoldView.__slots__})


def _lock_holds(uow: UnitOfWork, hold_ids: set[str | None]) -> dict[str, HoldView]:
    wanted = sorted(h for h in hold_ids if h)
    if not wanted:
        return {}
    if len(wanted) == 1:  # A capture's: prepared (docs/DECISIONS.md, 119).
        rows = _HOLD_FOR_UPDATE.rows(uow.conn, {"hold_id": wanted[0]})
    else:
        rows = list(uow.conn.execute(_HOLDS_FOR_UPDATE, {"hold_ids": wanted}))
    return {row.id: _hold_view(row) for row in rows}


def _release_for_capture(
    spec: TransferSpec, hold_rows: dict[str, HoldView], balances: dict[int, Balance], now: datetime
) -> dict[int, Balance]:
    """Checks that the hold may be captured by `spec`; the balance with its reservation released."""
    assert spec.hold_id is not None
    hold = hold_rows.get(spec.hold_id)
    if hold is None:
        raise NotFound(f"no hold {spec.hold_id}", code="hold_not_found", param="hold")
    if hold.status != HoldStatus.PENDING:
        raise Conflict(f"the hold is {hold.status}, not pending", code="hold_not_pending")
    if hold.expires_at <= now:
        raise Conflict("the hold has expired", code="hold_expired")
    debit = -sum(p.amount for p in spec.postings if p.account_id == hold.account_id)
    # Usage that already happened (a transfer with an overflow account) may cost more
    # than was held; the rest is paid like any usage. Other captures stay within the hold.
    happened = spec.overflow_account is not None or hold.account_id in spec.unbounded_accounts
    if debit > hold.amount and not happened:
        raise InvalidRequest(
            "a capture may not take more than the hold reserved",
            code="capture_exceeds_hold",
            param="amount",
        )
    before = balances[hold.account_id]
    released = {hold.account_id: Balance(before.posted, before.held - hold.amount, before.floor)}
    return released


def _capture_update(spec: TransferSpec, hold: HoldView, now: datetime) -> dict[str, object]:
    assert spec.hold_id is not None
    captured = min(
        -sum(p.amount for p in spec.postings if p.account_id == hold.account_id), hold.amount
    )
    return {
        "b_id": spec.hold_id,
        "b_status": str(HoldStatus.CAPTURED),
        "b_captured": captured,
        "b_closed_at": now,
        "b_transfer_id": spec.id,
    }


# The hot path's statements, built once (docs/DECISIONS.md, 102) and prepared (118).
_ACCOUNT = select(accounts.c.posted, accounts.c.held, accounts.c.floor, accounts.c.parted).where(
    accounts.c.id == bindparam("account_id")
)
_ACCOUNT_FOR_UPDATE = {
    nowait: Prepared(_ACCOUNT.with_for_update(nowait=nowait)) for nowait in (False, True)
}
_HOLD_BY_ID = Prepared(select(holds).where(holds.c.id == bindparam("hold_id")))
_LAPSED = Prepared(
    select(holds.c.id, holds.c.amount).where(
        holds.c.account_id == bindparam("account_id"),
        holds.c.status == str(HoldStatus.PENDING),
        holds.c.expires_at <= bindparam("now"),
    )
)
_HOLD_FOR_UPDATE = Prepared(
    select(holds).where(holds.c.id == bindparam("hold_id")).with_for_update()
)
_HOLDS_FOR_UPDATE = (
    select(holds)
    .where(holds.c.id.in_(bindparam("hold_ids", expanding=True)))
    .order_by(holds.c.id)
    .with_for_update()
)
_MOVE_HELD = (
    update(accounts).where(accounts.c.id == bindparam("account_id")).values(held=bindparam("held"))
)
_SET_HELD = Prepared(_MOVE_HELD)
_NEW_HOLD = holds.insert().values({c.name: bindparam(f"v_{c.name}") for c in holds.c})
_INSERT_HOLD = Prepared(_NEW_HOLD)
# On PostgreSQL the account's reservation moves in the hold's own insert: one round trip.
_HOLD_AND_HELD_PG = Prepared(_NEW_HOLD.add_cte(_MOVE_HELD.cte("held")))


def create_hold(
    uow: UnitOfWork,
    *,
    hold_id: str,
    account_id: int,
    amount: int,
    expires_at: datetime,
    now: datetime,
    user_id: str | None = None,
    provider_id: str | None = None,
    description: str | None = None,
    service: str | None = None,
    metric: str | None = None,
    quantity: str | None = None,
    limit: int | None = None,
    fresh: bool = False,
) -> HoldView:
    """Reserves `amount` on the account until `expires_at`; idempotent by `hold_id`
    (`fresh`: the caller has just made the id, so no hold has it).

    `limit` is how low the hold may take the account instead of its floor (a postpaid
    user's receivable, which has none: minus the credit limit), checked under its lock."""
    if amount < 0:
        raise InvalidRequest("a hold must not be for a negative amount", param="amount")
    if expires_at <= now:
        raise InvalidRequest("a hold must expire in the future", param="expires_at")
    nowait = lock_journal(uow, user_id, provider_id)
    row = _ACCOUNT_FOR_UPDATE[nowait].first(uow.conn, {"account_id": account_id})
    if row is None:
        raise NotFound("no such account", code="account_not_found")
    if row.parted:
        raise InvalidRequest("a hold reserves a user's money, not the platform's or a provider's")
    # A hold id the caller has just made is nobody's yet: nothing to look up.
    existing = None if fresh else _HOLD_BY_ID.first(uow.conn, {"hold_id": hold_id})
    if existing is not None:
        view = _hold_view(existing)
        if (view.account_id, view.amount) != (account_id, amount):
            raise Conflict(f"hold {hold_id} exists with different content", code="hold_id_reused")
        return view
    released = _expire_account_holds(uow, account_id, now)
    current = Balance(row.posted, row.held - released, row.floor)
    after = check_hold(current, amount, limit=limit)
    values = {
        "id": hold_id,
        "account_id": account_id,
        "amount": amount,
        "captured": 0,
        "status": str(HoldStatus.PENDING),
        "created_at": now,
        "expires_at": expires_at,
        "closed_at": None,
        "capture_transfer_id": None,
        "user_id": user_id,
        "provider_id": provider_id,
        "description": description,
        "service": service,
        "metric": metric,
        "quantity": quantity,
    }
    new = {f"v_{name}": value for name, value in values.items()}
    held = {"account_id": account_id, "held": after.held}
    if uow.dialect == "postgresql":
        _HOLD_AND_HELD_PG.count(uow.conn, {**held, **new})
    else:
        _SET_HELD.count(uow.conn, held)
        _INSERT_HOLD.count(uow.conn, new)
    return HoldView(**values)  # type: ignore[arg-type]


def get_hold(uow: UnitOfWork, hold_id: str) -> HoldView:
    row = _HOLD_BY_ID.first(uow.conn, {"hold_id": hold_id})
    if row is None:
        raise NotFound(f"no hold {hold_id}", code="hold_not_found", param="id")
    return _hold_view(row)


def void_hold(uow: UnitOfWork, hold_id: str, *, now: datetime) -> HoldView:
    """Releases a pending hold; voiding it again returns it unchanged."""
    return release_hold(uow, hold_id, now=now, status=HoldStatus.VOIDED)


def release_hold(uow: UnitOfWork, hold_id: str, *, now: datetime, status: HoldStatus) -> HoldView:
    """Closes a pending hold with `status` and releases its reservation, moving no money.

    Voiding is one use; a capture whose usage cost nothing more is the other. Closing it
    again with the same status returns it unchanged.
    """
    hold = get_hold(uow, hold_id)
    nowait = lock_journal(uow, hold.user_id, hold.provider_id)
    row = _ACCOUNT_FOR_UPDATE[nowait].first(uow.conn, {"account_id": hold.account_id})
    hold = _hold_view(
        uow.conn.execute(select(holds).where(holds.c.id == hold_id).with_for_update()).one()
    )
    if hold.status == status:
        return hold
    if hold.status != HoldStatus.PENDING:
        raise Conflict(f"the hold is {hold.status} and cannot be {status}", code="hold_not_pending")
    uow.conn.execute(
        update(accounts).where(accounts.c.id == hold.account_id).values(held=row.held - hold.amount)
    )
    uow.conn.execute(
        update(holds).where(holds.c.id == hold_id).values(status=str(status), closed_at=now)
    )
    return get_hold(uow, hold_id)


def _expire_account_holds(uow: UnitOfWork, account_id: int, now: datetime) -> int:
    """Expires the account's lapsed holds (the account row is locked); returns the release."""
    lapsed = _LAPSED.rows(uow.conn, {"account_id": account_id, "now": now})
    if not lapsed:
        return 0
    uow.conn.execute(
        update(holds)
        .where(holds.c.id.in_([h.id for h in lapsed]))
        .values(status=str(HoldStatus.EXPIRED), closed_at=now)
    )
    released = sum(h.amount for h in lapsed)
    uow.conn.execute(
        update(accounts).where(accounts.c.id == account_id).values(held=accounts.c.held - released)
    )
    return int(released)


def expire_holds(uow: UnitOfWork, *, now: datetime, limit: int = 1000) -> int:
    """Expires up to `limit` lapsed holds across accounts; returns how many it expired."""
    account_ids = (
        uow.conn.execute(
            select(holds.c.account_id)
            .where(holds.c.status == str(HoldStatus.PENDING), holds.c.expires_at <= now)
            .distinct()
            .limit(limit)
        )
        .scalars()
        .all()
    )
    expired = 0
    if account_ids:
        owners = uow.conn.execute(
            select(holds.c.user_id, holds.c.provider_id)
            .where(holds.c.account_id.in_(account_ids), holds.c.status == str(HoldStatus.PENDING))
            .distinct()
        ).all()
        lock_chains(uow, {chain_for(uow, o.user_id, o.provider_id) for o in owners})
    for account_id in sorted(account_ids):
        uow.conn.execute(
            select(accounts.c.id).where(accounts.c.id == account_id).with_for_update()
        ).one()
        before = uow.conn.execute(
            select(func.count()).where(
                holds.c.account_id == account_id,
                holds.c.status == str(HoldStatus.PENDING),
                holds.c.expires_at <= now,
            )
        ).scalar_one()
        _expire_account_holds(uow, account_id, now)
        expired += int(before)
    return expired
