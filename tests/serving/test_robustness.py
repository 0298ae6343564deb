"""A server that cannot be wedged, answers no bad request with a 5xx, loses no usage, and logs every request.

One real server (a subprocess) serves the whole module, on a registry of its own whose lock timeout is 1 s.
Each bad request is followed by a good one, which must be answered at once: a bad request that kills the batcher
(as an empty batch once did) makes every later request hang.
"""

import json
import re
import socket
import sqlite3
import struct
import time

import httpx
import numpy as np
import pytest

from tests.serving.conftest import Server
from tests.serving.helpers import (WATCHDOG_S, assert_still_serving, auth, fresh_key, metric, usage_of, v2_image,
                                   wait_for, wait_for_usage)

INFER = "/v2/models/digits/infer"
PREDICT = "/v1/models/digits/predict"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("robust-home")


@pytest.fixture(scope="module")
def server(image_run, home):
    server = Server(image_run.path, "--name", "digits",
                    env={"MODELYARD_HOME": str(home), "MODELYARD_DB_TIMEOUT": "1"})
    yield server
    log = server.stop()
    assert "Traceback" not in log, log  # every bad request was answered, none crashed a handler


@pytest.fixture(scope="module")
def key(server, home):
    return fresh_key("fuzz", home)[0]


def v2(shape, data, datatype="FP32"):
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}


def binary(header: dict, *tensors: bytes):
    head = json.dumps(header).encode()
    return b"".join([head, *tensors]), {"Inference-Header-Content-Length": str(len(head))}


def v2_binary(shape, raw: bytes, datatype="FP32", size=None):
    return binary({"inputs": [{"name": "input", "shape": shape, "datatype": datatype,
                               "parameters": {"binary_data_size": len(raw) if size is None else size}}]}, raw)


ZEROS = [0.0] * 64
GOOD_BINARY = v2_binary([1, 8, 8], np.zeros(64, np.float32).tobytes())

# (id, path, JSON body or (raw body, extra headers), status, a fragment of the error message)
BAD = [
    ("empty-batch", INFER, v2([0, 8, 8], []), 400, "no items"),
    ("fp32-1e39", INFER, v2([1, 8, 8], ZEROS[:63] + [1e39]), 400, "FP32 range"),
    ("fp64-1e300", INFER, v2([1, 8, 8], ZEROS[:63] + [1e300], "FP64"), 400, "FP32 range"),
    ("int-1e400", INFER, (b'{"inputs":[{"name":"input","shape":[1,8,8],"datatype":"FP64","data":[1' + b"0" * 400
                          + b"," + b"0," * 62 + b'0]}]}', {}), 400, "FP32 range"),
    ("nan", INFER, (json.dumps(v2([1, 8, 8], ZEROS[:63] + [float("nan")])).encode(), {}), 400, "FP32 range"),
    ("int64-for-fp32", INFER, v2([1, 8, 8], [0] * 64, "INT64"), 400, "integers are not converted silently"),
    ("bin-uint8-for-fp32", INFER, v2_binary([1, 8, 8], bytes(64), datatype="UINT8"), 400, "got UINT8"),
    ("negative-dim", INFER, v2([-1, 8, 8], ZEROS), 400, "negative"),
    ("huge-batch", INFER, v2([10**30, 8, 8], ZEROS), 413, "limit"),
    ("ragged", INFER, v2([1, 8, 8], [[0.0] * 8] * 7 + [[0.0] * 7]), 400, "needs 64 values"),
    ("strings", INFER, v2([1, 8, 8], ["x"] * 64), 400, "finite numbers"),
    ("unknown-output", INFER, {**v2([1, 8, 8], ZEROS), "outputs": [{"name": "logits"}]}, 400, "unknown output"),
    ("deep-json", INFER, (b"[" * 100_000 + b"]" * 100_000, {}), 400, ""),
    ("v1-[[[]]]", PREDICT, {"inputs": [[[]]]}, 400, "every dimension at least 1"),
    ("v1-[]", PREDICT, {"inputs": []}, 400, "empty"),
    ("v1-1e39", PREDICT, {"inputs": [[[1e39] * 8] * 8]}, 400, "FP32 range"),
    ("v1-5d", PREDICT, {"inputs": [[[[[0.0]]]]]}, 400, "shaped"),
    ("v1-ragged", PREDICT, {"inputs": [[[0.0, 1.0], [0.0]]]}, 400, "equally shaped"),
    ("v1-surrogate-name", PREDICT, {"rows": [{"\ud800": 1}]}, 400, "takes exactly one of"),
    ("v1-bad-base64", PREDICT, {"images": ["not base64!"]}, 400, "not valid base64"),
    ("bin-header-superscript", INFER, (GOOD_BINARY[0], {"Inference-Header-Content-Length": "²".encode()}), 400,
     "Inference-Header-Content-Length"),
    ("bin-header-latin1-superscript", INFER, (GOOD_BINARY[0], {"Inference-Header-Content-Length": b"\xb2"}), 400,
     "Inference-Header-Content-Length"),  # str.isdigit() is true for it, int() is not
    ("bin-header-negative", INFER, (GOOD_BINARY[0], {"Inference-Header-Content-Length": "-1"}), 400,
     "Inference-Header-Content-Length"),
    ("bin-header-text", INFER, (GOOD_BINARY[0], {"Inference-Header-Content-Length": "abc"}), 400,
     "Inference-Header-Content-Length"),
    ("bin-header-empty", INFER, (GOOD_BINARY[0], {"Inference-Header-Content-Length": ""}), 400,
     "Inference-Header-Content-Length"),
    ("bin-header-too-long", INFER, (GOOD_BINARY[0], {"Inference-Header-Content-Length": "9" * 30}), 400,
     "Inference-Header-Content-Length"),
    ("bin-header-not-json", INFER, (b"\xff\xfe" + GOOD_BINARY[0], {"Inference-Header-Content-Length": "10"}), 400,
     "JSON header"),
    ("bin-no-inputs", INFER, binary({"inputs": 3}), 400, "no inputs list"),
    ("bin-input-not-object", INFER, binary({"inputs": [1, "x"]}), 400, "must be an object"),
    ("bin-size-over-body", INFER, v2_binary([1, 8, 8], b"\0" * 8, size=10**6), 400, "does not fit the body"),
    ("bin-size-not-int", INFER, v2_binary([1, 8, 8], b"\0" * 8, size="8"), 400, "does not fit the body"),
    ("bin-partial-float", INFER, v2_binary([1, 8, 8], b"\0" * 7), 400, "whole number"),
    ("bin-bad-datatype", INFER, v2_binary([1, 8, 8], b"\0" * 8, datatype="FP128"), 400, "unknown datatype"),
    ("bin-datatype-list", INFER, v2_binary([1, 8, 8], b"\0" * 8, datatype=["FP32"]), 400, "unknown datatype"),
    ("bin-datatype-object", INFER, v2_binary([1, 8, 8], b"\0" * 8, datatype={"a": 1}), 400, "unknown datatype"),
    ("bin-truncated-bytes", INFER, v2_binary([1], struct.pack("<I", 100) + b"ab", datatype="BYTES"), 400,
     "truncated"),
    ("bin-inf", INFER, v2_binary([1, 8, 8], np.full(64, np.inf, np.float32).tobytes()), 400, "finite numbers"),
    ("bin-outputs-not-list", INFER, binary({"inputs": [], "outputs": 5}), 422, "schema"),
    ("unknown-route", "/v2/models/digits/nope", v2([1, 8, 8], ZEROS), 404, "no route"),
]


