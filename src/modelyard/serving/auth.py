"""API keys: checked in ASGI middleware, before anything of the request (headers included) is parsed.

Every route is protected except the few that are open (health, server metadata, metrics, docs). A request without
a live key gets 401 whatever else is wrong with it; one with a key reaches the routes, which read its record with
the `api_key` dependency.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import Request

from modelyard.serving.errors import send_error

log = logging.getLogger("modelyard.serving")

SCOPE_KEY = "modelyard.key"
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/docs", "/docs/oauth2-redirect",
                        "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/static-offline-docs/",)
MISSING = ("missing or invalid API key: send `Authorization: Bearer KEY` "
           "(create one with `modelyard keys create --name CLIENT`)")


class KeyChecker:
    """Looks keys up in the registry, remembering each answer for `ttl_s` (so a revoked key stops working within
    that time), and at most `max_entries` of them (random keys from a client must not grow it without bound)."""

    def __init__(self, db_url: str | None, *, ttl_s: float = 10.0, max_entries: int = 10_000) -> None:
        self.db_url, self.ttl_s, self.max_entries = db_url, ttl_s, max_entries
        self.cache: dict[str, tuple[float, dict | None]] = {}

    async def record(self, authorization: str) -> dict | None:
        """The key's record for an Authorization header, or None if it holds no live key."""
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        hit = self.cache.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        from modelyard.store.keys import verify_key

        found = await asyncio.to_thread(verify_key, key, url=self.db_url)
        if len(self.cache) >= self.max_entries:
            self.cache.clear()
        self.cache[key] = (time.monotonic() + self.ttl_s, found)
        return found


class AuthMiddleware:
    """401 for a protected route without a live key, before the body is read; 503 if the registry is down."""

    def __init__(self, app, checker: KeyChecker | None, on_failure=lambda: None) -> None:
        self.app, self.checker, self.on_failure = app, checker, on_failure

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.checker is None or _is_open(scope["path"]):
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), b"")
        try:
            record = await self.checker.record(header.decode("latin-1"))
        except Exception:  # noqa: BLE001  (the registry is unreachable: not the client's fault, not a crash)
            log.exception("cannot check an API key")
            return await send_error(send, 503, "cannot check API keys right now (the registry is unreachable); "
                                               "retry shortly")
        if record is None:
            self.on_failure()
            return await send_error(send, 401, MISSING, [(b"www-authenticate", b"Bearer")])
        scope[SCOPE_KEY] = record
        return await self.app(scope, receive, send)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def api_key(request: Request) -> dict | None:
    """The caller's key record (None when the server runs without keys); AuthMiddleware has checked it."""
    return request.scope.get(SCOPE_KEY)
