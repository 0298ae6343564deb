"""POST /v1/models/{name}/explain: real explanation methods on the tiny digits MLP (and the tiny text model), behind
the server's keys, limits and metering; no bad request reaches a 500 or stops the server predicting.

The app runs in this process (starlette's TestClient, lifespan included) so that a test can slow a method down;
one check goes through the real `modelyard serve` subprocess's socket."""

import json
import socket
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

import modelyard
from modelyard.explain.base import EXPLAINERS
from modelyard.serving.app import ServerConfig, create_app
from tests.conftest import cli_in_process
from tests.serving.helpers import WATCHDOG_S, auth, fresh_key, registry_url, usage_of, wait_for

EXPLAIN, PREDICT = "/v1/models/digits/explain", "/v1/models/digits/predict"
DIGITS = load_digits().images[:4].astype(np.float32)  # (4, 8, 8), pixel units 0-16 as in training


@pytest.fixture(scope="module")
def client(image_run, registry_home):
    with TestClient(create_app(ServerConfig(model=str(image_run.path), name="digits", access_log=False))) as c:
        yield c


@pytest.fixture(scope="module")
def key(client):
    return fresh_key("explainer")[0]


def explain(client, key, **body):
    return client.post(EXPLAIN, json=body, headers=auth(key))


def assert_predicts(client, key):
    r = client.post(PREDICT, json={"inputs": DIGITS[:1].tolist()}, headers=auth(key))
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1, r.text


def test_an_image_model_is_explained_as_the_python_api_explains_it(client, key, image_run):
    r = explain(client, key, inputs=DIGITS[:2].tolist(), method="integrated-gradients", parameters={"n_steps": 16})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["method"], body["kind"]) == ("digits", "integrated-gradients", "image")
    assert body["settings"]["n_steps"] == 16 and "mean image" in body["settings"]["baseline"]
    local = modelyard.load(image_run.path).explain(DIGITS[:2], method="integrated-gradients", n_steps=16)
    for got, want in zip(body["items"], local):
        assert (got["id"], got["predicted"], got["target"]) == (want.id, want.predicted, want.target)
        assert got["shape"] == [8, 8] and got["units"] is None and len(got["attributions"]) == 64
        np.testing.assert_allclose(np.reshape(got["attributions"], (8, 8)), want.values, atol=1e-6)
        assert got["probability"] == pytest.approx(want.probability)
        assert set(got["quality"]) == {"convergence_delta", "relative_delta"}


def test_base64_images_and_a_named_target(client, key):
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(DIGITS[0] * 255 / 16).astype(np.uint8)).save(buf, format="PNG")
    r = explain(client, key, images=[base64.b64encode(buf.getvalue()).decode()], method="occlusion", target="7")
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["target"] == "7" and item["shape"] == [8, 8] and any(v != 0 for v in item["attributions"])


def test_the_key_is_checked_before_the_body_is_parsed(client, key, image_server):
    garbage = b'{"inputs": [[1, 2]], "method": "nope", "parameters": {"x": '
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = client.post(EXPLAIN, content=garbage, headers={"Content-Type": "application/json", **headers})
        assert r.status_code == 401 and "API key" in r.json()["error"], r.text
    r = client.post(EXPLAIN, content=garbage, headers={"Content-Type": "application/json", **auth(key)})
    assert r.status_code == 422  # the same body with a key: only now is it read
    # Over a real socket: a body declared at 1 GB and never sent is refused at once.
    with socket.create_connection(("127.0.0.1", image_server.port), timeout=WATCHDOG_S) as s:
        s.sendall(b"POST /v1/models/digits/explain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n{")
        assert s.recv(100).startswith(b"HTTP/1.1 401 ")


def test_too_many_inputs_or_too_large_a_body_is_413_naming_the_option(client, key):
    r = explain(client, key, inputs=np.zeros((5, 8, 8)).tolist())
    assert r.status_code == 413 and "limit of 4" in r.json()["error"], r.text
    assert "--explain-max-instances" in r.json()["error"]
    big = json.dumps({"inputs": DIGITS[:1].tolist(), "target": "0" + " " * 2**20}).encode()
    r = client.post(EXPLAIN, content=big, headers={"Content-Type": "application/json", **auth(key)})
    assert r.status_code == 413 and "--explain-max-body-mb" in r.json()["error"], r.text
    r = client.post(PREDICT, content=big, headers={"Content-Type": "application/json", **auth(key)})
    assert r.status_code == 200, r.text  # the tighter limit is the explain route's alone


