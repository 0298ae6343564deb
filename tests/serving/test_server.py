"""The real server, started as a subprocess on a port it picks, called over HTTP."""

import base64
import io

import httpx
import numpy as np
import pytest

import modelyard
from sklearn.datasets import load_digits
from tests.serving.helpers import auth, fresh_key, metric, registry_url, usage_of, v2_image, wait_for_usage


def test_image_model_v2_and_v1_give_the_saved_models_answers(image_server, image_run, api_key):
    x = load_digits().images[:5].astype(np.float32)
    expected = modelyard.load(image_run.path).predict_proba(x)
    r = httpx.post(f"{image_server.url}/v2/models/digits/infer", json=v2_image(x), headers=auth(api_key))
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["probabilities"]["shape"] == [5, 10]
    assert np.allclose(np.array(out["probabilities"]["data"]).reshape(5, 10), expected, atol=1e-6)
    r = httpx.post(f"{image_server.url}/v1/models/digits/predict", json={"inputs": x.tolist()}, headers=auth(api_key))
    assert [p["label"] for p in r.json()["predictions"]] == list(modelyard.load(image_run.path).predict(x))
    meta = httpx.get(f"{image_server.url}/v2/models/digits", headers=auth(api_key)).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert meta["parameters"]["labels"] == [str(i) for i in range(10)]


