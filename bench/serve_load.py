"""Serving throughput on the CPU: the model alone against the server, batching off and on, for one or more runs.

For each RUN: first the model alone (no HTTP) through the server's own path (transform, then proba_of), one
text per forward and 32 per forward: the ceiling no server can pass. Then `modelyard serve RUN` twice
(--max-batch-size 1, then 32), each time sending a fixed number of single-text /v1 predict requests at a fixed
concurrency from one async client on the same machine, printing requests/s, p50/p95/p99 latency and the
client's own CPU seconds (the load generator shares the cores with the server: that is what it took from it).

Targets (2-core CPU, concurrency 32): served throughput with batching >= 75% of the model-alone throughput at
batch 32; batching never slower than no batching; the best compressed candidate (a later RUN) serves >= 2.5x the
requests/s of the first RUN (the fp32 model) at equal or lower p95.
Usage: python bench/serve_load.py RUN [RUN ...] [--requests N] [--concurrency C]
       (RUN: a text classifier, e.g. the fine-tuned MiniLM of examples/debian-minilm.yaml and its compressed runs)
"""

import argparse
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

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("runs", nargs="+")
parser.add_argument("--requests", type=int, default=512)
parser.add_argument("--concurrency", type=int, default=32)
args = parser.parse_args()
REQUESTS, CONCURRENCY = args.requests, args.concurrency


def texts() -> list[str]:
    import pandas as pd

    frame = pd.read_csv(ROOT / "src/modelyard/data/builtin/debian-sections/test.csv.gz")
    return frame["text"].astype(str).tolist()


async def load(url: str, key: str, name: str, pool: list[str]) -> tuple[float, list[float], float]:
    """(seconds, latencies, the client's CPU seconds) for REQUESTS requests at CONCURRENCY."""
    sem = asyncio.Semaphore(CONCURRENCY)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=300) as client:
        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(f"/v1/models/{name}/predict", json={"texts": [pool[i % len(pool)]]})
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(CONCURRENCY)))  # warm-up, not counted
        latencies.clear()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        return time.perf_counter() - t0, latencies, time.process_time() - cpu0


def model_alone(run: str, pool: list[str], n: int = 128, repeats: int = 3) -> dict[int, float]:
    """Median ms per text through transform + proba_of, one text per forward and CONCURRENCY per forward."""
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
    return per_text


results: dict[str, dict] = {}
with tempfile.TemporaryDirectory() as home:
    env = {"MODELYARD_HOME": home}
    os.environ.update(env)
    key = subprocess.run([sys.executable, "-m", "modelyard", "keys", "create", "--name", "bench"], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    pool = texts()
    print(f"machine: {machine()}")
    print(f"{REQUESTS} requests of one text each, concurrency {CONCURRENCY}, client and server on the same machine")
    for run in args.runs:
        r = results[run] = {}
        alone = model_alone(run, pool)
        r["alone_rps"] = 1000 / alone[CONCURRENCY]
        print(f"\n{run}\n  model alone (no HTTP, median of 3): {alone[1]:.1f} ms/text one per forward, "
              f"{alone[CONCURRENCY]:.1f} ms/text {CONCURRENCY} per forward ({r['alone_rps']:.1f} texts/s): batching "
              f"can raise throughput by at most {alone[1] / alone[CONCURRENCY]:.2f}x", flush=True)
        for label, extra in (("batching off", ["--max-batch-size", "1"]),
                             ("batching on", ["--max-batch-size", str(CONCURRENCY), "--max-wait-ms", "10"])):
            server = Server(run, "--name", "m", *extra, env=env)
            try:
                seconds, lat, client_cpu = asyncio.run(load(server.url, key, "m", pool))
            finally:
                server.stop()
            ms = np.asarray(lat) * 1000
            r[label] = {"rps": REQUESTS / seconds, "p95": float(np.percentile(ms, 95))}
            print(f"  {label:13s} {REQUESTS / seconds:7.1f} requests/s  p50 {np.percentile(ms, 50):7.1f} ms  "
                  f"p95 {np.percentile(ms, 95):7.1f} ms  p99 {np.percentile(ms, 99):7.1f} ms  client CPU "
                  f"{client_cpu:.1f} s of {seconds:.1f} s", flush=True)
        on, off = r["batching on"], r["batching off"]
        share = on["rps"] / r["alone_rps"]
        print(f"  served with batching / model alone at batch {CONCURRENCY}: {share:.0%} (target >= 75%: "
              f"{'met' if share >= 0.75 else 'NOT met'}); batching on / off: {on['rps'] / off['rps']:.2f}x (target "
              f">= 1: {'met' if on['rps'] >= off['rps'] else 'NOT met'})")
first, *others = args.runs
if others:
    base = results[first]["batching on"]
    best = max(others, key=lambda run: results[run]["batching on"]["rps"])
    b = results[best]["batching on"]
    print(f"\nbest compressed candidate {best}: {b['rps'] / base['rps']:.2f}x the requests/s of {first} (target "
          f">= 2.5x: {'met' if b['rps'] >= 2.5 * base['rps'] else 'NOT met'}), p95 {b['p95']:.0f} ms against "
          f"{base['p95']:.0f} ms (target: equal or lower: {'met' if b['p95'] <= base['p95'] else 'NOT met'})")
