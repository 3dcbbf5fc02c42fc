"""django-hordak's funds-checked single charges, for bench/hotpath.py --hordak-rate.

The issue of the hot path (15) measures billfold's single charges on PostgreSQL against a
general-purpose Python ledger library doing the same charge: django-hordak. This is that
charge, written as a careful hordak user would write it, in process, one at a time:

- in one transaction (`transaction.atomic()`), the user's wallet account row is locked
  (`select_for_update`), its balance read (hordak sums the account's legs) and the
  charge refused if the wallet cannot cover it: the funds check;
- one hordak `Transaction` with three legs: the wallet pays the amount, the provider
  earns 80% of it and the platform 20% (billfold's three-leg charge with commission).

It runs on a fresh PostgreSQL database of its own, created and dropped here, with
hordak's own migrations (its triggers check that every transaction balances).

django-hordak is not one of billfold's dependencies: run this from a virtual
environment of its own, e.g.

    python3 -m venv /tmp/hordak && /tmp/hordak/bin/pip install django-hordak 'psycopg[binary]'
    /tmp/hordak/bin/python bench/hordak_charges.py [--charges 2000] [--url postgresql://...]

and give the rate it prints to `python bench/hotpath.py --backends postgres --hordak-rate`.
"""

from __future__ import annotations

import argparse
import time
import uuid
from decimal import Decimal
from urllib.parse import urlsplit

import psycopg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=2000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    name = f"hordak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        print(f"{run(args.url, name, args.charges):.0f} funds-checked single charges/s")
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def run(url: str, name: str, charges: int) -> float:
    import django
    from django.conf import settings

    parts = urlsplit(url)
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": name,
                "USER": parts.username or "postgres",
                "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "127.0.0.1",
                "PORT": str(parts.port or 5432),
            }
        },
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "mptt",
            "djmoney",
            "hordak",
        ],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        HORDAK_DEFAULT_CURRENCY="USD",
        CURRENCIES=("USD",),
    )
    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from djmoney.money import Money
    from hordak.models import Account, Leg, Transaction

    call_command("migrate", verbosity=0)
    bank = Account.objects.create(name="Bank", type="AS", currencies=["USD"])
    wallet = Account.objects.create(name="Wallet", type="LI", currencies=["USD"])
    provider = Account.objects.create(name="Provider", type="LI", currencies=["USD"])
    platform = Account.objects.create(name="Platform", type="IN", currencies=["USD"])
    # The user's top-up: the bank holds the money, the platform owes it to the user.
    wallet.transfer_to(bank, Money(Decimal(1_000_000), "USD"))  # Cr wallet, Dr bank.
    amount = Decimal("1.00")  # Hordak keeps 2 decimal places: shares of 0.80 and 0.20.
    share = amount * Decimal("0.8")

    def charge() -> None:
        with transaction.atomic():
            locked = Account.objects.select_for_update().get(pk=wallet.pk)
            if locked.get_simple_balance().monies()[0].amount < amount:
                raise RuntimeError("insufficient funds")
            posted = Transaction.objects.create(description="charge")
            Leg.objects.create(transaction=posted, account=wallet, debit=Money(amount, "USD"))
            Leg.objects.create(transaction=posted, account=provider, credit=Money(share, "USD"))
            Leg.objects.create(
                transaction=posted, account=platform, credit=Money(amount - share, "USD")
            )

    for _ in range(50):  # Warm-up: connections, caches, the first plans.
        charge()
    started = time.perf_counter()
    for _ in range(charges):
        charge()
    rate = charges / (time.perf_counter() - started)
    balance = wallet.get_simple_balance().monies()[0].amount
    expected = Decimal(1_000_000) - amount * (charges + 50)
    assert balance == expected, (balance, expected)  # Every charge is in the ledger, once.
    from django.db import connections

    connections.close_all()
    return rate


if __name__ == "__main__":
    main()
