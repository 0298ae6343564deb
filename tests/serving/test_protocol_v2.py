"""The Open Inference Protocol's details, over raw HTTP: error bodies, the response id, binary outputs byte by
byte, model versions from the registry; and one codec per preprocessor kind."""

import json
import struct

import httpx
import numpy as np
import pytest

import modelyard
from sklearn.datasets import load_digits
from tests.serving.helpers import auth, v2_image

INFER = "/v2/models/digits/infer"
X = load_digits().images[:2].astype(np.float32)  # (2, 8, 8)


def error_cases(key):
    """(what, method, path, request kwargs, status): every way a request can fail, each answered by another layer."""
    good = v2_image(X)
    return [
        ("unmatched GET", "GET", "/v2/nope", {}, 404),
        ("unmatched POST", "POST", "/nope", {"json": good}, 404),
        ("wrong method", "PUT", INFER, {"json": good}, 405),
        ("GET on infer", "GET", INFER, {}, 405),
        ("schema", "POST", INFER, {"json": {"inputs": "x"}}, 422),
        ("broken JSON", "POST", INFER, {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
         422),
        ("unknown model", "POST", "/v2/models/nope/infer", {"json": good}, 404),
        ("unknown version", "POST", "/v2/models/digits/versions/9/infer", {"json": good}, 404),
        ("unknown version metadata", "GET", "/v2/models/digits/versions/9", {}, 404),
        ("unknown version ready", "GET", "/v2/models/digits/versions/9/ready", {}, 404),
        ("unknown version config", "GET", "/v2/models/digits/versions/9/config", {}, 404),
        ("not supported", "POST", "/v2/repository/index", {}, 404),
        ("model stats", "GET", "/v2/models/stats", {}, 404),
        ("bad datatype", "POST", INFER, {"json": {"inputs": [{**good["inputs"][0], "datatype": "INT32"}]}}, 400),
        ("bad binary flag", "POST", INFER, {"json": {**good, "parameters": {"binary_data_output": "yes"}}}, 400),
        ("classes of labels", "POST", INFER,
         {"json": {**good, "outputs": [{"name": "label", "parameters": {"classification": 2}}]}}, 400),
        ("shared memory", "POST", INFER,
         {"json": {**good, "outputs": [{"name": "label", "parameters": {"shared_memory_region": "r"}}]}}, 400),
        ("bad header", "POST", INFER, {"content": b"{}", "headers": {"Inference-Header-Content-Length": "x"}}, 400),
        ("no key", "POST", INFER, {"json": good, "key": None}, 401),
        ("body over the limit", "POST", INFER, {"content": b" " * (5 * 2**20)}, 413),  # the default limit: 4 MiB
    ]


@pytest.mark.parametrize("index", range(len(error_cases(""))), ids=[c[0] for c in error_cases("")])
def test_every_error_body_is_an_error_object(image_server, api_key, index):
    what, method, path, kwargs, status = error_cases(api_key)[index]
    kwargs = dict(kwargs)
    key = kwargs.pop("key", api_key)
    headers = {**(auth(key) if key else {}), **kwargs.pop("headers", {})}
    r = httpx.request(method, f"{image_server.url}{path}", headers=headers, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and len(body["error"]) > 10, body


def test_the_response_id_echoes_the_request_and_is_absent_without_one(image_server, api_key):
    r = httpx.post(f"{image_server.url}{INFER}", json={**v2_image(X), "id": "order-42"}, headers=auth(api_key))
    assert r.status_code == 200 and r.json()["id"] == "order-42"
    r = httpx.post(f"{image_server.url}{INFER}", json=v2_image(X), headers=auth(api_key))
    assert r.status_code == 200 and "id" not in r.json(), r.json()


def read_binary_response(r: httpx.Response) -> dict:
    """The outputs of a binary answer, decoded by hand from the extension's layout."""
    length = int(r.headers["inference-header-content-length"])
    head, offset, out = json.loads(r.content[:length]), length, {}
    for o in head["outputs"]:
        if "data" in o:
            out[o["name"]] = o["data"]
            continue
        chunk = r.content[offset:offset + o["parameters"]["binary_data_size"]]
        offset += len(chunk)
        if o["datatype"] == "BYTES":
            values, i = [], 0
            while i < len(chunk):
                (n,) = struct.unpack_from("<I", chunk, i)
                values.append(chunk[i + 4:i + 4 + n].decode())
                i += 4 + n
            out[o["name"]] = values
        else:
            out[o["name"]] = np.frombuffer(chunk, dtype="<f4").reshape(o["shape"]).tolist()
    assert offset == len(r.content)
    return out


def test_binary_outputs_carry_the_same_answers_as_json(image_server, image_run, api_key):
    """binary_data_output asks for every output in binary; an output's own binary_data overrides it."""
    model = modelyard.load(image_run.path)
    json_answer = httpx.post(f"{image_server.url}{INFER}", json=v2_image(X), headers=auth(api_key)).json()
    assert "inference-header-content-length" not in json_answer
    r = httpx.post(f"{image_server.url}{INFER}", json={**v2_image(X), "parameters": {"binary_data_output": True}},
                   headers=auth(api_key))
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    got = read_binary_response(r)
    assert np.allclose(got["probabilities"], model.predict_proba(X), atol=1e-6)
    assert got["label"] == list(model.predict(X)) == json_answer["outputs"][1]["data"]
    mixed = {**v2_image(X), "parameters": {"binary_data_output": True},
             "outputs": [{"name": "label", "parameters": {"binary_data": False}}, {"name": "probabilities"}]}
    r = httpx.post(f"{image_server.url}{INFER}", json=mixed, headers=auth(api_key))
    head = json.loads(r.content[:int(r.headers["inference-header-content-length"])])
    assert [o["name"] for o in head["outputs"]] == ["label", "probabilities"]  # the order asked for
    assert head["outputs"][0]["data"] == got["label"] and "data" not in head["outputs"][1]
    assert np.allclose(read_binary_response(r)["probabilities"], got["probabilities"])


def test_a_server_answers_for_the_registry_version_it_serves(image_run, tmp_path, monkeypatch):
    """Served as NAME:2, the server answers /versions/2 and says version 1 is not here."""
    from fastapi.testclient import TestClient

    from modelyard.serving.app import ServerConfig, create_app
    from modelyard.store import models

    monkeypatch.setenv("MODELYARD_ARTIFACTS", str(tmp_path / "artifacts"))
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    for _ in range(2):
        models.register(image_run.path, "digits", url=url)
    with TestClient(create_app(ServerConfig(model="digits:2", db_url=url, auth=False))) as client:
        assert client.get("/v2/models/digits").json()["versions"] == ["2"]
        assert client.get("/v2/models/digits/versions/2/ready").json() == {"name": "digits", "ready": True}
        r = client.post("/v2/models/digits/versions/2/infer", json=v2_image(X))
        assert r.status_code == 200 and r.json()["model_version"] == "2"
        r = client.post("/v2/models/digits/versions/1/infer", json=v2_image(X))
        assert r.status_code == 404 and r.json() == {
            "error": "model 'digits' has no version '1' on this server; it serves version 2"}
        assert client.get("/v2/models/digits/versions/1/ready").status_code == 404


def test_every_preprocessor_kind_has_a_codec():
    """Adding a kind of data means adding its codec: the server must never meet a kind it cannot decode."""
    import modelyard.data  # noqa: F401  (registers every kind)
    from modelyard.data.preprocess import PREPROCESSORS
    from modelyard.serving.codecs import CODECS

    assert set(CODECS.names()) == set(PREPROCESSORS.names())


def test_a_language_models_answer_in_binary():
    """The corpus codec's text output, written with the binary extension: a 4-byte length, then UTF-8."""
    from modelyard.serving.codecs import CorpusCodec
    from modelyard.serving.protocol import OutputRequest, encode_response

    wanted = {"text_output": OutputRequest(binary=True)}
    tensors = CorpusCodec(pre=None).encode("naïve", model=None, wanted=wanted)
    body, length = encode_response({"model_name": "lm", "model_version": "1"}, tensors, wanted)
    head = json.loads(body[:length])
    assert head["outputs"] == [{"name": "text_output", "datatype": "BYTES", "shape": [1],
                                "parameters": {"binary_data_size": 4 + len("naïve".encode())}}]
    assert body[length:] == struct.pack("<I", 6) + "naïve".encode()
