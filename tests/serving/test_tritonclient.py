"""The real `tritonclient[http]` client, unmodified, against the real server: every call that applies to a CPU server
without model control gives the model's answers; every call that does not gets a clean 4xx saying so.

Counted: 27 calls that apply (health and metadata 9, infer and async_infer 16 over JSON and binary inputs and
outputs, with and without model_version, and 2 on a text model's BYTES tensors), 14 that do not.
"""

import numpy as np
import pytest

import modelyard
from sklearn.datasets import load_digits
from tests.serving.helpers import auth

X = load_digits().images[:3].astype(np.float32)  # (3, 8, 8), pixels 0..16


def strings(array) -> list[str]:
    """A BYTES output as strings (tritonclient gives bytes from binary data, str from JSON)."""
    return [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1)]


@pytest.fixture(scope="module")
def client(image_server):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(image_server.url.removeprefix("http://"), concurrency=2)
    yield client
    client.close()


@pytest.fixture(scope="module")
def expected(image_run):
    model = modelyard.load(image_run.path)
    return model.predict_proba(X), model.predict(X)


def _infer(client, key, *, binary_in, binary_out, version, run_async, request_id=""):
    import tritonclient.http as triton

    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=binary_in)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary_out) for name in ("probabilities", "label")]
    call = client.async_infer if run_async else client.infer
    answer = call("digits", [inp], model_version=version, outputs=outputs, request_id=request_id,
                  headers=auth(key))  # a fresh dict: tritonclient writes into it
    return answer.get_result() if run_async else answer


INFER_CASES = [(binary_in, binary_out, version, run_async) for run_async in (False, True)
               for version in ("", "1") for binary_in in (False, True) for binary_out in (False, True)]


@pytest.mark.parametrize("binary_in, binary_out, version, run_async", INFER_CASES,
                         ids=[f"{'async_' if a else ''}infer-{'bin' if i else 'json'}-in-{'bin' if o else 'json'}-out"
                              f"{'-v' + v if v else ''}" for i, o, v, a in INFER_CASES])
def test_infer(client, api_key, expected, binary_in, binary_out, version, run_async):
    result = _infer(client, api_key, binary_in=binary_in, binary_out=binary_out, version=version,
                    run_async=run_async, request_id=f"req-{version}-{binary_in:d}{binary_out:d}")
    prob, labels = expected
    assert np.allclose(result.as_numpy("probabilities"), prob, atol=1e-6)
    assert strings(result.as_numpy("label")) == list(labels)
    sent = result.get_output("probabilities")
    assert ("binary_data_size" in (sent.get("parameters") or {})) == binary_out, sent
    response = result.get_response()
    assert response["id"] == f"req-{version}-{binary_in:d}{binary_out:d}" and response["model_version"] == "1"


def test_health_and_metadata(client, api_key):
    """is_server_live, is_server_ready, get_server_metadata; is_model_ready, get_model_metadata and
    get_model_config without and with model_version."""
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "modelyard" and "binary_tensor_data" in meta["extensions"]
    for version in ("", "1"):
        assert client.is_model_ready("digits", model_version=version, headers=auth(api_key))
        meta = client.get_model_metadata("digits", model_version=version, headers=auth(api_key))
        assert meta["versions"] == ["1"] and meta["inputs"] == [{"name": "input", "datatype": "FP32",
                                                                 "shape": [-1, 8, 8]}]
        config = client.get_model_config("digits", model_version=version, headers=auth(api_key))
        assert config["max_batch_size"] > 0 and config["input"] == [{"name": "input", "data_type": "TYPE_FP32",
                                                                     "dims": [8, 8]}]
        assert [o["name"] for o in config["output"]] == ["probabilities", "label"]


def test_unknown_version_is_a_404_with_the_reason(client, api_key):
    from tritonclient.utils import InferenceServerException

    assert not client.is_model_ready("digits", model_version="2", headers=auth(api_key))
    for call in (lambda: client.get_model_metadata("digits", model_version="2", headers=auth(api_key)),
                 lambda: _infer(client, api_key, binary_in=True, binary_out=True, version="2", run_async=False)):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == "404" and "no version '2'" in info.value.message()


