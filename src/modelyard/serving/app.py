"""The inference server: FastAPI on uvicorn, speaking the Open Inference Protocol (KServe v2) and a v1 JSON API.

Safe by default: API keys are required (`Authorization: Bearer KEY`), bodies are capped, a bad request gets a
4xx saying what was wrong and never takes the server down. Usage is metered per key into the registry.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from modelyard.errors import ModelyardError
from modelyard.serving.batching import Batcher
from modelyard.serving.metrics import ServerMetrics
from modelyard.serving.protocol import (BadRequest, ErrorResponse, GenerateRequest, InferRequest, InferResponse,
                                        ModelMetadata, PredictRequest, PredictResponse, TensorOut, TensorSpec,
                                        binary_to_json, decode_v1, decode_v2, input_specs)

ENV_CONFIG = "MODELYARD_SERVE_CONFIG"


@dataclass
class ServerConfig:
    model: str  # a run directory, or NAME / NAME:VERSION in the registry
    name: str | None = None
    auth: bool = True
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 4 * 2**20
    max_items: int = 1024
    db_url: str | None = None


ERRORS = {400: {"model": ErrorResponse, "description": "The request is malformed or does not fit the model."},
          401: {"model": ErrorResponse, "description": "Missing or invalid API key."},
          404: {"model": ErrorResponse, "description": "No such model on this server."},
          413: {"model": ErrorResponse, "description": "Body or item count over this server's limit."},
          422: {"model": ErrorResponse, "description": "The body does not match the schema."}}


class _Limits:
    """ASGI middleware: cap the body size (413), and turn v2 binary-extension bodies into JSON for the typed route."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app, self.max = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max:
            return await _error(send, 413, f"body of {int(declared):,} bytes is over the limit of {self.max:,}")
        body, more = b"", True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max:
                return await _error(send, 413, f"body is over the limit of {self.max:,} bytes")
        header_len = headers.get("inference-header-content-length")
        if header_len is not None:
            try:
                if not header_len.isdigit() or int(header_len) > len(body):
                    raise BadRequest("Inference-Header-Content-Length is not a length within the body")
                body = binary_to_json(body, int(header_len))
            except BadRequest as exc:
                return await _error(send, exc.status, str(exc))
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"]
                                         if k.lower() not in (b"content-length", b"inference-header-content-length",
                                                              b"content-type")]
                         + [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())])
        elif "content-type" not in headers:  # tritonclient sends JSON bodies without a Content-Type
            scope = dict(scope, headers=[*scope["headers"], (b"content-type", b"application/json")])
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


