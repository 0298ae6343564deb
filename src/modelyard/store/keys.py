"""API keys and their usage, in the registry.

A key is 32 random bytes shown once at creation; only its SHA-256 is stored (a key has 256 bits of entropy, so a
slow password hash would add nothing). Usage counters are updated with `SET n = n + :delta`, so several servers
writing at once add up instead of overwriting each other.

A key may carry limits (NULL: none): a rate in requests per second with a burst, enforced by each server process
(see serving/limits.py), and a monthly quota of predictions, counted here in `quota_use` per calendar month (UTC).
A server reserves a request's predictions with one conditional UPDATE before it runs the model, so the quota holds
exactly however many workers and servers share the registry.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import text

from modelyard.store.db import RegistryError, connect, reading
from modelyard.store.models import NAME, now

PREFIX = "my_"
MAX_RATE, MAX_BURST, MAX_QUOTA = 1e6, 10**9, 10**15
MIN_RATE = 1e-6  # one request in 11.6 days; a slower rate's waits overflow (1e-320/s: an infinite Retry-After)
KEEP = object()  # set_limits: leave this limit as it is


@dataclass(frozen=True)
class Limits:
    """A key's limits; None is no limit."""
    rate: float | None = None  # requests per second, refilling the burst
    burst: int | None = None  # requests allowed at once; set whenever rate is
    quota: int | None = None  # predictions per calendar month (UTC)

    @classmethod
    def checked(cls, rate: float | None = None, burst: int | None = None, quota: int | None = None) -> "Limits":
        """Limits from a user's values, or a RegistryError saying which value is wrong and what to give.
        A rate without a burst gets a burst of one second's requests (at least 1)."""
        if rate is not None and not (math.isfinite(rate) and MIN_RATE <= rate <= MAX_RATE):
            raise RegistryError(f"rate {rate:g}: give the requests per second a key may make, from {MIN_RATE:g} "
                                f"to {MAX_RATE:g} (e.g. --rate 5); leave it out for no rate limit")
        if burst is not None and not 1 <= burst <= MAX_BURST:
            raise RegistryError(f"burst {burst}: give how many requests may come at once, from 1 to {MAX_BURST:,} "
                                "(e.g. --burst 10); leave it out for one second's worth of the rate")
        if burst is not None and rate is None:
            raise RegistryError(f"burst {burst} without a rate: a burst is how many requests may come at once "
                                "before the rate applies; give --rate too (e.g. --rate 5 --burst 10)")
        if quota is not None and not 1 <= quota <= MAX_QUOTA:
            raise RegistryError(f"quota {quota}: give the predictions a key may make per calendar month, from 1 "
                                f"to {MAX_QUOTA:,} (e.g. --quota 100000); leave it out for no quota, revoke the key "
                                "to stop it")
        if rate is not None and burst is None:
            burst = max(1, math.ceil(rate))
        return cls(rate=None if rate is None else float(rate), burst=burst, quota=quota)

    def describe(self) -> str:
        parts = ([f"{self.rate:g}/s burst {self.burst}"] if self.rate is not None else []) + \
                ([f"{self.quota:,} predictions/month"] if self.quota is not None else [])
        return ", ".join(parts) or "no limits"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(name: str, *, limits: Limits = Limits(), url: str | None = None) -> tuple[dict, str]:
    """A new key for client `name`, with `limits` (see `Limits.checked`): its record, and the key itself (not
    stored anywhere)."""
    if not NAME.match(name):
        raise RegistryError(f"client name {name!r}: use letters, digits, '.', '_' and '-'")
    key = PREFIX + secrets.token_urlsafe(32)
    with connect(url).begin() as conn:
        conn.execute(text("INSERT INTO api_keys (name, key_sha256, prefix, created_at, rate_per_s, burst, "
                          "monthly_quota) VALUES (:n, :h, :p, :t, :rate, :burst, :quota)"),
                     {"n": name, "h": _hash(key), "p": key[:10], "t": now(), "rate": limits.rate,
                      "burst": limits.burst, "quota": limits.quota})
        key_id = conn.execute(text("SELECT id FROM api_keys WHERE key_sha256 = :h"), {"h": _hash(key)}).scalar()
        conn.execute(text("INSERT INTO usage (key_id) VALUES (:k)"), {"k": key_id})
    return {"id": key_id, "name": name, "prefix": key[:10], "limits": limits}, key


