"""The v1 JSON API: labels with probabilities (`predict`), streamed text (`generate`)."""

from __future__ import annotations

import asyncio

import time
from contextlib import aclosing

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse

from modelyard.serving.auth import api_key
from modelyard.serving.context import Served
from modelyard.serving.errors import ERRORS
from modelyard.serving.codecs import decode_v1
from modelyard.serving.protocol import BadRequest, GenerateRequest, PredictRequest, PredictResponse, check_text


class ClosingStream(StreamingResponse):
    """Closes its iterator however the response ends (a client that disconnects included), so the iterator's
    cleanup (releasing the model, metering) runs now rather than whenever it is garbage-collected; then awaits
    `on_close()`, which runs even when the iterator never started (and so has no cleanup to run)."""

    def __init__(self, *args, on_close=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()
                if self.on_close:
                    await self.on_close()


def router(served: Served) -> APIRouter:
    r = APIRouter()
    model, name = served.model, served.name

    @r.post("/v1/models/{model_name}/predict", response_model=PredictResponse, responses=ERRORS, tags=["v1"])
    async def predict(model_name: str, body: PredictRequest, key=Depends(api_key)) -> PredictResponse:
        """Labels with probabilities for texts, base64 images, table rows or numeric arrays."""
        served.check_name(model_name)
        if served.lm:
            raise BadRequest(f"{name} is a language model: POST /v1/models/{name}/generate")
        x, n = await asyncio.to_thread(decode_v1, body, served.pre, served.max_items)  # base64 images decode here
        prob = await served.predict(x, n, key)
        return JSONResponse({"model": name, "predictions": [
            {"label": model.labels[int(p.argmax())], "confidence": float(p.max()),
             "probabilities": {lab: float(v) for lab, v in zip(model.labels, p)}} for p in prob]})

    @r.post("/v1/models/{model_name}/generate", responses={**ERRORS, 200: {"content": {"text/plain": {}},
                                                                         "description": "Streamed text."}},
            response_class=StreamingResponse, tags=["v1"])
    async def generate(model_name: str, body: GenerateRequest, key=Depends(api_key)):
        """Continue a prompt, streaming the text as it is sampled (language models)."""
        served.check_name(model_name)
        if not served.lm:
            raise BadRequest(f"{name} is a classifier: POST /v1/models/{name}/predict")
        await served.lm.check_prompt(check_text(body.prompt, "prompt"))
        held = await served.limiter.reserve(key, body.max_new_tokens)  # 429 if the quota cannot cover them
        t0, count = time.perf_counter(), 0

        async def stream():
            nonlocal count
            try:
                async with aclosing(served.lm.stream(prompt=body.prompt, max_new_tokens=body.max_new_tokens,
                                                     temperature=body.temperature, top_k=body.top_k,
                                                     seed=body.seed)) as pieces:
                    async for piece in pieces:
                        count += 1
                        yield piece
            finally:  # a client that went away is billed for the tokens generated for it
                if key:
                    served.usage.add(key["id"], count, (time.perf_counter() - t0) * 1000)

        return ClosingStream(stream(), media_type="text/plain; charset=utf-8", on_close=lambda: held.settle(count))

    return r
