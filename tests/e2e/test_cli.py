"""The command line, run as a user runs it: a real process on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import update

from billfold import parties
from billfold.core.access import SYSTEM
from billfold.store.ledger_tables import postings
from tests.conftest import TEST_SECRET, make_context


def _run(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BILLFOLD_HOME": str(home),
        "BILLFOLD_DATABASE_URL": url,
        "BILLFOLD_SECRET_KEY": TEST_SECRET,
    }
    return subprocess.run(
        [sys.executable, "-m", "billfold.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_keys_and_verify(sqlite_database_url: str, tmp_path: Path) -> None:
    created = _run(
        tmp_path, sqlite_database_url, "keys", "create", "--role", "admin", "--name", "ops"
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("bf_admin_")
    assert (
        _run(tmp_path, sqlite_database_url, "keys", "create", "--role", "provider").returncode == 2
    )
    ctx = make_context(sqlite_database_url, tmp_path)
    user = ctx.run(parties.create_user, SYSTEM, name="A", email="a@x.io", currency_code="USD")
    ctx.run(parties.top_up, SYSTEM, user.id, amount="10")
    ctx.run(parties.charge, SYSTEM, user_ref=user.id, amount="3", description="x")

    ok = _run(tmp_path, sqlite_database_url, "verify", "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and report["transfers"] == 2

    with ctx.db.unit_of_work() as uow:
        uow.conn.execute(update(postings).where(postings.c.id == 1).values(amount=1))
        uow.commit()
    ctx.db.dispose()
    broken = _run(tmp_path, sqlite_database_url, "verify")
    assert broken.returncode == 1
    assert "hash_chain" in broken.stdout and "ledger is broken" in broken.stdout


def test_fresh_home_creates_database_and_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
    env["BILLFOLD_HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-m", "billfold.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (home / "billfold.db").exists()
    secret = home / "secret.key"
    assert secret.exists() and oct(secret.stat().st_mode & 0o777) == "0o600"


def test_reconcile_and_export(sqlite_database_url: str, tmp_path: Path) -> None:
    assert _run(tmp_path, sqlite_database_url, "migrate").returncode == 0
    done = _run(tmp_path, sqlite_database_url, "reconcile", "--period", "2026-11", "--json")
    assert done.returncode == 0, done.stderr
    assert '"ok": true' in done.stdout
    bad = _run(tmp_path, sqlite_database_url, "reconcile", "--period", "2026-13")
    assert bad.returncode != 0
    out = tmp_path / "statements.csv"
    exported = _run(
        tmp_path,
        sqlite_database_url,
        "export",
        "statements",
        "--period",
        "2026-11",
        "--out",
        str(out),
    )
    assert exported.returncode == 0, exported.stderr
    assert out.read_text().startswith("provider,period,currency,opening")
