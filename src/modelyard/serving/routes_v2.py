"""The Open Inference Protocol (KServe v2): health, server and model metadata, model config, infer; each model
route also under `/versions/{model_version}`. Answers are JSON, or binary tensor data when the request asks.

The protocol's extensions that need model control or another transport (repository, load and unload, statistics,
trace and log settings, shared memory) get a 404 saying they are not supported, rather than a bare "no route".
"""

from __future__ import annotations

import time
from contextlib import aclosing

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from modelyard.serving.auth import api_key
from modelyard.serving.codecs import Codec, codec_for, decode_v2
from modelyard.serving.context import Served
from modelyard.serving.errors import ERRORS, AsciiJSONResponse, error_response
from modelyard.serving.protocol import (DEFAULT_NEW_TOKENS, BadRequest, ErrorResponse, InferRequest, InferResponse,
                                        ModelConfig, ModelMetadata, encode_response, model_config, output_requests)

NOT_READY = {503: {"model": ErrorResponse, "description": "Not ready: the batcher is not running."}}
BINARY_HEADER = "Inference-Header-Content-Length"

# The binary tensor data extension, documented where FastAPI cannot see it (the body is read in middleware).
BINARY_REQUEST = {
    "parameters": [{"name": BINARY_HEADER, "in": "header", "required": False,
                    "description": "Binary tensor data extension: the byte length of the JSON header that starts "
                                   "the body; each input with `binary_data_size` has its bytes after it, in order.",
                    "schema": {"type": "integer", "minimum": 0}}],
    "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
}
INFER_RESPONSES = {
    **ERRORS, **NOT_READY,
    200: {"description": "The outputs: JSON, or (when the request asks for binary outputs) a JSON header of "
                         f"{BINARY_HEADER} bytes followed by the tensors' bytes.",
          "headers": {BINARY_HEADER: {"description": "Present when the body holds binary tensor data.",
                                      "schema": {"type": "integer"}}},
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
}
STATS = ("the statistics extension", "; Prometheus counters are at /metrics")
NOT_SUPPORTED = {  # path -> (what, and what to do instead)
    "/v2/repository/{rest:path}": ("the model repository extension (index, load, unload)", ""),
    "/v2/models/stats": STATS,
    "/v2/models/{model_name}/stats": STATS,
    "/v2/models/{model_name}/versions/{model_version}/stats": STATS,
    "/v2/trace/setting": ("the trace extension", ""),
    "/v2/models/{model_name}/trace/setting": ("the trace extension", ""),
    "/v2/logging": ("the logging extension", "; the server logs to its stderr"),
    "/v2/systemsharedmemory/{rest:path}": ("the system shared memory extension", "; send the tensors in the request"),
    "/v2/cudasharedmemory/{rest:path}": ("the CUDA shared memory extension", "; send the tensors in the request"),
}


def router(served: Served) -> APIRouter:
    r = APIRouter()
    _unsupported_routes(r)  # first: /v2/models/stats must not be read as a model named "stats"
    _health_routes(r, served)
    _model_routes(r, served, codec_for(served.pre))
    return r


def _health_routes(r: APIRouter, served: Served) -> None:
    @r.get("/v2/health/live", tags=["health"])
    def live() -> dict:
        return {"live": True}

    @r.get("/v2/health/ready", tags=["health"], responses=NOT_READY)
    def ready() -> dict:
        if not served.ready:
            return error_response(503, "not ready: the batcher is not running; see the server log")
        return {"ready": True}

    @r.get("/v2", tags=["v2"])
    def server_metadata() -> dict:
        from modelyard import __version__

        return {"name": "modelyard", "version": __version__,
                "extensions": ["binary_tensor_data", "classification", "model_configuration"]}


def _model_routes(r: APIRouter, served: Served, codec: Codec) -> None:
    """Metadata, readiness, config and infer, each at /v2/models/NAME and /v2/models/NAME/versions/VERSION."""
    name, version = served.name, served.version
    inputs, outputs = codec.inputs(), codec.outputs(served.model)

    def check(model_name: str, model_version: str | None = None) -> None:
        served.check_name(model_name)
        if model_version is not None and model_version != version:
            raise BadRequest(f"model {name!r} has no version {model_version!r} on this server; it serves version "
                             f"{version}", status=404)

    def metadata() -> ModelMetadata:
        params = {"task": served.model.meta.get("task", "classification"), "kind": served.pre.kind}
        if not served.lm:
            params["labels"] = served.model.labels
        return ModelMetadata(name=name, versions=[version], platform="modelyard", inputs=inputs, outputs=outputs,
                             parameters=params)

    def readiness() -> dict:
        if not served.ready:
            return error_response(503, f"model {name!r} is not ready: its batcher is not running; see the server "
                                       "log")
        return {"name": name, "ready": True}

    @r.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=ERRORS, tags=["v2"])
    async def model_metadata(model_name: str, key=Depends(api_key)) -> ModelMetadata:
        check(model_name)
        return metadata()

    @r.get("/v2/models/{model_name}/versions/{model_version}", response_model=ModelMetadata, responses=ERRORS,
           tags=["v2"])
    async def model_version_metadata(model_name: str, model_version: str, key=Depends(api_key)) -> ModelMetadata:
        check(model_name, model_version)
        return metadata()

    @r.get("/v2/models/{model_name}/ready", responses={**ERRORS, **NOT_READY}, tags=["v2"])
    async def model_ready(model_name: str, key=Depends(api_key)) -> dict:
        check(model_name)
        return readiness()

    @r.get("/v2/models/{model_name}/versions/{model_version}/ready", responses={**ERRORS, **NOT_READY},
           tags=["v2"])
    async def model_version_ready(model_name: str, model_version: str, key=Depends(api_key)) -> dict:
        check(model_name, model_version)
        return readiness()

    @r.get("/v2/models/{model_name}/config", response_model=ModelConfig, response_model_exclude_none=True,
           responses=ERRORS, tags=["v2"])
    async def config(model_name: str, key=Depends(api_key)) -> ModelConfig:
        """The model in Triton's configuration terms (what `tritonclient`'s get_model_config reads)."""
        check(model_name)
        return model_config(name, inputs, outputs, served.max_items)

    @r.get("/v2/models/{model_name}/versions/{model_version}/config", response_model=ModelConfig,
           response_model_exclude_none=True, responses=ERRORS, tags=["v2"])
    async def version_config(model_name: str, model_version: str, key=Depends(api_key)) -> ModelConfig:
        check(model_name, model_version)
        return model_config(name, inputs, outputs, served.max_items)

    @r.post("/v2/models/{model_name}/infer", response_model=InferResponse, responses=INFER_RESPONSES,
            openapi_extra=BINARY_REQUEST, tags=["v2"])
    async def infer(model_name: str, body: InferRequest, key=Depends(api_key)) -> InferResponse:
        check(model_name)
        return await _infer(served, codec, body, key)

    @r.post("/v2/models/{model_name}/versions/{model_version}/infer", response_model=InferResponse,
            responses=INFER_RESPONSES, openapi_extra=BINARY_REQUEST, tags=["v2"])
    async def version_infer(model_name: str, model_version: str, body: InferRequest,
                            key=Depends(api_key)) -> InferResponse:
        check(model_name, model_version)
        return await _infer(served, codec, body, key)


