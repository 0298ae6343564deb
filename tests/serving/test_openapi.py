"""The OpenAPI document is complete and stable (a snapshot), and the server honours it (schemathesis): requests
generated from its own document, JSON and binary (the binary tensor data extension), get no 5xx, and every answer
matches the document."""

import json
import os
import struct
from pathlib import Path

import numpy as np
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelyard.serving.app import ServerConfig, create_app
from tests.serving.helpers import assert_still_serving, auth

SNAPSHOT = Path(__file__).parent / "openapi.snapshot.json"
INFER = "/v2/models/{model_name}/infer"
VERSION_INFER = "/v2/models/{model_name}/versions/{model_version}/infer"


def _checks():
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                                   response_schema_conformance, status_code_conformance)

    return [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
            response_headers_conformance]


def test_openapi_document_matches_the_snapshot(image_run):
    doc = create_app(ServerConfig(model=str(image_run.path), name="digits", auth=True)).openapi()
    paths = set(doc["paths"])
    version = "/v2/models/{model_name}/versions/{model_version}"
    assert {"/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}", INFER, VERSION_INFER, version,
            f"{version}/ready", f"{version}/config", "/v2/models/{model_name}/config",
            "/v1/models/{model_name}/predict", "/v1/models/{model_name}/generate", "/metrics"} <= paths
    for path in (INFER, VERSION_INFER):
        infer = doc["paths"][path]["post"]
        assert {"200", "400", "401", "404", "413", "422"} <= set(infer["responses"])
        assert {"application/json", "application/octet-stream"} <= set(infer["requestBody"]["content"])
        assert {"application/json", "application/octet-stream"} <= set(infer["responses"]["200"]["content"])
        assert "Inference-Header-Content-Length" in {p["name"] for p in infer["parameters"]}
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    assert doc == json.loads(SNAPSHOT.read_text()), \
        "the API changed; if on purpose, rerun with UPDATE_SNAPSHOTS=1 and commit tests/serving/openapi.snapshot.json"


def test_no_server_errors_and_responses_match_the_schema(image_server, api_key):
    """Property-based: requests generated from the server's own OpenAPI document, valid and not."""
    schema = schemathesis.openapi.from_url(f"{image_server.url}/openapi.json")
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            if case.path_parameters:  # reach the model, not only the 404
                case.path_parameters.update({k: v for k, v in (("model_name", "digits"), ("model_version", "1"))
                                             if k in case.path_parameters})
            case.call_and_validate(headers=auth(api_key), checks=_checks())
            assert_still_serving(image_server, api_key)  # no generated request wedges the server

        check()
        checked += 1
    assert checked >= 13 and image_server.alive()


# ---------------------------------------------------------------- the binary tensor data extension

FORMATS = {"FP32": "f", "FP64": "d", "FP16": "e", "INT8": "b", "UINT8": "B", "INT64": "q", "BOOL": "?"}
FAULTS = ["none", "none", "none", "none", "empty", "shape", "datatype", "raw", "size", "length", "name", "flag",
          "output"]


def tensor_bytes(draw, datatype: str, count: int) -> bytes:
    """Well-formed bytes for `count` values of `datatype`."""
    if datatype == "BYTES":
        items = draw(st.lists(st.text(max_size=6), min_size=count, max_size=count))
        return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in items)
    if datatype in ("FP32", "FP64", "FP16"):
        values = draw(st.lists(st.floats(-20, 20, width=16 if datatype == "FP16" else 32), min_size=count,
                               max_size=count))
    else:
        values = draw(st.lists(st.integers(0, 1 if datatype == "BOOL" else 100), min_size=count, max_size=count))
    return struct.pack(f"<{count}{FORMATS[datatype]}", *values)


