"""The OpenAPI document is complete and stable (a snapshot), and the server honours it (schemathesis)."""

import json
import os
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from modelyard.serving.app import ServerConfig, create_app
from tests.serving.helpers import assert_still_serving

SNAPSHOT = Path(__file__).parent / "openapi.snapshot.json"


def test_openapi_document_matches_the_snapshot(image_run):
    doc = create_app(ServerConfig(model=str(image_run.path), name="digits", auth=True)).openapi()
    paths = set(doc["paths"])
    assert {"/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}", "/v2/models/{model_name}/infer",
            "/v1/models/{model_name}/predict", "/v1/models/{model_name}/generate", "/metrics"} <= paths
    infer = doc["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert {"200", "400", "401", "404", "413", "422"} <= set(infer["responses"])
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    assert doc == json.loads(SNAPSHOT.read_text()), \
        "the API changed; if on purpose, rerun with UPDATE_SNAPSHOTS=1 and commit tests/serving/openapi.snapshot.json"


def test_no_server_errors_and_responses_match_the_schema(image_server, api_key):
    """Property-based: requests generated from the server's own OpenAPI document, valid and not."""
    from hypothesis import given
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_url(f"{image_server.url}/openapi.json")
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            if case.path_parameters and "model_name" in case.path_parameters:
                case.path_parameters["model_name"] = "digits"  # reach the model, not only the 404
            case.call_and_validate(headers={"Authorization": f"Bearer {api_key}"},
                                   checks=[not_a_server_error, response_schema_conformance, status_code_conformance])
            assert_still_serving(image_server, api_key)  # no generated request wedges the server

        check()
        checked += 1
    assert checked >= 8 and image_server.alive()