ONE = DIGITS[:1].tolist()
BAD = [
    ("unknown-method", {"inputs": ONE, "method": "integrated-gradient"},
     ["Did you mean 'integrated-gradients'?", "Methods for this model: integrated-gradients"]),
    ("inapplicable-method", {"inputs": ONE, "method": "grad-cam"},
     ["method grad-cam does not apply to mlp", "convolution", "Methods that do: integrated-gradients"]),
    ("table-method", {"inputs": ONE, "method": "kernel-shap"}, ["tabular", "Methods that do:"]),
    ("unknown-target", {"inputs": ONE, "target": "11"}, ["target '11' is not one of the model's labels", "Labels: 0"]),
    ("unknown-option", {"inputs": ONE, "method": "integrated-gradients", "parameters": {"n_step": 8}},
     ["does not take n_step", "it takes n_steps"]),
    ("bad-option", {"inputs": ONE, "method": "integrated-gradients", "parameters": {"n_steps": 0}}, ["n_steps"]),
    ("server-cap", {"inputs": ONE, "method": "integrated-gradients", "parameters": {"n_steps": 10_000}},
     ["n_steps is at most 1,000 on this server"]),
    ("window-too-large", {"inputs": ONE, "method": "occlusion", "parameters": {"window": 9}}, ["window"]),
    ("wrong-shape", {"inputs": [[1.0, 2.0]]}, ["shaped (1, 2)"]),
    ("ragged", {"inputs": [[[1.0, 2.0], [3.0]]]}, ["equally shaped arrays of numbers"]),
    ("texts-for-images", {"texts": ["a digit"]}, ["takes exactly one of: images or inputs"]),
    ("empty", {"inputs": []}, ["empty"]),
    ("not-base64", {"images": ["not base64!"]}, ["not valid base64"]),
    ("misspelt-field", {"inputs": ONE, "paramters": {}}, ["paramters", "Extra inputs"]),
]


