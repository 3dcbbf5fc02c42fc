"""Transport: security headers, CORS off by default, HTTPS, and the shared key on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import TEST_SECRET, LiveServer


def test_every_answer_carries_the_security_headers(server: LiveServer, admin: httpx.Client) -> None:
    for answer in (
        admin.get("/v1/me"),
        httpx.get(f"{server.url}/healthz"),
        httpx.get(f"{server.url}/v1/me"),  # A 401.
        admin.get("/v1/nowhere"),  # A 404.
    ):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in answer.headers  # Plain HTTP here.


def test_cors_is_off_unless_configured(server: LiveServer) -> None:
    preflight = httpx.options(
        f"{server.url}/v1/me",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = httpx.get(f"{server.url}/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path, url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "BILLFOLD_HOME": str(home), "BILLFOLD_DATABASE_URL": url, **extra}
    env.pop("BILLFOLD_SECRET_KEY", None)
    env.update(extra)
    return env


def test_serve_speaks_https_with_hsts(sqlite_database_url: str, tmp_path: Path) -> None:
    from billfold import identity, parties
    from billfold.core.access import SYSTEM
    from tests.conftest import make_context

    people = make_context(sqlite_database_url, tmp_path)
    with people.work() as work:
        user = parties.create_user(work, SYSTEM, name="Ana", email="ana@example.com",
                                   currency_code="USD")  # fmt: skip
        identity.grant_login(work, SYSTEM, email="ana@example.com",
                             password="correct horse battery", user_id=user.id)  # fmt: skip
        work.commit()
    people.db.dispose()
    cert, key = _certificate(tmp_path)
    port = _free_port()
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    process = subprocess.Popen(
        [sys.executable, "-m", "billfold.cli", "serve", "--port", str(port), *tls],
        env=_env(tmp_path, sqlite_database_url, BILLFOLD_SECRET_KEY=TEST_SECRET),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusted)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        assert answer.status_code == 200
        assert answer.headers["strict-transport-security"].startswith("max-age=")
        # Over TLS the console's session cookie is Secure and __Host- prefixed.
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trusted) as browser:
            login = browser.post(
                "/login", data={"email": "ana@example.com", "password": "correct horse battery"}
            )
            assert login.status_code == 303, login.text
            cookie = login.headers["set-cookie"]
            assert cookie.startswith("__Host-billfold_session=")
            assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie
            assert "Domain" not in cookie
            assert browser.get("/wallet").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.postgres
def test_serve_on_postgresql_needs_the_shared_key(pg_database_url: str, tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "billfold.cli", "serve", "--port", str(_free_port())],
        env=_env(tmp_path, pg_database_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "BILLFOLD_SECRET_KEY" in refused.stderr
    assert not (tmp_path / "secret.key").exists()
