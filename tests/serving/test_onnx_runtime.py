"""Serving through ONNX Runtime: an onnx derived run as it is, and a torch run with --runtime onnx."""

import json

import httpx
import numpy as np
from sklearn.datasets import load_digits

import modelyard
from modelyard.compress import compress
from tests.serving.conftest import Server
from tests.serving.helpers import v2_image


def test_an_onnx_run_is_served_with_the_answers_modelyard_load_gives(text_run, registry_home, tmp_path):
    derived = compress(text_run.path, "onnx", output=tmp_path, speed_iterations=1).path
    texts = ["the router and the cable", "tomato seeds in the garden soil", "a"]
    expected = modelyard.load(derived).predict_proba(texts)
    server = Server(derived, "--name", "topics", "--no-auth", "--no-access-log")
    try:
        r = httpx.post(f"{server.url}/v1/models/topics/predict", json={"texts": texts})
        assert r.status_code == 200, r.text
        labels = modelyard.load(derived).labels
        got = [[p["probabilities"][lab] for lab in labels] for p in r.json()["predictions"]]
        np.testing.assert_allclose(got, expected, atol=1e-6)
    finally:
        server.stop()


def test_runtime_onnx_exports_a_torch_run_once_and_serves_it(image_run, registry_home):
    from modelyard.compress.export import serving_copy

    x = load_digits().images[:5].astype(np.float32)
    server = Server(image_run.path, "--name", "digits", "--no-auth", "--runtime", "onnx")
    try:
        r = httpx.post(f"{server.url}/v2/models/digits/infer", json=v2_image(x))
        assert r.status_code == 200, r.text
        got = np.array(r.json()["outputs"][0]["data"]).reshape(5, 10)
    finally:
        log = server.stop()
    np.testing.assert_allclose(got, modelyard.load(image_run.path).predict_proba(x), atol=1e-4)
    copies = [p for p in (registry_home / "onnx-cache").iterdir() if not p.name.startswith(".")]
    assert len(copies) == 1 and "serving through ONNX Runtime" in log and str(copies[0]) in log
    assert json.loads((copies[0] / "modelyard.json").read_text())["family"] == "onnx"
    made = (copies[0] / "model.onnx").stat().st_mtime_ns
    assert serving_copy(modelyard.load(image_run.path)) == copies[0]  # the next start reuses the copy
    assert (copies[0] / "model.onnx").stat().st_mtime_ns == made
