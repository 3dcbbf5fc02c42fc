"""Encryption of personal data at rest.

Names and emails are stored encrypted with AES-256-GCM under a key derived from the
configured secret; emails also get a keyed blind index (HMAC-SHA256) so that billfold can
find a party by email without storing it in clear. The secret comes from
BILLFOLD_SECRET_KEY or from `secret.key` under BILLFOLD_HOME, created on first run with
permissions 0600.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = "v1"


class Cipher:
    """Encrypts and decrypts short strings; makes blind indexes."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the secret key must be at least 32 bytes")
        self._aead = AESGCM(_derive(secret, b"billfold/pii-encryption"))
        self._index_key = _derive(secret, b"billfold/pii-blind-index")

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Ciphertext bound to `context` (such as "users.email"), so rows cannot be swapped."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{FORMAT_VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, *, context: str) -> str:
        version, _, payload = token.partition(":")
        if version != FORMAT_VERSION:
            raise ValueError(f"unknown ciphertext format {version!r}")
        raw = base64.urlsafe_b64decode(payload)
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()

    def blind_index(self, value: str) -> str:
        return hmac.new(self._index_key, value.encode(), hashlib.sha256).hexdigest()


def _derive(secret: bytes, label: bytes) -> bytes:
    return hmac.new(secret, label, hashlib.sha256).digest()


def load_or_create_secret(configured: str | None, home: Path) -> bytes:
    """The configured secret, or the one in home/secret.key, creating it if absent."""
    if configured:
        return base64.urlsafe_b64decode(configured.encode())
    path = home / "secret.key"
    if path.exists():
        return base64.urlsafe_b64decode(path.read_bytes().strip())
    home.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    # O_EXCL: if two processes start at once, one creates the key and the other reads it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return base64.urlsafe_b64decode(path.read_bytes().strip())
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.urlsafe_b64encode(secret) + b"\n")
    return secret
