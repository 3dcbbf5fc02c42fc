"""`billfold demo`: a demo platform, lived through 60 days.

Four providers (a maps API with graduated pricing, an SMS API priced by time of day, a
storage service sold as monthly packages with included quotas, a payments API taking a
percentage), plans of every charge model, 50 users (prepaid and postpaid) with 60 days
of usage, subscriptions, invoices, statements, alerts, and logins for an operator, a
provider and a user. The days are lived on a test clock through the same services the
API uses, so every figure in it is one billfold computed, and `billfold verify` holds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog

from billfold import analytics, catalog, identity, metering, parties, prepaid, subscriptions
from billfold.alerts import evaluate, set_settings
from billfold.clock import TestClock
from billfold.config import Settings
from billfold.core.access import SYSTEM, Principal, Role
from billfold.core.context import Context, build_context
from billfold.domain.errors import BillfoldError
from billfold.invoicing.billing import bill_run

log = structlog.get_logger("billfold.demo")
DAYS: Final = 60
USERS: Final = 50
PASSWORD: Final = "billfold-demo-1"  # noqa: S105 (the demo's published logins)

PROVIDERS: Final[list[dict[str, Any]]] = [
    {
        "name": "Atlas Maps", "email": "maps@demo.billfold.test", "commission": "0.2",
        "service": ("maps", "Maps API", "Geocoding, routing and tiles."),
        "metrics": [("calls", "API calls", "count", None)],
        "plans": [
            {"code": "maps-payg", "name": "Maps pay as you go", "interval": "none",
             "charges": [{"metric": "calls", "model": "graduated", "tiers": [
                 {"up_to": 1000, "unit_price": "0"}, {"up_to": 100000, "unit_price": "0.002"},
                 {"up_to": None, "unit_price": "0.001"}]}]},
            {"code": "maps-volume", "name": "Maps volume", "interval": "month", "fixed_fee": "5",
             "charges": [{"metric": "calls", "model": "volume", "tiers": [
                 {"up_to": 5000, "unit_price": "0.0015"},
                 {"up_to": None, "unit_price": "0.001"}]}]},
            {"code": "maps-pro", "name": "Maps Pro", "interval": "month", "fixed_fee": "30",
             "minimum": "0", "charges": [
                 {"metric": "calls", "model": "per_unit", "unit_price": "0.0008",
                  "free_units": "20000"}]},
        ],
        "default": "maps-payg",
    },
    {
        "name": "Beacon SMS", "email": "sms@demo.billfold.test", "commission": "0.15",
        "service": ("sms", "SMS API", "Text messages to any phone."),
        "metrics": [("messages", "Messages", "count", None)],
        "plans": [
            {"code": "sms-time", "name": "SMS by time of day", "interval": "none",
             "charges": [{"metric": "messages", "model": "time_of_day",
                          "timezone": "Asia/Shanghai", "default_unit_price": "0.03",
                          "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                       "from": "09:00", "to": "18:00", "unit_price": "0.05"}]}]},
            {"code": "sms-bundles", "name": "SMS bundles", "interval": "month",
             "charges": [{"metric": "messages", "model": "package", "package_size": "100",
                          "package_price": "3", "rounding": "up"}]},
        ],
        "default": "sms-time",
    },
    {
        "name": "Cirrus Storage", "email": "storage@demo.billfold.test", "commission": "0.25",
        "service": ("storage", "Object storage", "Buckets and files, sold in monthly packages."),
        "metrics": [("storage_gb", "Stored GB", "max", "gb"),
                    ("requests", "Requests", "count", None)],
        "plans": [
            {"code": "storage-50", "name": "Storage 50 GB", "interval": "month",
             "fixed_fee": "9", "charges": [
                 {"metric": "storage_gb", "model": "per_unit", "unit_price": "0.1",
                  "free_units": "50"},
                 {"metric": "requests", "model": "per_unit", "unit_price": "0.0004",
                  "free_units": "100000"}]},
            {"code": "storage-200", "name": "Storage 200 GB", "interval": "month",
             "fixed_fee": "25", "charges": [
                 {"metric": "storage_gb", "model": "per_unit", "unit_price": "0.08",
                  "free_units": "200"},
                 {"metric": "requests", "model": "per_unit", "unit_price": "0.0003",
                  "free_units": "500000"}]},
            {"code": "storage-year", "name": "Storage yearly 200 GB", "interval": "year",
             "fixed_fee": "199", "charges": [
                 {"metric": "storage_gb", "model": "per_unit", "unit_price": "0.08",
                  "free_units": "200"}]},
        ],
        "default": None,
    },
    {
        "name": "Drift Payments", "email": "pay@demo.billfold.test", "commission": "0.1",
        "service": ("payments", "Payments API", "Card payments for shops."),
        "metrics": [("volume", "Payment volume", "sum", "amount")],
        "plans": [
            {"code": "pay-standard", "name": "Payments standard", "interval": "none",
             "charges": [{"metric": "volume", "model": "percentage", "rate": "0.029",
                          "fixed_fee_per_event": "0.3"}]},
            {"code": "pay-scale", "name": "Payments at scale", "interval": "month",
             "fixed_fee": "49", "charges": [{"metric": "volume", "model": "graduated_percentage",
                 "tiers": [{"up_to": 10000, "rate": "0.025"}, {"up_to": None, "rate": "0.018"}]}]},
        ],
        "default": "pay-standard",
    },
]  # fmt: skip


@dataclass
class Loaded:
    """What the demo made, and the logins it printed."""

    providers: dict[str, str] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)
    logins: list[tuple[str, str, str]] = field(default_factory=list)
    """(who, email, password)"""
    admin_totp: str = ""
    events: int = 0
    invoices: int = 0


def already_loaded(ctx: Context) -> bool:
    with ctx.work(read_only=True) as work:
        try:
            catalog.get_service(work, SYSTEM, "maps")
        except Exception:
            return False
    return True


def _plan(spec: dict[str, Any], service: str) -> dict[str, Any]:
    return {"currency": "USD", "service": service, **spec}


def load(settings: Settings, progress: Callable[[str, int, int], None] | None = None) -> Loaded:
    """Loads the demo into the settings' database; refuses a database that has it."""
    report = progress or (lambda _stage, _done, _total: None)
    now = datetime.now(UTC).replace(microsecond=0)
    clock = TestClock(now - timedelta(days=DAYS, hours=1))
    ctx = build_context(settings, clock=clock)
    try:
        if already_loaded(ctx):
            raise RuntimeError("the demo is already loaded in this database")
        loaded = Loaded()
        rng = random.Random(20261201)  # noqa: S311 (made-up usage, not secrets)
        _catalog(ctx, loaded)
        _people(ctx, loaded, rng)
        _promotions(ctx, loaded)
        _live(ctx, loaded, rng, now, report)
        loaded.invoices = int(bill_run(ctx, as_of=clock.now()).get("invoices_finalized", 0))
        analytics.fold(ctx)
        evaluate(ctx)
        return loaded
    finally:
        ctx.db.dispose()