def test_base64_images_are_read(image_server, image_run, api_key):
    from PIL import Image

    digits = load_digits().images[:4]  # pixels 0..16; the PNGs hold them scaled to 0..255
    pngs = []
    for image in digits:
        buf = io.BytesIO()
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8)).save(buf, format="PNG")
        pngs.append(base64.b64encode(buf.getvalue()).decode())
    r = httpx.post(f"{image_server.url}/v1/models/digits/predict", json={"images": pngs}, headers=auth(api_key))
    assert r.status_code == 200, r.text
    expected = modelyard.load(image_run.path).predict(digits.astype(np.float32))
    assert [p["label"] for p in r.json()["predictions"]] == list(expected)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_missing_or_wrong_keys_get_401_and_are_counted(image_server, headers):
    route = "/v2/models/{model_name}/infer"
    before = (metric(image_server, "modelyard_auth_failures_total"),
              metric(image_server, "modelyard_requests_total", route=route, status="401"))
    r = httpx.post(f"{image_server.url}/v2/models/digits/infer", json=v2_image(np.zeros((1, 8, 8))), headers=headers)
    assert r.status_code == 401 and "API key" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    after = (metric(image_server, "modelyard_auth_failures_total"),
             metric(image_server, "modelyard_requests_total", route=route, status="401"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


@pytest.mark.parametrize("body, status, message", [
    ({"inputs": [{"name": "input", "shape": [1, 8, 7], "datatype": "FP32", "data": [0] * 56}]}, 400, "does not fit"),
    ({"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "BYTES", "data": ["a"] * 64}]}, 400, "numeric"),
    ({"inputs": [{"name": "input", "shape": [2, 8, 8], "datatype": "FP32", "data": [0] * 64}]}, 400, "needs 128 values"),
    ({"inputs": [{"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": [0] * 64}]}, 400, "unknown"),
    ({"inputs": []}, 422, "schema"),
    ({"images": ["not base64!"]}, 400, "not valid base64"),
    ({"images": [base64.b64encode(b"not an image").decode()]}, 400, "not an image"),
    ({"texts": ["hello"]}, 400, "takes exactly one of: images or inputs"),
])
def test_bad_requests_get_4xx_with_the_reason(image_server, api_key, body, status, message):
    route = "v1/models/digits/predict" if any(k in body for k in ("images", "texts")) else "v2/models/digits/infer"
    r = httpx.post(f"{image_server.url}/{route}", json=body, headers=auth(api_key))
    assert r.status_code == status and message in r.json()["error"], r.text
    assert image_server.alive()


def test_unknown_model_and_broken_json(image_server, api_key):
    r = httpx.post(f"{image_server.url}/v2/models/nope/infer", json=v2_image(np.zeros((1, 8, 8))),
                   headers=auth(api_key))
    assert r.status_code == 404 and "serves 'digits'" in r.json()["error"]
    r = httpx.post(f"{image_server.url}/v2/models/digits/infer", content=b"{not json",
                   headers={**auth(api_key), "Content-Type": "application/json"})
    assert r.status_code == 422
    assert image_server.alive()


def test_tritonclient_talks_to_the_server(image_server, image_run, api_key):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(image_server.url.removeprefix("http://"))
    headers = auth(api_key)
    assert client.is_server_live() and client.is_model_ready("digits", headers=headers)
    assert client.get_model_metadata("digits", headers=headers)["inputs"][0]["shape"] == [-1, 8, 8]
    x = load_digits().images[:3].astype(np.float32)
    for binary in (True, False):
        inp = triton.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        result = client.infer("digits", [inp], headers=auth(api_key))  # tritonclient writes into the dict
        assert np.allclose(result.as_numpy("probabilities"), modelyard.load(image_run.path).predict_proba(x),
                           atol=1e-6)


def test_text_model_over_v1_and_v2(text_server, text_run, api_key):
    import tritonclient.http as triton

    texts = ["the router and the cable", "tomato seeds in the garden soil"]
    expected = modelyard.load(text_run.path).predict_proba(texts)
    r = httpx.post(f"{text_server.url}/v1/models/topics/predict", json={"texts": texts}, headers=auth(api_key))
    got = [[p["probabilities"][lab] for lab in modelyard.load(text_run.path).labels] for p in r.json()["predictions"]]
    assert np.allclose(got, expected, atol=1e-6)
    client = triton.InferenceServerClient(text_server.url.removeprefix("http://"))
    inp = triton.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array(texts, dtype=object))
    result = client.infer("topics", [inp], headers=auth(api_key))
    assert np.allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


def test_body_and_item_limits(text_server, api_key):
    r = httpx.post(f"{text_server.url}/v1/models/topics/predict", json={"texts": ["x" * 20_000]},
                   headers=auth(api_key))
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    r = httpx.post(f"{text_server.url}/v1/models/topics/predict", json={"texts": ["a"] * 51}, headers=auth(api_key))
    assert r.status_code == 413 and "limit of 50" in r.json()["error"]
    r = httpx.post(f"{text_server.url}/v1/models/topics/generate", json={"prompt": "x"}, headers=auth(api_key))
    assert r.status_code == 400 and "classifier" in r.json()["error"]
    assert text_server.alive()


def test_usage_is_metered_per_key(image_server, registry_home):
    """Exactly what was sent, for a key of its own: +1 request and +4 predictions, then +1 and +2 more."""
    key, prefix = fresh_key("metered")
    for n in (4, 2):
        r = httpx.post(f"{image_server.url}/v2/models/digits/infer", json=v2_image(np.zeros((n, 8, 8))),
                       headers=auth(key))
        assert r.status_code == 200
    row = wait_for_usage(prefix, requests=2, predictions=6)
    assert row["compute_ms"] > 0 and row["last_used"]
    assert usage_of(prefix, cli=True)["predictions"] == 6  # what `modelyard keys usage` shows


def test_the_access_log_can_be_turned_off(text_server, api_key):
    """text_server runs with --no-access-log."""
    r = httpx.post(f"{text_server.url}/v1/models/topics/predict", json={"texts": ["x"]}, headers=auth(api_key))
    assert r.status_code == 200
    assert "/v1/models/{model_name}/predict" not in text_server.log() and " key=" not in text_server.log()


def test_a_revoked_key_stops_working_on_a_live_server(image_server):
    """Keys are cached for 10 s (serving/auth.py), so a revoked key gets 401 within that, plus a margin for a busy
    test machine."""
    import time

    from modelyard.store import keys

    key, _ = fresh_key("revoked-live")
    body = v2_image(np.zeros((1, 8, 8)))
    assert httpx.post(f"{image_server.url}/v2/models/digits/infer", json=body, headers=auth(key)).status_code == 200
    assert keys.revoke_key(key[:10], url=registry_url()) == 1
    revoked_at, deadline = time.monotonic(), time.monotonic() + 10.0 + 5.0
    while (status := httpx.post(f"{image_server.url}/v2/models/digits/infer", json=body,
                                headers=auth(key)).status_code) == 200 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert status == 401, f"still {status} {time.monotonic() - revoked_at:.1f} s after revoking"
