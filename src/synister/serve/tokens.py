"""Access tokens: ``syn_<key id>_<secret>``, stored only as a SHA-256 hash of the whole token.

The key id (48 random bits, public: `token list` shows it, `token revoke` takes it) finds the
row; the secret holds 256 random bits. A slow password hash (bcrypt, Argon2) protects secrets
people choose, which are guessable; against 256 random bits no number of guesses per second
helps, so one SHA-256 suffices and keeps each request's check at microseconds. The stored hash
is compared with :func:`hmac.compare_digest`, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "syn_"
_TOKEN_RE = re.compile(r"^syn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def new_token() -> tuple[str, str]:
    """A fresh (key id, token)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str | None:
    """The key id of a well-formed token, else None."""
    match = _TOKEN_RE.match(token)
    return match.group(1) if match else None


def hash_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)