def _catalog(ctx: Context, loaded: Loaded) -> None:
    with ctx.work() as work:
        for spec in PROVIDERS:
            made = parties.create_provider(work, SYSTEM, name=spec["name"], email=spec["email"],
                                           commission_rate=spec["commission"])  # fmt: skip
            loaded.providers[spec["service"][0]] = made.id
            code, name, description = spec["service"]
            catalog.create_service(work, SYSTEM, code=code, name=name, description=description,
                                   provider_id=made.id)  # fmt: skip
            for m_code, m_name, aggregation, fld in spec["metrics"]:
                catalog.create_metric(work, SYSTEM, code, code=m_code, name=m_name,
                                      aggregation=aggregation, field=fld)  # fmt: skip
            for plan in spec["plans"]:
                catalog.create_plan(work, SYSTEM, _plan(plan, code))
            if spec["default"]:
                metering.set_default_plan(work, SYSTEM, code, spec["default"])
        work.commit()


def _people(ctx: Context, loaded: Loaded, rng: random.Random) -> None:
    first = ["Ana", "Bo", "Chen", "Dara", "Eli", "Fang", "Gus", "Hana", "Ivo", "Jun"]
    last = ["Li", "Moreau", "Novak", "Okafor", "Park", "Quinn", "Rossi", "Sato", "Wang", "Zhou"]
    with ctx.work() as work:
        for i in range(USERS):
            postpaid = i % 5 == 4
            user = parties.create_user(
                work, SYSTEM, name=f"{first[i % 10]} {last[(i * 3) % 10]}",
                email=f"user{i + 1}@demo.billfold.test", currency_code="USD",
                billing_mode="postpaid" if postpaid else "prepaid",
                credit_limit="500" if postpaid else "0", external_id=f"demo-{i + 1}",
            )  # fmt: skip
            loaded.users.append(user.id)
            if not postpaid:
                opening = 1000 if i == 0 else rng.choice([100, 200, 500, 1000])
                parties.top_up(work, SYSTEM, user.id, amount=str(opening),
                               reference="demo opening balance")  # fmt: skip
            # Two or three services each, on a mix of plans.
            picks = rng.sample(PROVIDERS, k=2 + i % 2)
            if i == 0:  # The demo user: pay as you go, by time of day, and a monthly package.
                picks = [PROVIDERS[0], PROVIDERS[1], PROVIDERS[2]]
            for spec in picks:
                plan = spec["plans"][0] if i == 0 else rng.choice(spec["plans"])
                savepoint = work.conn.begin_nested()
                try:
                    subscriptions.create(work, SYSTEM, user_ref=user.id, plan_code=plan["code"])
                except BillfoldError as refused:  # A wallet too small for the fee.
                    savepoint.rollback()
                    log.info("demo_subscription_refused", user=user.id, reason=refused.code)
                else:
                    savepoint.commit()
        set_settings(work, SYSTEM, loaded.users[0], monthly_budget="40", thresholds=[50, 80, 100],
                     low_balance="20")  # fmt: skip
        identity.grant_login(work, SYSTEM, email="user@demo.billfold.test", password=PASSWORD,
                             user_id=loaded.users[0])  # fmt: skip
        identity.grant_login(work, SYSTEM, email="provider@demo.billfold.test", password=PASSWORD,
                             provider_id=loaded.providers["maps"])  # fmt: skip
        admin = identity.create_admin(work, email="admin@demo.billfold.test", password=PASSWORD)
        work.commit()
    loaded.admin_totp = admin.totp.secret
    loaded.logins = [
        ("operator", "admin@demo.billfold.test", PASSWORD),
        ("provider (Atlas Maps)", "provider@demo.billfold.test", PASSWORD),
        ("user", "user@demo.billfold.test", PASSWORD),
    ]