@pytest.mark.parametrize("body, messages", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_requests_are_422_saying_why_and_predictions_go_on(client, key, body, messages):
    r = explain(client, key, **body)
    assert r.status_code == 422, r.text
    for message in messages:
        assert message in r.json()["error"], r.text
    assert_predicts(client, key)


def counted(client, name, **labels) -> float:
    """A counter's value on the app's /metrics (0 before it is first counted)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_explanations_are_metered_apart_from_predictions(client):
    key, prefix = fresh_key("explain-meter")
    before = counted(client, "modelyard_explanations_total", method="saliency")
    assert explain(client, key, inputs=DIGITS[:3].tolist(), method="saliency").status_code == 200
    row = wait_for(lambda: (u := usage_of(prefix))["requests"] == 1 and u, what="the explanation metered")
    assert (row["predictions"], row["explanations"]) == (0, 3) and row["compute_ms"] > 0
    assert_predicts(client, key)
    row = wait_for(lambda: (u := usage_of(prefix))["requests"] == 2 and u, what="the prediction metered")
    assert (row["predictions"], row["explanations"]) == (1, 3)
    assert counted(client, "modelyard_explanations_total", method="saliency") == before + 3
    assert usage_of(prefix, cli=True)["explanations"] == 3  # what `modelyard keys usage --json` shows


def test_a_keys_rate_and_quota_apply_to_explanations(client):
    """The rate is checked before the body is read; each explained input counts against the monthly quota like
    a prediction (its answer holds the prediction), and a request is explained whole or refused whole."""
    from modelyard.store import keys

    _, rated = keys.create_key("explain-rate", limits=keys.Limits.checked(rate=0.001, burst=1), url=registry_url())
    assert client.post(EXPLAIN, content=b"{", headers={"Content-Type": "application/json", **auth(rated)}
                       ).status_code == 422
    r = client.post(EXPLAIN, content=b"{", headers={"Content-Type": "application/json", **auth(rated)})
    assert r.status_code == 429 and "rate limit" in r.json()["error"] and int(r.headers["retry-after"]) >= 1

    _, quota = keys.create_key("explain-quota", limits=keys.Limits.checked(quota=3), url=registry_url())
    r = explain(client, quota, inputs=DIGITS.tolist(), method="saliency")
    assert r.status_code == 429 and "more than the whole quota" in r.json()["error"], r.text
    assert explain(client, quota, inputs=DIGITS[:2].tolist(), method="saliency").status_code == 200
    r = explain(client, quota, inputs=DIGITS[:2].tolist(), method="saliency")
    assert r.status_code == 429 and "1 left" in r.json()["error"], r.text
    assert client.post(PREDICT, json={"inputs": ONE}, headers=auth(quota)).status_code == 200  # the last one


@pytest.fixture
def held_occlusion(monkeypatch):
    """Occlusion for images, held until the test lets it go: an explanation that keeps its slot."""
    impl = EXPLAINERS.get("occlusion").obj.impls["image"]
    real, started, release = impl.fn, threading.Event(), threading.Event()

    def held(subject, batch, params):
        started.set()
        release.wait(WATCHDOG_S * 6)
        return real(subject, batch, params)

    monkeypatch.setattr(impl, "fn", held)
    yield started, release
    release.set()


def test_a_busy_server_answers_503_with_retry_after_and_keeps_predicting(client, key, held_occlusion):
    started, release = held_occlusion
    first = {}
    worker = threading.Thread(target=lambda: first.update(r=explain(client, key, inputs=ONE, method="occlusion")))
    worker.start()
    try:
        assert started.wait(WATCHDOG_S * 6)
        refused = counted(client, "modelyard_explain_refused_total", reason="busy")
        r = explain(client, key, inputs=ONE, method="saliency")
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "at once" in r.json()["error"], r.text
        assert_predicts(client, key)  # predictions do not wait for explanations
        assert counted(client, "modelyard_explain_refused_total", reason="busy") == refused + 1
    finally:
        release.set()
        worker.join(WATCHDOG_S * 6)
    assert first["r"].status_code == 200, first["r"].text
    wait_for(lambda: explain(client, key, inputs=ONE, method="saliency").status_code == 200,
             what="the slot given back")


def test_an_explanation_past_the_time_limit_is_504_and_is_stopped(image_run, registry_home, monkeypatch):
    """A method that would never finish (a forward pass after another) is answered 504 at the limit, and stopped
    at its next forward pass: the slot comes back and the next explanation runs."""
    impl = EXPLAINERS.get("occlusion").obj.impls["image"]

    def endless(subject, batch, params):
        while True:
            subject.proba(batch.x)

    monkeypatch.setattr(impl, "fn", endless)
    app = create_app(ServerConfig(model=str(image_run.path), name="digits", auth=False, access_log=False,
                                  explain_timeout_s=0.5))
    with TestClient(app) as c:
        r = c.post(EXPLAIN, json={"inputs": ONE, "method": "occlusion"})
        assert r.status_code == 504 and "--explain-timeout-s" in r.json()["error"], r.text
        assert c.post(PREDICT, json={"inputs": ONE}).status_code == 200
        wait_for(lambda: c.post(EXPLAIN, json={"inputs": ONE, "method": "saliency"}).status_code == 200,
                 what="the stopped explanation's slot given back")


def test_an_onnx_served_model_takes_forward_methods_only(image_run, registry_home):
    app = create_app(ServerConfig(model=str(image_run.path), name="digits", auth=False, access_log=False,
                                  runtime="onnx"))
    with TestClient(app) as c:
        r = c.post(EXPLAIN, json={"inputs": ONE, "method": "integrated-gradients"})
        assert r.status_code == 422 and "needs gradients" in r.json()["error"], r.text
        assert "Methods that do: occlusion" in r.json()["error"]
        r = c.post(EXPLAIN, json={"inputs": ONE})  # the default: the best method that applies
        assert r.status_code == 200 and r.json()["method"] == "occlusion", r.text
        assert c.post(PREDICT, json={"inputs": ONE}).status_code == 200


def test_a_text_model_is_explained_per_token_and_an_empty_text_is_422(text_run, registry_home):
    app = create_app(ServerConfig(model=str(text_run.path), name="topics", auth=False, access_log=False))
    with TestClient(app) as c:
        r = c.post("/v1/models/topics/explain", json={"texts": ["the router and the cable"],
                                                      "parameters": {"n_steps": 8}})
        assert r.status_code == 200, r.text
        (item,) = r.json()["items"]
        assert r.json()["method"] == "integrated-gradients" and r.json()["kind"] == "text"
        assert item["units"] and item["shape"] == [len(item["units"])] == [len(item["attributions"])]
        r = c.post("/v1/models/topics/explain", json={"texts": ["the router", "  "]})
        assert r.status_code == 422 and "texts[1] is empty" in r.json()["error"], r.text
        r = c.post("/v1/models/topics/explain", json={"texts": ["/etc/hostname"], "method": "occlusion"})
        assert r.status_code == 200 and "/etc/hostname" in "".join(r.json()["items"][0]["units"])  # never a path


def test_the_openapi_document_describes_the_route_and_schemathesis_reaches_it(client):
    import schemathesis

    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/v1/models/{model_name}/explain"]["post"]
    assert "slow" in post["summary"].lower() and "at most 4 inputs" in post["description"]
    assert {"200", "401", "413", "422", "429", "503", "504"} <= set(post["responses"])
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert all("images" in e["value"] for e in examples.values())
    r = client.post(EXPLAIN, json=examples["target"]["value"], headers=auth(fresh_key("example")[0]))
    assert r.status_code == 200 and r.json()["items"][0]["target"] == "0", r.text  # the documented example works
    answer = doc["components"]["schemas"]["ExplainResponse"]["properties"]
    assert {"items", "method", "settings", "notes"} <= set(answer)
    operations = [op.ok().path for op in schemathesis.openapi.from_dict(doc).get_all_operations()]
    assert "/v1/models/{model_name}/explain" in operations  # test_openapi's property-based run covers it


def test_serve_passes_its_explain_options_to_the_server(image_run, capsys, monkeypatch):
    seen = {}
    monkeypatch.setattr("modelyard.serving.app.serve", lambda cfg, **kwargs: seen.update(cfg=cfg))
    code, _, err = cli_in_process(capsys, "serve", image_run.path, "--explain-max-instances", "2",
                                  "--explain-max-body-mb", "0.5", "--explain-concurrency", "2",
                                  "--explain-timeout-s", "9")
    assert code == 0, err
    cfg = seen["cfg"]
    assert (cfg.explain_max_instances, cfg.explain_max_body_bytes, cfg.explain_concurrency,
            cfg.explain_timeout_s) == (2, 2**19, 2, 9.0)