def set_limits(name_or_prefix: str, *, rate=KEEP, burst=KEEP, quota=KEEP, url: str | None = None) -> list[dict]:
    """Change the limits of every live key of a client name, or of the one key with this prefix: each argument
    given (None removes that limit) replaces the key's own; a new rate without a burst keeps the key's burst, or
    gets one second's worth. Servers apply it within their key cache's time (10 s). Returns the keys changed."""
    with connect(url).begin() as conn:
        rows = conn.execute(text("SELECT id, name, prefix, rate_per_s, burst, monthly_quota FROM api_keys WHERE "
                                 "revoked_at IS NULL AND (name = :k OR prefix = :k)"), {"k": name_or_prefix}).all()
        if not rows:
            raise RegistryError(f"no live key named or prefixed {name_or_prefix!r}; see `modelyard keys list`")
        changed = []
        for r in rows:
            new_rate = r.rate_per_s if rate is KEEP else rate
            new_burst = burst if burst is not KEEP else (None if new_rate is None else r.burst)
            limits = Limits.checked(new_rate, new_burst, r.monthly_quota if quota is KEEP else quota)
            conn.execute(text("UPDATE api_keys SET rate_per_s = :rate, burst = :burst, monthly_quota = :quota "
                              "WHERE id = :id"),
                         {"rate": limits.rate, "burst": limits.burst, "quota": limits.quota, "id": r.id})
            changed.append({"id": r.id, "name": r.name, "prefix": r.prefix, "limits": limits})
    return changed


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
        r = conn.execute(text("SELECT id, name, prefix, rate_per_s, burst, monthly_quota FROM api_keys "
                              "WHERE key_sha256 = :h AND revoked_at IS NULL"), {"h": _hash(key)}).first()
    if r is None:
        return None
    return {"id": r.id, "name": r.name, "prefix": r.prefix,
            "limits": Limits(rate=r.rate_per_s, burst=r.burst, quota=r.monthly_quota)}


def month_of(t: float | None = None) -> str:
    """The calendar month (UTC) a quota counts in, as YYYY-MM."""
    return time.strftime("%Y-%m", time.gmtime(time.time() if t is None else t))


def reserve_quota(key_id: int, n: int, month: str, *, url: str | None = None) -> tuple[bool, int, int | None]:
    """Count `n` predictions against the key's quota for `month` if they fit in it, in one atomic UPDATE (exact
    however many servers reserve at once). Returns (reserved, predictions counted this month, the quota)."""
    with connect(url).begin() as conn:
        conn.execute(text("INSERT INTO quota_use (key_id, month) VALUES (:k, :m) "
                          "ON CONFLICT (key_id, month) DO NOTHING"), {"k": key_id, "m": month})
        ok = conn.execute(text(
            "UPDATE quota_use SET predictions = predictions + :n WHERE key_id = :k AND month = :m AND ("
            "(SELECT monthly_quota FROM api_keys WHERE id = :k) IS NULL OR "
            "predictions + :n <= (SELECT monthly_quota FROM api_keys WHERE id = :k))"),
            {"n": n, "k": key_id, "m": month}).rowcount == 1
        used, quota = conn.execute(text(
            "SELECT q.predictions, k.monthly_quota FROM quota_use q JOIN api_keys k ON k.id = q.key_id "
            "WHERE q.key_id = :k AND q.month = :m"), {"k": key_id, "m": month}).one()
    return ok, used, quota


def release_quota(key_id: int, n: int, month: str, *, url: str | None = None) -> None:
    """Give back `n` reserved predictions that were not made (the request failed, a generation stopped early)."""
    if n <= 0:
        return
    with connect(url).begin() as conn:
        conn.execute(text("UPDATE quota_use SET predictions = predictions - :n WHERE key_id = :k AND month = :m"),
                     {"n": n, "k": key_id, "m": month})


def add_usage(key_id: int, *, requests: int, predictions: int, compute_ms: float, explanations: int = 0,
              url: str | None = None) -> None:
    add_usage_many({key_id: (requests, predictions, compute_ms, explanations)}, url=url)


def add_usage_many(counts: dict[int, tuple], *, url: str | None = None) -> None:
    """Add {key id: (requests, predictions, compute ms[, explanations])} to the usage counters, all in one
    transaction: if it fails, none was added, so the caller can keep the counts and retry."""
    if not counts:
        return
    t = now()
    rows = [{"r": c[0], "p": c[1], "c": c[2], "e": c[3] if len(c) > 3 else 0, "t": t, "k": key_id}
            for key_id, c in counts.items()]
    with connect(url).begin() as conn:
        conn.execute(text("UPDATE usage SET requests = requests + :r, predictions = predictions + :p, "
                          "compute_ms = compute_ms + :c, explanations = explanations + :e, last_used = :t "
                          "WHERE key_id = :k"), rows)


def usage(*, month: str | None = None, url: str | None = None) -> list[dict]:
    """Every key with its usage since it was created (requests, predictions, inputs explained, compute ms), its
    limits, and the predictions counted against its quota in `month` (default: this month, UTC; counted while the
    key has a quota, so 0 for a key without one)."""
    month = month or month_of()
    with reading(url) as conn:
        rows = conn.execute(text(
            "SELECT k.id, k.name, k.prefix, k.created_at, k.revoked_at, u.requests, u.predictions, u.explanations, "
            "u.compute_ms, u.last_used, k.rate_per_s, k.burst, k.monthly_quota, "
            "COALESCE(q.predictions, 0) AS quota_used "
            "FROM api_keys k JOIN usage u ON u.key_id = k.id "
            "LEFT JOIN quota_use q ON q.key_id = k.id AND q.month = :m ORDER BY k.id"), {"m": month})
        return [{**dict(r._mapping), "month": month} for r in rows]