def _promotions(ctx: Context, loaded: Loaded) -> None:
    """A resource package and a voucher of the maps provider's, a platform discount code
    and welcome credit: the demo user holds one of each."""
    maps = Principal("demo-maps", Role.PROVIDER, provider_id=loaded.providers["maps"])
    user = loaded.users[0]
    with ctx.work() as work:
        package = prepaid.create_package(
            work, maps, code="maps-100k", name="100,000 map calls", service="maps",
            currency_code="USD", price="40", quantities={"calls": "100000"}, validity_days=90,
        )  # fmt: skip
        prepaid.create_package(
            work, maps, code="maps-daily", name="2,000 calls a day", service="maps",
            currency_code="USD", price="15", quantities={"calls": "2000"}, validity_days=30,
            reset="day",
        )  # fmt: skip
        prepaid.create_coupon(work, maps, code="ATLAS5", kind="amount", currency_code="USD",
                              amount="5", services=["maps"])  # fmt: skip
        prepaid.create_coupon(work, SYSTEM, code="WELCOME10", kind="percent",
                              currency_code="USD", percent="10", max_discount="20")  # fmt: skip
        prepaid.redeem(work, SYSTEM, user, "WELCOME10")
        prepaid.redeem(work, SYSTEM, user, "ATLAS5")
        prepaid.grant_credit(work, SYSTEM, user, amount="10", expires_at=None,
                             reason="welcome to the demo")  # fmt: skip
        prepaid.buy_package(work, SYSTEM, user, package.id)
        work.commit()


