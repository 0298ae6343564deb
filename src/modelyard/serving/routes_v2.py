"""The Open Inference Protocol (KServe v2): health, server and model metadata, infer."""

from __future__ import annotations

import time
from contextlib import aclosing

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from modelyard.serving.auth import api_key
from modelyard.serving.context import Served
from modelyard.serving.errors import ERRORS, error_response
from modelyard.serving.protocol import (BadRequest, ErrorResponse, InferRequest, InferResponse, ModelMetadata,
                                        TensorOut, TensorSpec, decode_v2, input_specs)

NOT_READY = {503: {"model": ErrorResponse, "description": "Not ready: the batcher is not running."}}


def router(served: Served) -> APIRouter:
    r = APIRouter()
    model, name, version, pre = served.model, served.name, served.version, served.pre
    outputs = ([TensorSpec(name="text_output", datatype="BYTES", shape=[1])] if served.lm else
               [TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(model.labels)]),
                TensorSpec(name="label", datatype="BYTES", shape=[-1])])

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

        return {"name": "modelyard", "version": __version__, "extensions": ["binary_tensor_data"]}

    @r.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=ERRORS, tags=["v2"])
    async def model_metadata(model_name: str, key=Depends(api_key)) -> ModelMetadata:
        served.check_name(model_name)
        params = {"task": model.meta.get("task", "classification"), "kind": pre.kind}
        if not served.lm:
            params["labels"] = model.labels
        return ModelMetadata(name=name, versions=[version], platform="modelyard", inputs=input_specs(pre),
                             outputs=outputs, parameters=params)

    @r.get("/v2/models/{model_name}/ready", responses=ERRORS, tags=["v2"])
    async def model_ready(model_name: str, key=Depends(api_key)) -> dict:
        served.check_name(model_name)
        return {"name": name, "ready": served.ready}

    @r.post("/v2/models/{model_name}/infer", response_model=InferResponse, responses=ERRORS, tags=["v2"])
    async def infer(model_name: str, body: InferRequest, key=Depends(api_key)) -> InferResponse:
        served.check_name(model_name)
        if served.lm:
            return await _complete(served, body, key)
        wanted = {o.name for o in body.outputs or []}
        if wanted - {"probabilities", "label"}:
            raise BadRequest(f"unknown output(s) {sorted(wanted - {'probabilities', 'label'})}; "
                             "this model has probabilities and label")
        x, n = decode_v2(body, pre, served.max_items)
        prob = await served.predict(x, n, key)
        labels = [model.labels[i] for i in prob.argmax(axis=1)]
        answers = [{"name": "probabilities", "shape": list(prob.shape), "datatype": "FP32",
                    "data": prob.astype(np.float32).reshape(-1).tolist()},
                   {"name": "label", "shape": [n], "datatype": "BYTES", "data": labels}]
        # A plain JSONResponse: InferResponse documents it; validating it again would cost every request.
        return JSONResponse({"model_name": name, "model_version": version, "id": body.id,
                             "outputs": [o for o in answers if not wanted or o["name"] in wanted]})

    return r


async def _complete(served: Served, body: InferRequest, key: dict | None) -> InferResponse:
    prompts, _ = decode_v2(body, served.pre, served.max_items)
    t0, pieces = time.perf_counter(), []
    async with aclosing(served.lm.stream(prompt=prompts[0])) as stream:
        async for piece in stream:
            pieces.append(piece)
    if key:
        served.usage.add(key["id"], len(pieces), (time.perf_counter() - t0) * 1000)
    return InferResponse(model_name=served.name, model_version=served.version, id=body.id,
                         outputs=[TensorOut(name="text_output", shape=[1], datatype="BYTES", data=["".join(pieces)])])
