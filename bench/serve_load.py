"""Serving throughput with dynamic batching off and on, under a bounded load on loopback.

Starts `modelyard serve RUN` twice (--max-batch-size 1, then 32), each time sending a fixed number of
single-text /v1 predict requests at a fixed concurrency from one async client, and prints requests/s and
p50/p95/p99 latency, then the throughput ratio. Target: at concurrency 32, batching on gives at least 3x the
throughput of batching off, with p95 under 250 ms on a 2-core CPU.
It first times the model alone (no HTTP), through the server's own path (transform, then proba_of), one text
per forward against 32 per forward: that ratio bounds what batching can give, whatever the server does, and
32 x (ms per text at batch 32) bounds the mean latency at concurrency 32 from below (Little's law).
Usage: python bench/serve_load.py RUN [requests] [concurrency]
       (RUN: a text classifier, e.g. the fine-tuned MiniLM run of examples/debian-minilm.yaml)
"""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

import modelyard

from _common import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.serving.conftest import Server  # noqa: E402  (the tests' own server starter)

run = sys.argv[1]
REQUESTS = int(sys.argv[2]) if len(sys.argv) > 2 else 512
CONCURRENCY = int(sys.argv[3]) if len(sys.argv) > 3 else 32


def texts() -> list[str]:
    import pandas as pd

    frame = pd.read_csv(ROOT / "src/modelyard/data/builtin/debian-sections/test.csv.gz")
    return frame["text"].astype(str).tolist()


async def load(url: str, key: str, name: str, pool: list[str]) -> tuple[float, list[float]]:
    sem = asyncio.Semaphore(CONCURRENCY)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as client:
        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(f"/v1/models/{name}/predict", json={"texts": [pool[i % len(pool)]]})
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(CONCURRENCY)))  # warm-up, not counted
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        return time.perf_counter() - t0, latencies


def model_alone(pool: list[str], n: int = 128, repeats: int = 3) -> tuple[float, float]:
    """Median ms per text through transform + proba_of: one text per forward, and CONCURRENCY per forward."""
    model = modelyard.load(run)
    texts_ = pool[:n]
    model.proba_of(model.transform(texts_[:CONCURRENCY]))  # warm-up
    per_text = {}
    for size in (1, CONCURRENCY):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, n, size):
                model.proba_of(model.transform(texts_[i:i + size]))
            times.append((time.perf_counter() - t0) / n * 1000)
        per_text[size] = statistics.median(times)
    return per_text[1], per_text[CONCURRENCY]


with tempfile.TemporaryDirectory() as home:
    env = {"MODELYARD_HOME": home}
    os.environ.update(env)
    key = subprocess.run([sys.executable, "-m", "modelyard", "keys", "create", "--name", "bench"], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    pool = texts()
    print(f"machine: {machine()}")
    print(f"model: {run}; {REQUESTS} requests of one text each, concurrency {CONCURRENCY}, client and server on "
          "the same machine")
    one, batched = model_alone(pool)
    print(f"model alone (no HTTP, median of 3): {one:.1f} ms/text one per forward, {batched:.1f} ms/text "
          f"{CONCURRENCY} per forward: batching can raise throughput by at most {one / batched:.2f}x here; at most "
          f"{1000 / batched:.0f} requests/s, so the mean latency at concurrency {CONCURRENCY} is at least "
          f"{CONCURRENCY * batched:.0f} ms", flush=True)
    results = {}
    for label, args in (("batching off", ["--max-batch-size", "1"]),
                        ("batching on", ["--max-batch-size", "32", "--max-wait-ms", "10"])):
        server = Server(run, "--name", "m", *args, env=env)
        try:
            seconds, lat = asyncio.run(load(server.url, key, "m", pool))
        finally:
            server.stop()
        ms = np.asarray(lat) * 1000
        results[label] = REQUESTS / seconds
        print(f"{label:13s} {REQUESTS / seconds:7.1f} requests/s  p50 {np.percentile(ms, 50):7.1f} ms  "
              f"p95 {np.percentile(ms, 95):7.1f} ms  p99 {np.percentile(ms, 99):7.1f} ms  "
              f"(median {statistics.median(ms):.1f} ms, n={len(ms)})", flush=True)
        results[label + " p95"] = float(np.percentile(ms, 95))
ratio = results["batching on"] / results["batching off"]
print(f"throughput ratio, batching on / off: {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'}); "
      f"p95 with batching {results['batching on p95']:.0f} ms (target < 250 ms: "
      f"{'met' if results['batching on p95'] < 250 else 'NOT met'})")