def _events_for(
    spec: dict[str, Any], user: str, day: datetime, rng: random.Random, n: int
) -> list[dict[str, Any]]:
    service = spec["service"][0]
    found: list[dict[str, Any]] = []
    for metric, _name, aggregation, fld in spec["metrics"]:
        for k in range(n):
            moment = day + timedelta(minutes=rng.randrange(0, 24 * 60))
            event: dict[str, Any] = {
                "id": f"demo-{user}-{metric}-{day:%Y%m%d}-{k}", "user": user, "service": service,
                "metric": metric, "timestamp": moment.isoformat(),
            }  # fmt: skip
            if aggregation == "count":
                small = service == "sms"
                event["value"] = str(
                    rng.choice([1, 2, 5, 10, 20] if small else [10, 25, 50, 100, 250])
                )
            elif fld is not None:
                amount = rng.choice(["12.50", "40", "99.99", "250", "18.20"])
                event["properties"] = {fld: str(rng.randint(20, 80)) if fld == "gb" else amount}
            found.append(event)
    return found


def _live(
    ctx: Context,
    loaded: Loaded,
    rng: random.Random,
    until: datetime,
    report: Callable[[str, int, int], None],
) -> None:
    """Each day: the users' usage, sent by their providers; each week, a bill run."""
    clock = ctx.clock
    assert isinstance(clock, TestClock)
    keys = {code: Principal(f"demo_{code}", Role.PROVIDER, pid, None)
            for code, pid in loaded.providers.items()}  # fmt: skip
    with ctx.work(read_only=True) as work:
        subs, _more = subscriptions.list_for(work, SYSTEM, user_ref=None, limit=1000, after=None)
    uses = [(s.user, s.service) for s in subs]
    by_code = {spec["service"][0]: spec for spec in PROVIDERS}
    for day_index in range(DAYS):
        day = (until - timedelta(days=DAYS - day_index)).replace(hour=0, minute=0, second=0)
        clock.set(max(clock.now(), day + timedelta(hours=23, minutes=59)))
        batches: dict[str, list[dict[str, Any]]] = {}
        for user, service in uses:
            if rng.random() < 0.25:
                continue
            spec = by_code[service]
            batches.setdefault(service, []).extend(
                _events_for(spec, user, day, rng, rng.randint(1, 3))
            )
        for service, events in batches.items():
            result = metering.ingest(ctx, keys[service], events)
            loaded.events += result.accepted
        if day_index % 7 == 6:
            bill_run(ctx, as_of=clock.now())
        report("days", day_index + 1, DAYS)
    clock.set(max(clock.now(), until))
    # A careless client's last batch, so the event debugger has refusals to show.
    user = uses[0][0] if uses else "usr_unknown"
    careless = [
        {"id": "demo-bad-metric", "user": user, "service": "maps", "metric": "tiles",
         "timestamp": until.isoformat()},
        {"id": "demo-bad-user", "user": "usr_nobody", "service": "maps", "metric": "calls",
         "timestamp": until.isoformat()},
        {"id": "demo-bad-time", "user": user, "service": "maps", "metric": "calls",
         "timestamp": "yesterday"},
    ]  # fmt: skip
    metering.ingest(ctx, keys["maps"], careless)
