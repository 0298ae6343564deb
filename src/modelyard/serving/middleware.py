"""ASGI middleware: request metrics and the access log (outermost), and body limits with the v2 binary extension
(innermost, after authentication). Each answers a bad request itself, with `{"error": ...}`."""

from __future__ import annotations

import logging
import time
from typing import Callable

from starlette.routing import Match

from modelyard.serving.auth import SCOPE_KEY
from modelyard.serving.errors import send_error
from modelyard.serving.protocol import BadRequest, binary_to_json, header_length

access_log = logging.getLogger("modelyard.access")
# Logged and counted for a request that got no answer because its client went away first (nginx's convention):
# not a 500, which would page whoever watches the server's error rate for a client's dropped connection.
CLIENT_CLOSED = 499
log = logging.getLogger("modelyard.serving")


class RequestLog:
    """Counts every answer by route and status (4xx from other middleware included), and writes the access log:
    one line per request with the time, the key's client name (never the key), the route, status and latency.

    `queue_depth` (the batcher's) is written to its gauge after every request, so that with several workers each
    worker's share of the summed gauge is current, not only that of the worker answering /metrics."""

    def __init__(self, app, metrics, routes: list, access: bool = True,
                 queue_depth: Callable[[], int] | None = None) -> None:
        self.app, self.metrics, self.access, self.queue_depth = app, metrics, access, queue_depth
        self.routes = [r for r in routes if isinstance(getattr(r, "path", None), str)]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [CLIENT_CLOSED]

        async def watch(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if status[0] == CLIENT_CLOSED:  # the server's fault: answered 500 by Starlette's outermost handler
                status[0] = 500
            raise
        finally:
            seconds = time.perf_counter() - t0
            route = self.route(scope)
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(seconds)
            if self.queue_depth is not None:
                self.metrics.queue_depth.set(self.queue_depth())
            if self.access:
                key = scope.get(SCOPE_KEY)
                shown = route if route != "unmatched" else f"unmatched:{_printable(scope['path'])}"
                access_log.info("%s key=%s %s %s %d %.1fms", _utc_now(), key["name"] if key else "-",
                                scope["method"], shown, status[0], seconds * 1000)

    def route(self, scope) -> str:
        """The route's path template; requests answered before routing (401, 413) are matched here."""
        route = scope.get("route")
        if route is None:
            for candidate in self.routes:
                if candidate.matches(scope)[0] != Match.NONE:
                    route = candidate
                    break
        return getattr(route, "path", None) or "unmatched"


def _utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _printable(path: str) -> str:
    return path[:200].encode("unicode_escape").decode("ascii")  # a client's %0A must not forge a log line


class BodyLimits:
    """Caps the body size (413), and turns v2 binary-extension bodies into JSON for the typed route.

    `tighter(path)` gives a route's own smaller cap and the hint its 413 ends with (how to raise it), or None.
    """

    def __init__(self, app, max_body_bytes: int,
                 tighter: Callable[[str], tuple[int, str] | None] = lambda path: None) -> None:
        self.app, self.max, self.tighter = app, max_body_bytes, tighter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit, hint = self.tighter(scope["path"]) or (self.max, "")
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            return await send_error(send, 413, f"body of {int(declared):,} bytes is over the limit of {limit:,}{hint}")
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > limit:
                return await send_error(send, 413, f"body is over the limit of {limit:,} bytes{hint}")
        body = b"".join(chunks)
        if "inference-header-content-length" in headers:
            try:
                body = binary_to_json(body, header_length(headers["inference-header-content-length"], len(body)))
            except BadRequest as exc:
                return await send_error(send, exc.status, str(exc))
            except Exception:  # noqa: BLE001  (a shape of header binary_to_json does not expect: still the client's)
                log.exception("cannot read a binary-extension request")
                return await send_error(send, 400, "the binary-extension request cannot be read: check its JSON "
                                                   "header and each input's binary_data_size")
            # In place, not a copy: the router writes the matched route into this scope, and RequestLog reads it.
            scope["headers"] = [(k, v) for k, v in scope["headers"]
                                if k.lower() not in (b"content-length", b"inference-header-content-length",
                                                     b"content-type")] + [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        elif "content-type" not in headers:  # tritonclient sends JSON bodies without a Content-Type
            scope["headers"] = [*scope["headers"], (b"content-type", b"application/json")]
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
