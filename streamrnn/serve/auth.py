"""API keys (kept only as SHA-256 hashes in the config) and per-session read tokens."""
from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "streamrnn_key"
QUERY_KEY = "api_key"
QUERY_READ_TOKEN = "read_token"


def new_secret() -> str:
    """A fresh random key or token: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(value: str | None) -> str | None:
    """The key from an `Authorization: Bearer KEY` value."""
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


class KeyCheck:
    """Whether a presented key is one of the configured ones; no keys configured means open."""

    def __init__(self, hashes: list[str]):
        self.hashes = [bytes.fromhex(h) for h in hashes]

    @property
    def required(self) -> bool:
        return bool(self.hashes)

    def valid(self, key: str | None) -> bool:
        if not self.required:
            return True
        digest = hashlib.sha256((key or "").encode()).digest()
        # Every hash is compared, in constant time, whatever matches.
        matches = [hmac.compare_digest(digest, h) for h in self.hashes]
        return key is not None and any(matches)


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def key_config_line(key: str) -> str:
    return f'api_key_sha256 = ["{key_hash(key)}"]'
