"""Prometheus metrics of one server: requests by route and status, latency, batch sizes, queue depth, usage
flushes that failed, inputs explained and explanations refused.

With several workers (`serve --workers N`) each worker is a process of its own, so its counters are its own. The
server then runs prometheus_client's multiprocess mode: `serve` gives every start a fresh folder in
PROMETHEUS_MULTIPROC_DIR before the workers import prometheus_client, each worker writes its values to files
there, and `/metrics`, whichever worker answers, reads them all: counters and histograms are sums over the workers
(those of a worker that died included), the queue depth is the sum over the living ones. With one worker the
values stay in memory, as prometheus_client keeps them by default.
"""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder this process's metrics are written to, or None when they are kept in memory.

    prometheus_client decides once, when it is first imported, from PROMETHEUS_MULTIPROC_DIR.
    """
    return os.environ.get(MULTIPROC_ENV) if values.ValueClass is not values.MutexValue else None


class ServerMetrics:
    """The server's metrics. A gauge added here needs a `multiprocess_mode` saying how the workers' values
    combine (`livesum`, `livemax`, ...); counters and histograms are summed."""

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
                                 multiprocess_mode="livesum", registry=self.registry)
        self.auth_failures = Counter("modelyard_auth_failures", "Requests refused for a missing or wrong API key",
                                     registry=self.registry)
        self.usage_flush_failures = Counter("modelyard_usage_flush_failures",
                                            "Times the usage counters could not be saved to the registry (they are "
                                            "kept and retried)", registry=self.registry)
        self.rate_limited = Counter("modelyard_rate_limited", "Requests refused with 429 by a key's limits, by the "
                                    "limit: rate (requests per second) or quota (predictions per month)", ["reason"],
                                    registry=self.registry)
        for reason in ("rate", "quota"):
            self.rate_limited.labels(reason)
        # Explanations apart from predictions: one costs many forward passes, and none goes through the batcher.
        self.explanations = Counter("modelyard_explanations", "Inputs explained (POST /v1/models/NAME/explain), by "
                                    "method", ["method"], registry=self.registry)
        self.explain_refused = Counter("modelyard_explain_refused", "Explanations refused with 503 because the "
                                       "server's explanation slots were all taken (busy), or answered 504 for "
                                       "running past the server's time limit (timeout)", ["reason"],
                                       registry=self.registry)
        for reason in ("busy", "timeout"):
            self.explain_refused.labels(reason)

    def render(self) -> bytes:
        """The Prometheus text: this process's metrics, or, with several workers, all the workers' together."""
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        everyone = CollectorRegistry()
        MultiProcessCollector(everyone, path=folder)
        return generate_latest(everyone)


def router(served) -> APIRouter:
    r = APIRouter()

    @r.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus text format: requests by status, latency, batch sizes, queue depth (summed over workers)."""
        if served.batcher:
            served.metrics.queue_depth.set(served.batcher.depth)
        return PlainTextResponse(served.metrics.render(), media_type="text/plain; version=0.0.4")

    return r
