"""/metrics with several workers: the counters are the sum over the workers, whichever worker answers.

The workers' own shares are read from the files prometheus_client's multiprocess mode writes, to show that both
workers answered some of the requests (otherwise a server that reports one worker's counters would pass too).
"""

import os
import signal
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.multiprocess import MultiProcessCollector
from sklearn.datasets import load_digits

from tests.serving.conftest import Server
from tests.serving.helpers import auth, metric, v2_image, wait_for

ROUTE = "/v2/models/{model_name}/infer"
COUNTER = "modelyard_requests_total"
MAX_REQUESTS = 400  # two idle workers share a socket unevenly: send until both have answered, at most this many


def infer_count(server) -> float:
    return metric(server, COUNTER, route=ROUTE, status="200")


def workers_of(server) -> list[int]:
    """The server's worker processes (uvicorn spawns them; multiprocessing's resource tracker is not one)."""
    pid = server.proc.pid
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [c for c in children if b"spawn_main" in _read(f"/proc/{c}/cmdline")]


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:  # the process is gone
        return b""


def _environ(pid: int) -> str:
    return _read(f"/proc/{pid}/environ").decode(errors="replace").replace("\0", "\n")


def metrics_folder(pid: int) -> Path:
    return Path(next(line.split("=", 1)[1] for line in _environ(pid).splitlines()
                     if line.startswith("PROMETHEUS_MULTIPROC_DIR=")))


def own_count(folder: Path, pid: int) -> float:
    """One worker's own count of answered infers, from its counter file."""
    files = [str(f) for f in folder.glob(f"counter_{pid}.db")]
    for family in MultiProcessCollector.merge(files) if files else []:
        for sample in family.samples:
            if sample.name == COUNTER and sample.labels == {"route": ROUTE, "status": "200"}:
                return sample.value
    return 0.0


def converges_to(server, expected: float) -> bool:
    """Several reads of /metrics (each may be answered by another worker) until the count is `expected`; a count
    over it fails at once. The last request is counted just after its answer is sent, hence the polling."""
    def check():
        seen = [infer_count(server) for _ in range(4)]
        assert max(seen) <= expected, f"/metrics counted {max(seen)} infers, {expected} were sent"
        return all(v == expected for v in seen)

    return wait_for(check, 10, f"every worker's /metrics reading {expected} infers")


def test_two_workers_sum_their_counters_and_forget_a_dead_worker(image_run, api_key):
    """N infers on fresh connections, answered by both workers, alike: /metrics counts exactly N, whichever worker
    answers. A worker killed with SIGKILL is replaced; its counts stay, its live gauge is dropped."""
    server = Server(image_run.path, "--name", "digits", "--workers", "2", "--no-access-log")
    try:
        workers = wait_for(lambda: (w := workers_of(server)) and len(w) == 2 and w, 30, "two workers")
        folder = metrics_folder(workers[0])
        assert folder.is_dir() and folder.name.startswith("modelyard-metrics-")
        before = infer_count(server)
        body, answers = v2_image(load_digits().images[:2].astype(np.float32)), set()
        sent = 0
        while sent < 20 or (min(own_count(folder, w) for w in workers) == 0 and sent < MAX_REQUESTS):
            r = httpx.post(f"{server.url}/v2/models/digits/infer", json=body, headers=auth(api_key))  # new connection
            assert r.status_code == 200, r.text
            answers.add(str(r.json()["outputs"][0]["data"]))
            sent += 1
        shares = {w: own_count(folder, w) for w in workers}
        assert min(shares.values()) > 0, f"one worker answered all {sent} requests: {shares}"
        converges_to(server, before + sent)
        assert sum(own_count(folder, w) for w in workers) == before + sent
        assert len(answers) == 1  # both workers serve the same model

        # A worker that dies is replaced; what it counted stays in the sums, its live queue-depth gauge goes.
        dead = workers[0]
        assert list(folder.glob(f"gauge_livesum_{dead}.db"))
        os.kill(dead, signal.SIGKILL)
        wait_for(lambda: dead not in workers_of(server) and len(workers_of(server)) == 2, 60,
                 "the dead worker's replacement")
        wait_for(lambda: not list(folder.glob(f"gauge_livesum_{dead}.db")), 10, "the dead worker's gauge dropped")
        converges_to(server, before + sent)
        assert metric(server, "modelyard_queue_depth") == 0
        new = next(w for w in workers_of(server) if w not in workers)
        wait_for(lambda: list(folder.glob(f"gauge_livesum_{new}.db")), 60, "the replacement's metrics")
    finally:
        server.stop()
    assert not folder.exists(), "the metrics folder outlives the server"


def test_one_worker_keeps_its_metrics_in_memory(image_server, api_key):
    """The single-worker server (image_server) writes no metrics files and counts exactly what it answered."""
    assert "PROMETHEUS_MULTIPROC_DIR=" not in _environ(image_server.proc.pid)
    before = infer_count(image_server)
    for _ in range(3):
        r = httpx.post(f"{image_server.url}/v2/models/digits/infer", json=v2_image(np.zeros((2, 8, 8))),
                       headers=auth(api_key))
        assert r.status_code == 200
    wait_for(lambda: infer_count(image_server) == before + 3, 10, "3 infers counted")
    assert "modelyard_requests_created" in httpx.get(f"{image_server.url}/metrics").text  # kept in memory