@pytest.mark.parametrize("path, body, status, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, key, path, body, status, message):
    content, headers = (body if isinstance(body, tuple) else (json.dumps(body).encode(), {}))
    r = httpx.post(f"{server.url}{path}", content=content,
                   headers={"Content-Type": "application/json", **auth(key), **headers})
    assert r.status_code == status and message in r.json()["error"], r.text
    assert_still_serving(server, key)


@pytest.mark.parametrize("headers", [{"Inference-Header-Content-Length": "²".encode()},
                                     {"Inference-Header-Content-Length": b"\xb2"},
                                     {"Inference-Header-Content-Length": "-1"},
                                     {"Authorization": "Bearer wrong", "Inference-Header-Content-Length": "x"}])
def test_without_a_key_every_malformed_request_is_401(server, key, headers):
    r = httpx.post(f"{server.url}{INFER}", content=b"{not json" * 10, headers=headers)
    assert r.status_code == 401 and "API key" in r.json()["error"], r.text
    assert_still_serving(server, key)


def test_the_key_is_checked_before_the_body_is_read(server, key):
    """A body declared at 1 GB, never sent: the 401 comes back at once."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WATCHDOG_S) as s:
        s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Inference-Header-Content-Length: \xc2\xb2\r\nContent-Length: 1000000000\r\n\r\n{")
        assert s.recv(100).startswith(b"HTTP/1.1 401 ")
    assert_still_serving(server, key)


TEXT_BAD = [
    ("v1-lone-surrogate", "/v1/models/topics/predict", {"texts": ["fine", "\ud800"]}, 400, "lone surrogate"),
    ("v2-lone-surrogate", "/v2/models/topics/infer",
     {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a\udfffb"]}]}, 400, "lone surrogate"),
    ("v1-empty-batch", "/v1/models/topics/predict", {"texts": []}, 400, "empty"),
    ("v2-empty-batch", "/v2/models/topics/infer",
     {"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]}, 400, "no items"),
    ("v2-not-strings", "/v2/models/topics/infer",
     {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [5]}]}, 400, "must be strings"),
]


@pytest.mark.parametrize("path, body, status, message", [c[1:] for c in TEXT_BAD], ids=[c[0] for c in TEXT_BAD])
def test_bad_texts_get_4xx_and_the_text_server_keeps_serving(text_server, api_key, path, body, status, message):
    r = httpx.post(f"{text_server.url}{path}", content=json.dumps(body).encode(),  # json.dumps keeps "\ud800"
                   headers={"Content-Type": "application/json", **auth(api_key)})
    assert r.status_code == status and message in r.json()["error"], r.text
    r = httpx.post(f"{text_server.url}/v1/models/topics/predict", json={"texts": ["", "the router"]},
                   headers=auth(api_key), timeout=WATCHDOG_S)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2, r.text


def test_an_empty_batch_leaves_the_server_ready(server, key):
    r = httpx.post(f"{server.url}{INFER}", json=v2([0, 8, 8], []), headers=auth(key))
    assert r.status_code == 400
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert_still_serving(server, key)


def test_binary_infer_is_counted_under_its_route(server, key):
    route = "/v2/models/{model_name}/infer"
    before = (metric(server, "modelyard_requests_total", route=route, status="200"),
              metric(server, "modelyard_requests_total", route="unmatched", status="200"))
    content, headers = GOOD_BINARY
    r = httpx.post(f"{server.url}{INFER}", content=content, headers={**auth(key), **headers})
    assert r.status_code == 200, r.text
    after = (metric(server, "modelyard_requests_total", route=route, status="200"),
             metric(server, "modelyard_requests_total", route="unmatched", status="200"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0)


def test_a_client_that_leaves_mid_body_is_not_a_server_error(server, key):
    """A request whose client hangs up before sending its whole body gets no answer: it is counted and logged as
    499 (client closed), never as a 500 that would page whoever watches the error rate."""
    route = "/v2/models/{model_name}/infer"
    before = {s: metric(server, "modelyard_requests_total", route=route, status=s) for s in ("499", "500")}
    with socket.create_connection((server.url.split("//")[1].split(":")[0], server.port)) as s:
        s.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"inputs\"".encode())
    wait_for(lambda: metric(server, "modelyard_requests_total", route=route, status="499") == before["499"] + 1,
             what="the dropped request counted as 499")
    assert metric(server, "modelyard_requests_total", route=route, status="500") == before["500"]
    assert re.search(r"POST /v2/models/\{model_name\}/infer 499 ", server.log())
    assert_still_serving(server, key)


def test_docs_load_nothing_from_another_host(server):
    page = httpx.get(f"{server.url}/docs").text
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets), page
    assert "://" not in page.replace("http://www.w3.org", ""), page  # no absolute URL at all
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        assert httpx.get(f"{server.url}{asset}").status_code == 200, asset


def test_access_log_has_one_line_per_request_with_the_client_name(server, home):
    key, _ = fresh_key("access-probe", home)
    r = httpx.post(f"{server.url}{INFER}", json=v2_image(np.zeros((2, 8, 8))), headers=auth(key))
    assert r.status_code == 200
    httpx.get(f"{server.url}/v2/models/digits", headers={"Authorization": "Bearer not-a-key"})
    lines = wait_for(lambda: [line for line in server.log().splitlines() if "key=access-probe" in line],
                     what="the access-log line")
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z key=access-probe POST "
                        r"/v2/models/\{model_name\}/infer 200 \d+\.\dms", lines[0]), lines[0]
    assert re.search(r"key=- GET /v2/models/\{model_name\} 401 ", server.log())
    assert key not in server.log() and key[:10] not in server.log()


def test_usage_survives_a_locked_registry(server, home):
    """The registry is locked for longer than its 1 s timeout while requests come in: the flush fails, is
    retried, and once the lock is gone every request is counted, exactly."""
    key, prefix = fresh_key("locked", home)
    failures = metric(server, "modelyard_usage_flush_failures_total")
    lock = sqlite3.connect(home / "registry.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    sent = 0
    try:
        for _ in range(10):
            assert httpx.post(f"{server.url}{INFER}", json=v2_image(np.zeros((3, 8, 8))),
                              headers=auth(key)).status_code == 200
            sent += 1
        # Held until a flush has failed (after the 1 s timeout), then 3 s more with traffic going on.
        wait_for(lambda: metric(server, "modelyard_usage_flush_failures_total") > failures,
                 what="a failed usage flush")
        release_at = time.monotonic() + 3.0
        while time.monotonic() < release_at:
            assert httpx.post(f"{server.url}{INFER}", json=v2_image(np.zeros((3, 8, 8))),
                              headers=auth(key)).status_code == 200
            sent += 1
            time.sleep(0.1)
        assert usage_of(prefix, home)["requests"] == 0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_for_usage(prefix, sent, 3 * sent, home)
    assert usage_of(prefix, home, cli=True)["requests"] == sent  # what `modelyard keys usage` shows
    assert "usage not yet saved" in server.log()