async def _infer(served: Served, codec: Codec, body: InferRequest, key: dict | None) -> Response:
    wanted = output_requests(body, [o.name for o in codec.outputs(served.model)], codec.classifiable)
    x, n = decode_v2(body, codec, served.max_items)
    answer = await (_complete(served, x, key) if served.lm else served.predict(x, n, key))
    head = {"model_name": served.name, "model_version": served.version}
    if body.id is not None:
        head["id"] = body.id
    # Written here, not through InferResponse: it documents the answer; validating it again would cost every request.
    content, header_length = encode_response(head, codec.encode(answer, served.model, wanted), wanted)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={BINARY_HEADER: str(header_length)})


async def _complete(served: Served, prompt: str, key: dict | None) -> str:
    """The prompt's continuation, metered like v1 generate: its tokens reserved against the key's quota first."""
    held = await served.limiter.reserve(key, DEFAULT_NEW_TOKENS)  # 429 if the quota cannot cover them
    t0, pieces = time.perf_counter(), []
    try:
        async with aclosing(served.lm.stream(prompt=prompt, max_new_tokens=DEFAULT_NEW_TOKENS)) as stream:
            async for piece in stream:
                pieces.append(piece)
    finally:
        await held.settle(len(pieces))
        if key:
            served.usage.add(key["id"], len(pieces), (time.perf_counter() - t0) * 1000)
    return "".join(pieces)


def _unsupported_routes(r: APIRouter) -> None:
    for path, (what, instead) in NOT_SUPPORTED.items():
        r.add_api_route(path, _not_supported(what, instead), methods=["GET", "POST"], include_in_schema=False)


def _not_supported(what: str, instead: str):
    def answer(request: Request) -> AsciiJSONResponse:
        return error_response(404, f"{request.method} {request.url.path[:200]}: {what} is not supported by this "
                                   f"server (it serves one model, chosen when it starts, over HTTP){instead}")

    return answer
