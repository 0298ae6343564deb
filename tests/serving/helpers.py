"""Small helpers for the server tests: keys, usage, metrics, polling."""

import json
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_cli


# A wedged server never answers; a healthy one answers a one-image request in milliseconds. The bound leaves room
# for a test machine whose two cores are shared with other test processes.
WATCHDOG_S = 5.0


def assert_still_serving(server, key):
    """A good request to the digits server is answered at once."""
    r = httpx.post(f"{server.url}/v2/models/digits/infer", json=v2_image(np.zeros((1, 8, 8))), headers=auth(key),
                   timeout=WATCHDOG_S)
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 10], r.text


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def v2_image(x):
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


def registry_url(home=None) -> str:
    """The SQLite registry the test servers share (MODELYARD_HOME), or the one under `home`."""
    from modelyard.store.db import home as default_home

    return f"sqlite:///{Path(home or default_home()) / 'registry.db'}"


def fresh_key(name, home=None):
    """A new key, so a test's usage is its own; returns (key, prefix)."""
    from modelyard.store import keys

    _, key = keys.create_key(name, url=registry_url(home))
    return key, key[:10]


def usage_of(prefix, home=None, *, cli=False) -> dict:
    """The key's usage row: read in this process (fast, for polling), or with `modelyard keys usage --json`."""
    if cli:
        env = {"MODELYARD_HOME": str(home)} if home else None
        rows = json.loads(run_cli("keys", "usage", "--json", env=env, check=True).stdout)
    else:
        from modelyard.store import keys

        rows = keys.usage(url=registry_url(home))
    return next(r for r in rows if r["prefix"] == prefix)


def wait_for(check, timeout_s=30.0, what="the condition"):
    """Poll `check()` until it returns a truthy value (returned), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s (last: {value!r})")
        time.sleep(0.2)


def wait_for_usage(prefix, requests, predictions, home=None, timeout_s=30.0) -> dict:
    """The key's usage once it reaches exactly these counts (the server flushes every second); fails if it
    overshoots or does not get there."""
    def check():
        row = usage_of(prefix, home)
        assert row["requests"] <= requests and row["predictions"] <= predictions, row
        return row if (row["requests"], row["predictions"]) == (requests, predictions) else None

    return wait_for(check, timeout_s, f"usage of {prefix} reaching {requests} requests, {predictions} predictions")


def metric(server, name, **labels) -> float:
    """A sample's value from the server's /metrics (0 if it has not been counted yet)."""
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