async def _error(send, status: int, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class _Usage:
    """Per-key counters kept in memory and added to the registry every second (and at shutdown)."""

    def __init__(self, db_url: str | None) -> None:
        self.db_url, self.pending, self.lock = db_url, {}, threading.Lock()

    def add(self, key_id: int, predictions: int, ms: float) -> None:
        with self.lock:
            r, p, m = self.pending.get(key_id, (0, 0, 0.0))
            self.pending[key_id] = (r + 1, p + predictions, m + ms)

    def flush(self) -> None:
        from modelyard.store.keys import add_usage

        with self.lock:
            pending, self.pending = self.pending, {}
        for key_id, (r, p, m) in pending.items():
            add_usage(key_id, requests=r, predictions=p, compute_ms=m, url=self.db_url)


def create_app(cfg: ServerConfig) -> FastAPI:
    """The server for one model. Loads it now, so a bad MODEL fails before the port opens."""
    from modelyard.artifact import load
    from modelyard.store.models import resolve

    run_path, record = resolve(cfg.model, url=cfg.db_url)
    model = load(run_path)
    name = cfg.name or (record["name"] if record else model.name)
    version = str(record["version"]) if record else "1"
    pre = model.preprocessor
    is_lm = not hasattr(model, "predict_proba")
    metrics = ServerMetrics()
    usage = _Usage(cfg.db_url)
    batcher = None if is_lm else Batcher(model.proba_of, max_batch_size=cfg.max_batch_size,
                                         max_wait_ms=cfg.max_wait_ms, on_batch=metrics.batch_size.observe)
    generate_lock = threading.Lock()
    key_cache: dict[str, tuple[float, dict | None]] = {}

    @asynccontextmanager
    async def lifespan(app):
        stop = asyncio.Event()

        async def flusher():
            while not stop.is_set():
                await asyncio.sleep(1.0)
                await asyncio.to_thread(usage.flush)

        if batcher:
            batcher.start()
        task = asyncio.get_running_loop().create_task(flusher())
        yield
        stop.set()
        task.cancel()
        await asyncio.to_thread(usage.flush)
        if batcher:
            await batcher.stop()

    app = FastAPI(title="modelyard inference server", version="1", lifespan=lifespan,
                  description=f"Serves model {name!r} (version {version}) over the Open Inference Protocol "
                              "(KServe v2) and a v1 JSON API. Authenticate with `Authorization: Bearer KEY`.")

    async def api_key(request: Request) -> dict | None:
        if not cfg.auth:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        record_ = None
        if scheme.lower() == "bearer" and key:
            hit = key_cache.get(key)
            if hit and hit[0] > time.monotonic():  # a revoked key stops working within 10 s
                record_ = hit[1]
            else:
                from modelyard.store.keys import verify_key

                record_ = await asyncio.to_thread(verify_key, key.strip(), url=cfg.db_url)
                if len(key_cache) > 10_000:  # random keys from a client must not grow it without bound
                    key_cache.clear()
                key_cache[key] = (time.monotonic() + 10.0, record_)
        if record_ is None:
            metrics.auth_failures.inc()
            raise BadRequest("missing or invalid API key: send `Authorization: Bearer KEY` "
                             "(create one with `modelyard keys create --name CLIENT`)", status=401)
        return record_

    def check_name(model_name: str) -> None:
        if model_name != name:
            raise BadRequest(f"unknown model {model_name!r}; this server serves {name!r}", status=404)

    async def predict_items(x, n: int, key: dict | None) -> np.ndarray:
        t = await asyncio.to_thread(model.transform, x)
        prob, ms = await batcher.submit(t, n)
        if key:
            usage.add(key["id"], n, ms)
        return prob

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(ModelyardError)
    async def user_error(request: Request, exc: ModelyardError):  # e.g. a table row missing a column
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        hint = ("" if "json" in request.headers.get("content-type", "")
                else " (send the body as JSON with Content-Type: application/json)")
        return JSONResponse({"error": f"the body does not match the schema: {problems}{hint}"}, status_code=422)

    @app.get("/v2/health/live", tags=["health"])
    def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"])
    def ready() -> dict:
        return {"ready": True}

    @app.get("/v2", tags=["v2"])
    def server_metadata() -> dict:
        from modelyard import __version__

        return {"name": "modelyard", "version": __version__, "extensions": ["binary_tensor_data"]}

    meta_outputs = ([TensorSpec(name="text_output", datatype="BYTES", shape=[1])] if is_lm else
                    [TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(model.labels)]),
                     TensorSpec(name="label", datatype="BYTES", shape=[-1])])

    @app.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=ERRORS, tags=["v2"])
    async def model_metadata(model_name: str, key=Depends(api_key)) -> ModelMetadata:
        check_name(model_name)
        params = {"task": model.meta.get("task", "classification"), "kind": pre.kind}
        if not is_lm:
            params["labels"] = model.labels
        return ModelMetadata(name=name, versions=[version], platform="modelyard", inputs=input_specs(pre),
                             outputs=meta_outputs, parameters=params)

    @app.get("/v2/models/{model_name}/ready", responses=ERRORS, tags=["v2"])
    async def model_ready(model_name: str, key=Depends(api_key)) -> dict:
        check_name(model_name)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{model_name}/infer", response_model=InferResponse, responses=ERRORS, tags=["v2"])
    async def infer(model_name: str, body: InferRequest, key=Depends(api_key)) -> InferResponse:
        check_name(model_name)
        if is_lm:
            prompts, _ = decode_v2(body, pre, cfg.max_items)
            with_lock = lambda: _locked(generate_lock, model.complete, prompts[0])  # noqa: E731
            text = await asyncio.to_thread(with_lock)
            return InferResponse(model_name=name, model_version=version, id=body.id,
                                 outputs=[TensorOut(name="text_output", shape=[1], datatype="BYTES", data=[text])])
        wanted = {o.name for o in body.outputs or []}
        if wanted - {"probabilities", "label"}:
            raise BadRequest(f"unknown output(s) {sorted(wanted - {'probabilities', 'label'})}; "
                             "this model has probabilities and label")
        x, n = decode_v2(body, pre, cfg.max_items)
        prob = await predict_items(x, n, key)
        labels = [model.labels[i] for i in prob.argmax(axis=1)]
        outputs = [{"name": "probabilities", "shape": list(prob.shape), "datatype": "FP32",
                    "data": prob.astype(np.float32).reshape(-1).tolist()},
                   {"name": "label", "shape": [n], "datatype": "BYTES", "data": labels}]
        # A plain JSONResponse: InferResponse documents it; validating it again would cost every request.
        return JSONResponse({"model_name": name, "model_version": version, "id": body.id,
                             "outputs": [o for o in outputs if not wanted or o["name"] in wanted]})

    @app.post("/v1/models/{model_name}/predict", response_model=PredictResponse, responses=ERRORS, tags=["v1"])
    async def predict(model_name: str, body: PredictRequest, key=Depends(api_key)) -> PredictResponse:
        """Labels with probabilities for texts, base64 images, table rows or numeric arrays."""
        check_name(model_name)
        if is_lm:
            raise BadRequest(f"{name} is a language model: POST /v1/models/{name}/generate")
        x, n = decode_v1(body, pre, cfg.max_items)
        prob = await predict_items(x, n, key)
        return JSONResponse({"model": name, "predictions": [
            {"label": model.labels[int(p.argmax())], "confidence": float(p.max()),
             "probabilities": {lab: float(v) for lab, v in zip(model.labels, p)}} for p in prob]})

    @app.post("/v1/models/{model_name}/generate", responses={**ERRORS, 200: {"content": {"text/plain": {}},
                                                                           "description": "Streamed text."}},
              response_class=StreamingResponse, tags=["v1"])
    async def generate(model_name: str, body: GenerateRequest, key=Depends(api_key)):
        """Continue a prompt, streaming the text as it is sampled (language models)."""
        check_name(model_name)
        if not is_lm:
            raise BadRequest(f"{name} is a classifier: POST /v1/models/{name}/predict")
        pieces = model.generate(body.prompt, max_new_tokens=body.max_new_tokens, temperature=body.temperature,
                                top_k=body.top_k, seed=body.seed)
        t0 = time.perf_counter()

        def stream():
            count = 0
            with generate_lock:  # one generation at a time: the model's cache is not shared
                for piece in pieces:
                    count += 1
                    yield piece
            if key:
                usage.add(key["id"], count, (time.perf_counter() - t0) * 1000)

        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus text format: requests by status, latency, batch sizes, queue depth."""
        if batcher:
            metrics.queue_depth.set(batcher.depth)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    app.add_middleware(_Limits, max_body_bytes=cfg.max_body_bytes)
    app.add_middleware(metrics.middleware_class())
    app.state.model_name, app.state.config = name, cfg
    return app


def _locked(lock: threading.Lock, fn, *args):
    with lock:
        return fn(*args)


def app_from_env() -> FastAPI:
    """For `uvicorn --factory` with several workers: the config travels in MODELYARD_SERVE_CONFIG."""
    return create_app(ServerConfig(**json.loads(os.environ[ENV_CONFIG])))


def serve(cfg: ServerConfig, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    import uvicorn

    app = create_app(cfg)  # fail here, with a clear message, before any worker starts
    common = dict(host=host, port=port, timeout_graceful_shutdown=30, access_log=False, log_level="warning")
    if workers == 1:
        uvicorn.run(app, **common)
    else:
        del app
        os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
        uvicorn.run("modelyard.serving.app:app_from_env", factory=True, workers=workers, **common)

