"""Per-key limits: a rate with a burst and a monthly quota of predictions, on the real server (429 with Retry-After,
counted in /metrics), exact under concurrency and across two workers; keys without limits untouched; the CLI."""

import asyncio
import calendar
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

import modelyard
from modelyard.serving.limits import Limiter, Refused
from modelyard.store import keys
from tests.conftest import run_cli, tiny_config
from tests.serving.conftest import Server
from tests.serving.helpers import auth, metric, registry_url, usage_of, v2_image, wait_for, wait_for_usage

SLOW = 0.001  # requests per second: a burst is not refilled by a whole request within any test's time


def limited_key(name, **limits) -> tuple[str, str]:
    """A new key with these limits (rate, burst, quota); returns (key, prefix)."""
    _, key = keys.create_key(name, limits=keys.Limits.checked(**limits), url=registry_url())
    return key, key[:10]


def infer(server, key, n=1) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/digits/infer", json=v2_image(np.zeros((n, 8, 8))), headers=auth(key),
                      timeout=60)


def all_at_once(server, key, count, n=1) -> list[httpx.Response]:
    """`count` infer requests of `n` items each, released together from as many threads."""
    start = threading.Barrier(count)

    def one(_):
        start.wait()
        return infer(server, key, n)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def statuses(responses) -> dict[int, int]:
    return {s: sum(r.status_code == s for r in responses) for s in sorted({r.status_code for r in responses})}


def test_a_burst_over_the_rate_gets_429_with_retry_after_and_the_burst_succeeds(image_server):
    key, prefix = limited_key("burst", rate=SLOW, burst=4)
    before = metric(image_server, "modelyard_rate_limited_total", reason="rate")
    answers = all_at_once(image_server, key, 10)
    assert statuses(answers) == {200: 4, 429: 6}
    for r in (r for r in answers if r.status_code == 429):
        assert re.fullmatch(r"\d+", r.headers["retry-after"]) and 900 <= int(r.headers["retry-after"]) <= 1000
        error = r.json()["error"]
        assert "rate limit of key 'burst'" in error and "0.001 requests per second with a burst of 4" in error
    # Every route with a key counts against the rate, and a refused request is neither served nor metered.
    r = httpx.get(f"{image_server.url}/v2/models/digits", headers=auth(key))
    assert r.status_code == 429 and "rate limit" in r.json()["error"]
    assert metric(image_server, "modelyard_rate_limited_total", reason="rate") - before == 7
    wait_for_usage(prefix, requests=4, predictions=4)


def test_the_quota_is_exact_and_a_request_is_served_whole_or_refused_whole(image_server):
    key, prefix = limited_key("quota", quota=10)
    before = metric(image_server, "modelyard_rate_limited_total", reason="quota")
    assert [infer(image_server, key, n).status_code for n in (4, 4)] == [200, 200]
    r = infer(image_server, key, 3)
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert "monthly quota of key 'quota' reached: 10 predictions" in error and "8 used in" in error
    assert "2 left, this request needs 3" in error
    reset = re.search(r"resets at (\d{4})-(\d{2})-01T00:00:00Z", error)
    assert reset and 1 <= int(r.headers["retry-after"]) <= 31 * 86400
    assert infer(image_server, key, 2).status_code == 200  # exactly 10 predictions
    r = infer(image_server, key, 1)
    assert r.status_code == 429 and "10 used in" in r.json()["error"] and "0 left" in r.json()["error"]
    r = infer(image_server, key, 11)
    assert r.status_code == 429 and "more than the whole quota" in r.json()["error"]
    assert metric(image_server, "modelyard_rate_limited_total", reason="quota") - before == 3
    wait_for_usage(prefix, requests=3, predictions=10)
    row = usage_of(prefix, cli=True)
    assert (row["monthly_quota"], row["quota_used"], row["rate_per_s"]) == (10, 10, None)


def test_the_quota_is_exact_for_concurrent_requests(image_server):
    key, prefix = limited_key("concurrent", quota=7)
    assert statuses(all_at_once(image_server, key, 12)) == {200: 7, 429: 5}
    assert statuses(all_at_once(image_server, key, 4)) == {429: 4}
    assert usage_of(prefix)["quota_used"] == 7
    wait_for_usage(prefix, requests=7, predictions=7)