@st.composite
def binary_requests(draw) -> tuple[bytes, str]:
    """A binary-extension infer request for the digits model (input FP32 (-1, 8, 8)): a JSON header naming the
    input whose bytes follow it, asking for outputs in JSON or binary; right, or wrong in one place (`FAULTS`)."""
    fault = draw(st.sampled_from(FAULTS))
    n = 0 if fault == "empty" else draw(st.integers(1, 3))
    shape = draw(st.sampled_from([[n, 64], [n, 8, 7], [n, 8, 8, 1]])) if fault == "shape" else [n, 8, 8]
    datatype = (draw(st.sampled_from(["FP64", "FP16", "INT8", "UINT8", "INT64", "BOOL", "BYTES"]))
                if fault == "datatype" else "FP32")
    raw = (draw(st.binary(max_size=8 * n * 64 + 8)) if fault == "raw"
           else tensor_bytes(draw, datatype, int(np.prod(shape))))
    size = draw(st.one_of(st.integers(-2, len(raw) + 8), st.text(max_size=2))) if fault == "size" else len(raw)
    header: dict = {"inputs": [{"name": "pixels" if fault == "name" else "input", "shape": shape,
                                "datatype": datatype, "parameters": {"binary_data_size": size}}]}
    if draw(st.booleans()):
        header["id"] = draw(st.text(max_size=8))
    if fault == "flag" or draw(st.booleans()):
        header["parameters"] = {"binary_data_output": draw(st.integers(0, 1)) if fault == "flag" else
                                draw(st.booleans())}
    if fault == "output" or draw(st.booleans()):
        names = ["probabilities", "label"] + (["logits"] if fault == "output" else [])
        header["outputs"] = draw(st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(names)},
            optional={"parameters": st.fixed_dictionaries({}, optional={
                "binary_data": st.booleans(), "classification": st.integers(0, 12)})}),
            min_size=1, max_size=2, unique_by=lambda o: o["name"]))
    head = json.dumps(header).encode()
    length = draw(st.integers(0, len(head) + len(raw) + 2)) if fault == "length" else len(head)
    return head + raw, str(length)


def test_binary_extension_requests_get_no_5xx_and_match_the_schema(image_server, api_key):
    """Binary-extension bodies built to be nearly right, sent through the document's octet-stream request body:
    every answer is documented, a binary answer's header length and tensor sizes add up to its body, and the
    server keeps serving."""
    schema = schemathesis.openapi.from_url(f"{image_server.url}/openapi.json")
    operations = [schema[path]["POST"] for path in (INFER, VERSION_INFER)]
    statuses = []

    # Always tried, whatever the draw: a right request answered in binary, the same answered in JSON, and a
    # wrong one (the strategy reaches all three only most of the time).
    pixels = np.zeros((1, 8, 8), dtype="<f4").tobytes()

    def right(binary_output: bool, size: int = len(pixels)):
        head = json.dumps({"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32",
                                       "parameters": {"binary_data_size": size}}],
                           "parameters": {"binary_data_output": binary_output}}).encode()
        return head + pixels, str(len(head))

    @given(st.sampled_from(operations), binary_requests())
    @example(operations[0], right(True))
    @example(operations[1], right(False))
    @example(operations[0], right(True, size=len(pixels) + 4))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    def check(operation, request):
        body, length = request
        case = operation.Case(path_parameters={"model_name": "digits", "model_version": "1"}, body=body,
                              media_type="application/octet-stream",
                              headers={"Inference-Header-Content-Length": length})
        response = case.call_and_validate(headers=auth(api_key), checks=_checks())
        binary = "inference-header-content-length" in response.headers
        statuses.append(f"{response.status_code}{' binary' if binary else ''}")
        if response.status_code == 200 and binary:
            head_length = int(response.headers["inference-header-content-length"][0])  # a list per name
            head = json.loads(response.content[:head_length])
            sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"] if "data" not in o]
            assert head_length + sum(sizes) == len(response.content)
        assert_still_serving(image_server, api_key)

    check()
    # The strategy reaches the model, answering in JSON and in binary, and its checks.
    assert {"200", "200 binary", "400"} <= set(statuses), statuses
