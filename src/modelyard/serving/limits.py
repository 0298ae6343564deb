"""Per-key limits: a rate of requests per second with a burst, and a monthly quota of predictions.

Set with `modelyard keys create --rate 5 --burst 10 --quota 100000` (or `keys limit` on an existing key), stored
with the key in the registry and read with it, so a change reaches a running server within its key cache's time
(10 s). A key without limits is never refused here.

- The rate is a token bucket per key: `burst` requests at once, refilled at `rate` per second. Every request with
  a key counts (metadata too), checked right after authentication, before the body is read. The buckets live in
  each server process: with `serve --workers N` every worker has its own, so a key gets up to N times its rate
  and N bursts in all (sharing them would cost a registry write per request; the quota is the limit that must be
  exact). Run one worker where the rate must hold exactly.
- The quota counts predictions, the unit usage is billed in (items predicted; tokens generated), per calendar
  month (UTC). A request's predictions are reserved in the registry, with one conditional UPDATE, before the model
  runs, and given back if it fails (for a generation: the tokens it did not produce), so the quota is exact
  across concurrent requests, workers and servers sharing the registry: with a quota of 10, requests totalling
  10 predictions succeed and the next prediction is refused. A request is served whole or refused whole.

Over a limit the answer is 429 with `Retry-After` (whole seconds, rounded up) and `{"error": ...}` naming the limit
and when it resets; each refusal is counted in `modelyard_rate_limited_total{reason="rate"|"quota"}`.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from starlette.exceptions import HTTPException

from modelyard.serving.auth import SCOPE_KEY
from modelyard.serving.errors import send_error

log = logging.getLogger("modelyard.serving")


MAX_RETRY_AFTER_S = 10**7  # longer than any month: a quota resets sooner, a rate of at least MIN_RATE refills sooner


class Refused(HTTPException):
    """429 with Retry-After: raised in a route, it is answered by the server's HTTPException handler."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        wait = min(retry_after_s, MAX_RETRY_AFTER_S)  # a rate stored before MIN_RATE existed can make it infinite
        super().__init__(429, message, headers={"Retry-After": str(max(1, math.ceil(wait)))})


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: int  # capacity
    tokens: float
    updated: float  # monotonic seconds

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there is one (nothing taken)."""
        self.refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class Reservation:
    """Predictions counted against a key's quota before the model runs; `settle` gives back those not made."""
    limiter: "Limiter | None" = None
    key_id: int = 0
    n: int = 0
    month: str = ""

    async def settle(self, used: int) -> None:
        unused, self.n = self.n - used, 0
        if unused > 0 and self.limiter:
            await self.limiter.release(self.key_id, unused, self.month)


class Limiter:
    """One server process's view of its keys' limits: the rate buckets, and quota reservations in the registry.

    `clock` (monotonic seconds) drives the buckets, `wall` (epoch seconds) the calendar month; tests pass their
    own. `on_refused(reason)` is called for each refusal ("rate" or "quota").
    """

    def __init__(self, db_url: str | None, *, on_refused: Callable[[str], None] = lambda reason: None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.db_url, self.on_refused, self.clock, self.wall = db_url, on_refused, clock, wall
        self.buckets: dict[int, TokenBucket] = {}

    def admit(self, key: dict) -> None:
        """Take one request from the key's rate, or raise Refused."""
        limits = key.get("limits")
        if limits is None or limits.rate is None:
            self.buckets.pop(key["id"], None)
            return
        now = self.clock()
        bucket = self.buckets.get(key["id"])
        if bucket is None:
            bucket = self.buckets[key["id"]] = TokenBucket(limits.rate, limits.burst, limits.burst, now)
        elif (bucket.rate, bucket.burst) != (limits.rate, limits.burst):  # changed with `keys limit`
            bucket.refill(now)
            bucket.rate, bucket.burst, bucket.tokens = limits.rate, limits.burst, min(bucket.tokens, limits.burst)
        wait = bucket.take(now)
        if wait:
            self.on_refused("rate")
            raise Refused(f"rate limit of key {key['name']!r} reached: {limits.rate:g} requests per second with "
                          f"a burst of {limits.burst}; the next request is allowed in "
                          f"{max(1, math.ceil(min(wait, MAX_RETRY_AFTER_S))):,} s", wait)

    async def reserve(self, key: dict | None, n: int) -> Reservation:
        """Count `n` predictions against the key's monthly quota before they are made, or raise Refused (429) if
        they do not fit in what is left this month (503 if the registry cannot be reached)."""
        limits = key.get("limits") if key else None
        if limits is None or limits.quota is None or n <= 0:
            return Reservation()
        from modelyard.store.keys import month_of, reserve_quota

        t = self.wall()
        month = month_of(t)
        try:
            ok, used, quota = await asyncio.to_thread(reserve_quota, key["id"], n, month, url=self.db_url)
        except Exception:  # noqa: BLE001  (a locked or unreachable registry: not the client's fault)
            log.exception("cannot reserve predictions against a key's quota")
            raise HTTPException(503, "cannot check this key's quota right now (the registry is busy or "
                                     "unreachable); retry shortly", headers={"Retry-After": "1"}) from None
        if ok:
            return Reservation(self, key["id"], n, month)
        self.on_refused("quota")
        reset = _next_month(t)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reset))
        need = (f"this request needs {n:,}, more than the whole quota: send fewer items" if n > quota else
                f"{used:,} used in {month}, {quota - used:,} left, this request needs {n:,}")
        raise Refused(f"monthly quota of key {key['name']!r} reached: {quota:,} predictions per calendar month "
                      f"(UTC); {need}. It resets at {when}", reset - t)

    @asynccontextmanager
    async def quota(self, key: dict | None, n: int) -> AsyncIterator[Reservation]:
        """`async with limiter.quota(key, n):` reserves n predictions, and gives them back if the block fails."""
        held = await self.reserve(key, n)
        try:
            yield held
        except BaseException:
            await held.settle(0)
            raise

    async def release(self, key_id: int, n: int, month: str) -> None:
        from modelyard.store.keys import release_quota

        try:
            await asyncio.to_thread(release_quota, key_id, n, month, url=self.db_url)
        except Exception:  # noqa: BLE001  (the predictions stay counted: the client's loss, logged to be corrected)
            log.exception("could not give back %d reserved prediction(s) of key id %d for %s; they stay counted "
                          "against its quota", n, key_id, month)


def _next_month(t: float) -> float:
    """Epoch seconds of the start (UTC) of the month after the one holding `t`."""
    now = time.gmtime(t)
    year, month = (now.tm_year + 1, 1) if now.tm_mon == 12 else (now.tm_year, now.tm_mon + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


class RateLimits:
    """ASGI middleware, after authentication and before the body is read: 429 for a key over its rate."""

    def __init__(self, app, limiter: Limiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope, receive, send):
        key = scope.get(SCOPE_KEY) if scope["type"] == "http" else None
        if key is not None:
            try:
                self.limiter.admit(key)
            except Refused as exc:
                return await send_error(send, 429, exc.detail, [(b"retry-after", exc.headers["Retry-After"].encode())])
        return await self.app(scope, receive, send)