def test_the_quota_is_exact_across_processes(image_server):
    """The server and this process reserve from one quota at once, as the workers of `serve --workers N` and
    servers sharing a registry do: the registry's conditional UPDATE is the only arbiter between them."""
    key, prefix = limited_key("processes", quota=10)
    key_id, month = usage_of(prefix)["id"], keys.month_of()
    start = threading.Barrier(16)

    def over_http():
        start.wait()
        return infer(image_server, key).status_code

    def in_this_process():
        start.wait()
        return keys.reserve_quota(key_id, 1, month, url=registry_url())[0]

    with ThreadPoolExecutor(16) as pool:
        http = [pool.submit(over_http) for _ in range(8)]
        here = [pool.submit(in_this_process) for _ in range(8)]
        served, reserved = [f.result() for f in http], [f.result() for f in here]
    assert set(served) <= {200, 429} and served.count(200) + sum(reserved) == 10
    assert usage_of(prefix)["quota_used"] == 10
    wait_for_usage(prefix, requests=served.count(200), predictions=served.count(200))


def test_a_key_without_limits_is_never_refused(image_server):
    key, prefix = limited_key("unlimited")
    assert statuses(all_at_once(image_server, key, 24, n=3)) == {200: 24}
    wait_for_usage(prefix, requests=24, predictions=72)
    assert usage_of(prefix)["quota_used"] == 0


@pytest.fixture(scope="module")
def lm_server(tmp_path_factory, corpus_txt, api_key):
    cfg = tiny_config(name="lm", data={"source": f"text:{corpus_txt}", "block_size": 16,
                                       "tokenizer": {"vocab_size": 120}}, train={"epochs": 1, "batch_size": 16})
    cfg["model"] = {"name": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2}
    run = modelyard.train(cfg, output=tmp_path_factory.mktemp("lm"), quiet=True)
    server = Server(run.path, "--name", "lm", "--no-access-log")
    yield server
    server.stop()


def test_a_generation_reserves_its_max_new_tokens_and_gives_back_those_not_generated(lm_server):
    key, prefix = limited_key("tokens", quota=2048)
    url, ask = f"{lm_server.url}/v1/models/lm/generate", {"prompt": "the", "seed": 0}
    with httpx.stream("POST", url, headers=auth(key), json={**ask, "max_new_tokens": 2048}, timeout=60) as r:
        assert r.status_code == 200 and next(r.iter_text())  # then hang up: the generation stops early
    made = wait_for(lambda: (row := usage_of(prefix))["requests"] == 1 and row, what="metering")["predictions"]
    assert 1 <= made < 2048
    wait_for(lambda: usage_of(prefix)["quota_used"] == made, what="the tokens not generated given back")
    r = httpx.post(url, headers=auth(key), json={**ask, "max_new_tokens": 2048 - made + 1}, timeout=60)
    assert r.status_code == 429 and f"{2048 - made:,} left, this request needs {2049 - made:,}" in r.json()["error"]
    assert httpx.post(url, headers=auth(key), json={**ask, "max_new_tokens": 1}, timeout=60).status_code == 200


def test_the_rate_bucket_refills_at_the_rate_and_follows_changed_limits():
    now = [100.0]
    refused = []
    limiter = Limiter(None, on_refused=refused.append, clock=lambda: now[0])
    key = {"id": 1, "name": "k", "limits": keys.Limits.checked(rate=2, burst=3)}
    for _ in range(3):
        limiter.admit(key)
    with pytest.raises(Refused) as exc:
        limiter.admit(key)
    assert exc.value.status_code == 429 and exc.value.headers == {"Retry-After": "1"}  # 0.5 s, rounded up
    now[0] += 0.5
    limiter.admit(key)
    with pytest.raises(Refused):
        limiter.admit(key)
    now[0] += 100  # refilled to the burst, not beyond
    key["limits"] = keys.Limits.checked(rate=2, burst=2)  # lowered with `keys limit`
    limiter.admit(key)
    limiter.admit(key)
    with pytest.raises(Refused):
        limiter.admit(key)
    assert refused == ["rate"] * 3
    limiter.admit({"id": 1, "name": "k", "limits": keys.Limits()})  # limits removed: never refused
    assert 1 not in limiter.buckets


