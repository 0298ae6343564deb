"""API keys and their usage, in the registry.

A key is 32 random bytes shown once at creation; only its SHA-256 is stored (a key has 256 bits of entropy, so a
slow password hash would add nothing). Usage counters are updated with `SET n = n + :delta`, so several servers
writing at once add up instead of overwriting each other.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import text

from modelyard.store.db import RegistryError, connect, reading
from modelyard.store.models import NAME, now

PREFIX = "my_"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(name: str, *, url: str | None = None) -> tuple[dict, str]:
    """A new key for client `name`: its record, and the key itself (not stored anywhere)."""
    if not NAME.match(name):
        raise RegistryError(f"client name {name!r}: use letters, digits, '.', '_' and '-'")
    key = PREFIX + secrets.token_urlsafe(32)
    with connect(url).begin() as conn:
        conn.execute(text("INSERT INTO api_keys (name, key_sha256, prefix, created_at) VALUES (:n, :h, :p, :t)"),
                     {"n": name, "h": _hash(key), "p": key[:10], "t": now()})
        key_id = conn.execute(text("SELECT id FROM api_keys WHERE key_sha256 = :h"), {"h": _hash(key)}).scalar()
        conn.execute(text("INSERT INTO usage (key_id) VALUES (:k)"), {"k": key_id})
    return {"id": key_id, "name": name, "prefix": key[:10]}, key


def revoke_key(name_or_prefix: str, *, url: str | None = None) -> int:
    """Revoke every live key of a client name, or the one key with this prefix. Returns how many."""
    with connect(url).begin() as conn:
        n = conn.execute(text("UPDATE api_keys SET revoked_at = :t WHERE revoked_at IS NULL AND "
                              "(name = :k OR prefix = :k)"), {"t": now(), "k": name_or_prefix}).rowcount
    if n == 0:
        raise RegistryError(f"no live key named or prefixed {name_or_prefix!r}; see `modelyard keys usage`")
    return n


def verify_key(key: str | None, *, url: str | None = None) -> dict | None:
    """The key's record if it is known and not revoked, else None."""
    if not key:
        return None
    with reading(url) as conn:
        r = conn.execute(text("SELECT id, name, prefix FROM api_keys WHERE key_sha256 = :h AND revoked_at IS NULL"),
                         {"h": _hash(key)}).first()
    return dict(r._mapping) if r else None


def add_usage(key_id: int, *, requests: int, predictions: int, compute_ms: float, url: str | None = None) -> None:
    add_usage_many({key_id: (requests, predictions, compute_ms)}, url=url)


def add_usage_many(counts: dict[int, tuple[int, int, float]], *, url: str | None = None) -> None:
    """Add {key id: (requests, predictions, compute ms)} to the usage counters, all in one transaction: if it
    fails, none was added, so the caller can keep the counts and retry."""
    if not counts:
        return
    t = now()
    rows = [{"r": r, "p": p, "c": c, "t": t, "k": key_id} for key_id, (r, p, c) in counts.items()]
    with connect(url).begin() as conn:
        conn.execute(text("UPDATE usage SET requests = requests + :r, predictions = predictions + :p, "
                          "compute_ms = compute_ms + :c, last_used = :t WHERE key_id = :k"), rows)


def usage(*, url: str | None = None) -> list[dict]:
    with reading(url) as conn:
        rows = conn.execute(text(
            "SELECT k.id, k.name, k.prefix, k.created_at, k.revoked_at, u.requests, u.predictions, u.compute_ms, "
            "u.last_used FROM api_keys k JOIN usage u ON u.key_id = k.id ORDER BY k.id"))
        return [dict(r._mapping) for r in rows]
