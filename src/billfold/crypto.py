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
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LEGACY_FORMAT = "v1"  # "v1:<payload>": before keys carried an id.
FORMAT_VERSION = "v2"  # "v2:<key id>:<payload>"


class _Key:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the secret key must be at least 32 bytes")
        encryption = _derive(secret, b"billfold/pii-encryption")
        self.aead = AESGCM(encryption)
        self.index_key = _derive(secret, b"billfold/pii-blind-index")
        self.id = hashlib.sha256(encryption).hexdigest()[:8]


class Cipher:
    """Encrypts and decrypts short strings; makes blind indexes.

    It encrypts with the current key and decrypts with it or any previous one: every
    ciphertext names the key it was made with, so that during a rotation (see
    `billfold rotate-secret`) data under the old key and the new stay readable.
    """

    def __init__(self, secret: bytes, previous: Sequence[bytes] = ()) -> None:
        self._current = _Key(secret)
        self._keys = {key.id: key for key in [*(_Key(s) for s in previous), self._current]}

    @property
    def key_id(self) -> str:
        return self._current.id

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Ciphertext bound to `context` (such as "users.email"), so rows cannot be swapped."""
        nonce = secrets.token_bytes(12)
        sealed = self._current.aead.encrypt(nonce, plaintext.encode(), context.encode())
        payload = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{FORMAT_VERSION}:{self._current.id}:{payload}"

    def decrypt(self, token: str, *, context: str) -> str:
        version, _, rest = token.partition(":")
        if version == FORMAT_VERSION:
            key_id, _, payload = rest.partition(":")
            key = self._keys.get(key_id)
            if key is None:
                raise ValueError(f"no key {key_id!r} to decrypt with; is it configured?")
            candidates = [key]
        elif version == LEGACY_FORMAT:
            payload, candidates = rest, [*self._keys.values()]
        else:
            raise ValueError(f"unknown ciphertext format {version!r}")
        raw = base64.urlsafe_b64decode(payload)
        for key in candidates:
            try:
                return key.aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
            except InvalidTag:
                continue
        raise ValueError("the ciphertext does not open with any configured key")

    def is_current(self, token: str) -> bool:
        """Whether a ciphertext is under the current key already."""
        return token.startswith(f"{FORMAT_VERSION}:{self._current.id}:")

    def blind_index(self, value: str) -> str:
        return hmac.new(self._current.index_key, value.encode(), hashlib.sha256).hexdigest()


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
