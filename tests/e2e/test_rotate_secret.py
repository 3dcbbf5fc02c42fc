"""Rotating the data key: everything stays readable during the rotation and after it,
and nothing is left under the old key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from billfold import alerts, parties
from billfold.core.access import SYSTEM
from billfold.crypto import Cipher
from billfold.store.tables import providers, users, webhook_endpoints
from tests.conftest import TEST_SECRET, make_context

NEW_SECRET = base64.urlsafe_b64encode(b"n" * 32).decode()


def _cli(home: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billfold.cli", "rotate-secret"],
        env={**os.environ, "BILLFOLD_HOME": str(home), "BILLFOLD_DATABASE_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rotate_secret_moves_everything_to_the_new_key(database_url: str, tmp_path: Path) -> None:
    old = make_context(database_url, tmp_path)
    user = old.run(parties.create_user, SYSTEM, name="Ana", email="ana@x.io", currency_code="USD")
    old.run(
        parties.create_provider, SYSTEM, name="Maps Co", email="ops@maps.io", commission_rate="0"
    )
    endpoint = old.run(alerts.create_endpoint, SYSTEM, url="http://127.0.0.1:9/x", event_types=None)
    old.db.dispose()

    # Both keys configured: the servers read the old data and write under the new key.
    both = make_context(database_url, tmp_path)
    both.cipher = Cipher(
        base64.urlsafe_b64decode(NEW_SECRET), [base64.urlsafe_b64decode(TEST_SECRET)]
    )
    assert both.read(parties.get_user, SYSTEM, user.id).name == "Ana"
    both.db.dispose()

    done = _cli(
        tmp_path,
        database_url,
        BILLFOLD_SECRET_KEY=NEW_SECRET,
        BILLFOLD_PREVIOUS_SECRET_KEYS=json.dumps([TEST_SECRET]),
    )
    assert done.returncode == 0, done.stderr
    assert "users: 1 rows" in done.stderr and "webhook_endpoints: 1 rows" in done.stderr
    again = _cli(
        tmp_path,
        database_url,
        BILLFOLD_SECRET_KEY=NEW_SECRET,
        BILLFOLD_PREVIOUS_SECRET_KEYS=json.dumps([TEST_SECRET]),
    )
    assert "users: 0 rows" in again.stderr  # Nothing left to move.

    # The new key alone now reads everything, emails are found by their new index...
    new = make_context(database_url, tmp_path)
    new.cipher = Cipher(base64.urlsafe_b64decode(NEW_SECRET))
    assert new.read(parties.get_user, SYSTEM, user.id).email == "ana@x.io"
    with new.work(read_only=True) as work:
        index = work.conn.execute(select(users.c.email_index)).scalar_one()
        assert index == new.cipher.blind_index("ana@x.io")
        secret = work.conn.execute(
            select(webhook_endpoints.c.secret_enc).where(webhook_endpoints.c.id == endpoint.id)
        ).scalar_one()
        assert new.cipher.decrypt(secret, context="webhook_endpoints.secret") == endpoint.secret
        name = work.conn.execute(select(providers.c.name_enc)).scalar_one()
    new.db.dispose()
    # ...and the old key alone reads nothing any more.
    with pytest.raises(ValueError):
        Cipher(base64.urlsafe_b64decode(TEST_SECRET)).decrypt(name, context="providers.name")