def test_default_outputs_are_binary_and_an_absent_id_stays_absent(client, api_key, expected):
    """With no outputs named, tritonclient asks for every output in binary (`binary_data_output`)."""
    import tritonclient.http as triton

    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=False)
    result = client.infer("digits", [inp], headers=auth(api_key))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities", "label"]
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert "id" not in result.get_response()
    assert np.allclose(result.as_numpy("probabilities"), expected[0], atol=1e-6)


def test_classification_extension(client, api_key, expected):
    import tritonclient.http as triton

    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    result = client.infer("digits", [inp], outputs=[triton.InferRequestedOutput("probabilities", class_count=2)],
                          headers=auth(api_key))
    top = np.array([v.split(":") for v in strings(result.as_numpy("probabilities"))]).reshape(3, 2, 3)  # p:i:label
    prob, labels = expected
    assert [row[0][2] for row in top] == list(labels)
    assert all(float(p) == pytest.approx(prob[n, int(i)], abs=1e-5) for n, row in enumerate(top) for p, i, _ in row)


@pytest.mark.parametrize("binary", [False, True])
def test_text_model_bytes_tensors(text_server, text_run, api_key, binary):
    import tritonclient.http as triton

    texts = ["the router and the cable", "tomato seeds in the garden soil"]
    expected = modelyard.load(text_run.path).predict_proba(texts)
    client = triton.InferenceServerClient(text_server.url.removeprefix("http://"))
    inp = triton.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "label")]
    result = client.infer("topics", [inp], outputs=outputs, headers=auth(api_key))
    assert np.allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    assert strings(result.as_numpy("label")) == list(modelyard.load(text_run.path).predict(texts))


NOT_SUPPORTED = [
    ("get_model_repository_index", lambda c, h: c.get_model_repository_index(headers=h), "repository"),
    ("load_model", lambda c, h: c.load_model("digits", headers=h), "repository"),
    ("unload_model", lambda c, h: c.unload_model("digits", headers=h), "repository"),
    ("get_inference_statistics", lambda c, h: c.get_inference_statistics("digits", headers=h), "statistics"),
    ("update_trace_settings", lambda c, h: c.update_trace_settings("digits", {"trace_level": ["TIMESTAMPS"]},
                                                                   headers=h), "trace"),
    ("get_trace_settings", lambda c, h: c.get_trace_settings(headers=h), "trace"),
    ("update_log_settings", lambda c, h: c.update_log_settings({"log_info": False}, headers=h), "logging"),
    ("get_log_settings", lambda c, h: c.get_log_settings(headers=h), "logging"),
    ("get_system_shared_memory_status", lambda c, h: c.get_system_shared_memory_status(headers=h), "shared memory"),
    ("register_system_shared_memory", lambda c, h: c.register_system_shared_memory("r", "/k", 64, headers=h),
     "shared memory"),
    ("unregister_system_shared_memory", lambda c, h: c.unregister_system_shared_memory(headers=h), "shared memory"),
    ("get_cuda_shared_memory_status", lambda c, h: c.get_cuda_shared_memory_status(headers=h), "shared memory"),
    ("register_cuda_shared_memory", lambda c, h: c.register_cuda_shared_memory("r", b"handle", 0, 64, headers=h),
     "shared memory"),
    ("unregister_cuda_shared_memory", lambda c, h: c.unregister_cuda_shared_memory(headers=h), "shared memory"),
]


@pytest.mark.parametrize("call, fragment", [c[1:] for c in NOT_SUPPORTED], ids=[c[0] for c in NOT_SUPPORTED])
def test_calls_that_do_not_apply_get_a_clean_4xx(client, api_key, call, fragment):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        call(client, auth(api_key))
    assert info.value.status() == "404", info.value
    assert "not supported" in info.value.message() and fragment in info.value.message(), info.value.message()
    assert client.is_server_ready()
