"""The real server, started as a subprocess on a free loopback port, called over HTTP."""

import base64
import io

import httpx
import numpy as np
import pytest

import modelyard
from sklearn.datasets import load_digits


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def v2_image(x):
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


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


def test_base64_images_are_read(image_server, api_key):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((load_digits().images[0] * 16).astype(np.uint8)).save(buf, format="PNG")
    body = {"images": [base64.b64encode(buf.getvalue()).decode()]}
    r = httpx.post(f"{image_server.url}/v1/models/digits/predict", json=body, headers=auth(api_key))
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_missing_or_wrong_keys_get_401_and_are_counted(image_server, headers):
    r = httpx.post(f"{image_server.url}/v2/models/digits/infer", json=v2_image(np.zeros((1, 8, 8))), headers=headers)
    assert r.status_code == 401 and "API key" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    metrics = httpx.get(f"{image_server.url}/metrics").text
    assert "modelyard_auth_failures_total" in metrics and 'status="401"' in metrics


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


def test_usage_is_metered_per_key(image_server, api_key):
    import json
    import time

    from tests.conftest import run_cli

    before = {r["prefix"]: r for r in json.loads(run_cli("keys", "usage", "--json", check=True).stdout)}
    httpx.post(f"{image_server.url}/v2/models/digits/infer", json=v2_image(np.zeros((4, 8, 8))), headers=auth(api_key))
    time.sleep(2.5)  # the server adds usage to the registry every second
    after = {r["prefix"]: r for r in json.loads(run_cli("keys", "usage", "--json", check=True).stdout)}
    key = api_key[:10]
    assert after[key]["requests"] >= before[key]["requests"] + 1
    assert after[key]["predictions"] >= before[key]["predictions"] + 4 and after[key]["compute_ms"] > 0


def test_language_model_streams_generated_text(tmp_path, corpus_txt, api_key):
    from tests.conftest import tiny_config
    from tests.serving.conftest import Server

    cfg = tiny_config(name="lm", data={"source": f"text:{corpus_txt}", "block_size": 16,
                                       "tokenizer": {"vocab_size": 120}}, train={"epochs": 1, "batch_size": 16})
    cfg["model"] = {"name": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2}
    run = modelyard.train(cfg, output=tmp_path, quiet=True)
    expected = modelyard.load(run.path).complete("the garden", max_new_tokens=12, seed=3)
    server = Server(run.path, "--name", "lm")
    try:
        body = {"prompt": "the garden", "max_new_tokens": 12, "seed": 3}
        with httpx.stream("POST", f"{server.url}/v1/models/lm/generate", json=body, headers=auth(api_key)) as r:
            assert r.status_code == 200
            text = "".join(r.iter_text())
        assert text == expected
        r = httpx.post(f"{server.url}/v1/models/lm/predict", json={"texts": ["x"]}, headers=auth(api_key))
        assert r.status_code == 400 and "generate" in r.json()["error"]
        r = httpx.post(f"{server.url}/v1/models/lm/generate", json={"prompt": ""}, headers=auth(api_key))
        assert r.status_code == 422
        v2 = {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["the garden"]}]}
        r = httpx.post(f"{server.url}/v2/models/lm/infer", json=v2, headers=auth(api_key))
        assert r.status_code == 200 and isinstance(r.json()["outputs"][0]["data"][0], str)

        # Graceful shutdown: a generation under way when SIGTERM arrives still finishes.
        long = {"prompt": "the garden", "max_new_tokens": 1500, "seed": 4}
        full = modelyard.load(run.path).complete("the garden", max_new_tokens=1500, seed=4, stop_at_eos=True)
        pieces = []
        with httpx.stream("POST", f"{server.url}/v1/models/lm/generate", json=long, headers=auth(api_key)) as r:
            for i, piece in enumerate(r.iter_text()):
                if i == 0:
                    server.proc.terminate()
                pieces.append(piece)
        assert "".join(pieces) == full
        assert server.proc.wait(30) in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down cleanly
    finally:
        server.stop()


def test_several_workers_serve_the_same_model(image_run, api_key):
    from tests.serving.conftest import Server

    server = Server(image_run.path, "--name", "digits", "--workers", "2")
    try:
        x = load_digits().images[:2].astype(np.float32)
        answers = [httpx.post(f"{server.url}/v2/models/digits/infer", json=v2_image(x), headers=auth(api_key))
                   for _ in range(6)]
        assert all(r.status_code == 200 for r in answers)
        assert len({str(r.json()["outputs"][0]["data"]) for r in answers}) == 1
    finally:
        server.stop()