def test_quota_reservations_are_exact_across_threads_and_given_back_on_failure(url):
    rec, _ = keys.create_key("db", limits=keys.Limits.checked(quota=9), url=url)
    start = threading.Barrier(12)

    def reserve(_):
        start.wait()
        return keys.reserve_quota(rec["id"], 1, "2031-01", url=url)[0]

    with ThreadPoolExecutor(12) as pool:
        assert sum(pool.map(reserve, range(12))) == 9
    assert keys.reserve_quota(rec["id"], 1, "2031-02", url=url) == (True, 1, 9)  # a new month starts from 0
    keys.release_quota(rec["id"], 4, "2031-01", url=url)
    assert keys.reserve_quota(rec["id"], 5, "2031-01", url=url) == (False, 5, 9)
    assert keys.reserve_quota(rec["id"], 4, "2031-01", url=url) == (True, 9, 9)

    async def fails():  # a request that fails after its reservation gives it back
        limiter = Limiter(url, wall=lambda: calendar.timegm((2031, 1, 15, 12, 0, 0)))
        keys.release_quota(rec["id"], 2, "2031-01", url=url)
        with pytest.raises(ValueError):
            async with limiter.quota({**rec, "limits": keys.Limits(quota=9)}, 2):
                raise ValueError("the model failed")
        with pytest.raises(Refused):
            await limiter.reserve({**rec, "limits": keys.Limits(quota=9)}, 3)

    asyncio.run(fails())
    assert keys.usage(month="2031-01", url=url)[0]["quota_used"] == 7
    changed = keys.set_limits("db", quota=None, url=url)  # no quota: reservations always succeed (still counted)
    assert changed[0]["limits"] == keys.Limits()
    assert keys.reserve_quota(rec["id"], 100, "2031-01", url=url) == (True, 107, None)


def test_a_rate_too_slow_to_wait_for_is_refused_and_never_makes_a_500():
    with pytest.raises(keys.RegistryError, match="give the requests per second a key may make, from 1e-06"):
        keys.Limits.checked(rate=1e-320)
    # A key stored with such a rate (before it was refused) waits forever: a 429 with a finite Retry-After.
    limiter = Limiter(None, clock=lambda: 0.0)
    key = {"id": 1, "name": "k", "limits": keys.Limits(rate=1e-320, burst=1)}
    limiter.admit(key)
    with pytest.raises(Refused) as exc:
        limiter.admit(key)
    assert exc.value.status_code == 429 and exc.value.headers == {"Retry-After": "10000000"}


@pytest.mark.parametrize("args, message", [
    (["--rate", "-1"], "rate -1: give the requests per second"),
    (["--rate", "5", "--burst", "0"], "burst 0: give how many requests may come at once"),
    (["--burst", "3"], "burst 3 without a rate"),
    (["--quota", "0"], "quota 0: give the predictions a key may make per calendar month"),
])
def test_bad_limits_are_refused_with_exit_status_2(tmp_path, args, message):
    proc = run_cli("keys", "create", "--name", "bad", *args, env={"MODELYARD_HOME": str(tmp_path)})
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_limits_are_set_changed_and_listed_from_the_cli(tmp_path):
    env = {"MODELYARD_HOME": str(tmp_path)}
    out = run_cli("keys", "create", "--name", "acme", "--rate", "5", "--burst", "10", "--quota", "100000", env=env,
                  check=True).stdout
    assert "5/s burst 10, 100,000 predictions/month" in out
    out = run_cli("keys", "limit", "acme", "--rate", "2", "--no-quota", env=env, check=True).stdout
    assert "acme my_" in out and "2/s burst 10" in out and "predictions/month" not in out
    (row,) = json.loads(run_cli("keys", "list", "--json", env=env, check=True).stdout)
    assert (row["rate_per_s"], row["burst"], row["monthly_quota"], row["quota_used"]) == (2.0, 10, None, 0)
    table = run_cli("keys", "usage", env=env, check=True).stdout
    assert "quota used" in table and "acme" in table
