"""Prometheus metrics of one server: requests by route and status, latency, batch sizes, queue depth."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # its own, so two apps in one process (tests) do not collide
        self.requests = Counter("modelyard_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("modelyard_request_latency_seconds", "Request latency by route", ["route"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.batch_size = Histogram("modelyard_batch_size", "Items per forward pass",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry)
        self.queue_depth = Gauge("modelyard_queue_depth", "Requests waiting for a forward pass",
                                 registry=self.registry)
        self.auth_failures = Counter("modelyard_auth_failures", "Requests refused for a missing or wrong API key",
                                     registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware_class(self):
        metrics = self

        class Middleware:
            """Counts every answer, 4xx from the limits middleware included."""

            def __init__(self, app) -> None:
                self.app = app

            async def __call__(self, scope, receive, send):
                if scope["type"] != "http":
                    return await self.app(scope, receive, send)
                t0, status = time.perf_counter(), [500]

                async def watch(msg):
                    if msg["type"] == "http.response.start":
                        status[0] = msg["status"]
                    await send(msg)

                try:
                    await self.app(scope, receive, watch)
                finally:
                    route = scope.get("route")
                    path = getattr(route, "path", None) or "unmatched"
                    metrics.requests.labels(path, str(status[0])).inc()
                    metrics.latency.labels(path).observe(time.perf_counter() - t0)

        return Middleware
