"""`POST /v1/models/{name}/explain`: which pixels, tokens or columns moved the model's predictions
(`modelyard.explain`), over HTTP.

One explanation costs many forward passes (Integrated Gradients: one per step per input, and a backward pass each),
so this route has limits of its own, all checked before any model runs:

- at most `explain_max_instances` inputs (default 4) and `explain_max_body_bytes` of body (default 1 MiB) per
  request: 413 naming the `serve` option that raises them;
- at most `explain_concurrency` explanations at a time per server process (default 1): when every slot is taken
  the answer is 503 with Retry-After at once, never a queue that grows;
- `explain_timeout_s` per request (default 60 s): past it, 504. The computation itself is stopped at its next
  forward pass, so a slot is not held long after its client was answered.

Each slot explains on a copy of the model of its own, loaded from the served model's folder on first use:
Captum's layer methods hook the model's layers while they run, and a prediction passing through the served model
at that moment would go through those hooks. After a failed explanation the copy is dropped (hooks may be left on
it) and loaded again. Inputs are read as `predict` reads them (the same codecs); a client's string is never read
as a path, as `modelyard.explain.explain` would for texts.

Metered apart from predictions: the usage store counts inputs explained (`usage.explanations`), Prometheus counts
them in `modelyard_explanations_total{method}` and refusals in `modelyard_explain_refused_total{reason}`; each
explained input counts against the key's monthly quota like a prediction (its answer holds the prediction).
"""

import asyncio
import base64
import difflib
import io
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from modelyard.errors import ModelyardError
from modelyard.serving.auth import api_key
from modelyard.serving.codecs import V1_FIELDS, decode_v1
from modelyard.serving.context import Served
from modelyard.serving.errors import ERRORS, AsciiJSONResponse
from modelyard.serving.protocol import BadRequest, ErrorResponse, PredictRequest

PATH = "/v1/models/{model_name}/explain"
# Options whose cost a running explanation cannot be stopped in (its timeout acts at forward passes): a method
# may take larger values from a user who waits for them, a server shared by clients takes at most these.
_IN_ONE_PASS = "it sets how many inputs go through the model at once, and with it the memory one request takes"
SERVER_CAPS = {
    # Captum computes Integrated Gradients' Gauss-Legendre steps before its first forward pass, in time that grows
    # faster than n_steps squared (0.6 s for 1,000 steps, minutes for 10,000 on a 2-core CPU).
    "n_steps": (1000, "Integrated Gradients prepares its steps before the model runs, in time that grows faster "
                      "than n_steps squared"),
    "internal_batch_size": (512, _IN_ONE_PASS),
    "batch_size": (512, _IN_ONE_PASS),
}
_PATH_RE = re.compile(r"/v1/models/[^/]+/explain")


# ---------------------------------------------------------------- request and response bodies

ParamValue = (bool | int | float | Annotated[str, Field(max_length=200)]
              | Annotated[list[int | float | str], Field(max_length=64)] | None)


class ExplainRequest(PredictRequest):
    """The inputs, encoded as for `predict` (exactly one of texts, images, rows, inputs), and how to explain them."""

    model_config = ConfigDict(extra="forbid")

    method: str | None = Field(None, min_length=1, max_length=64, description=(
        "An explanation method (integrated-gradients, saliency, grad-cam, occlusion, linear, kernel-shap, ...); "
        "default: the best one for this model. One that does not apply to the model is a 422 listing those "
        "that do."))
    target: str | None = Field(None, min_length=1, max_length=200, description=(
        "Explain this label for every input; default: each input's predicted label."))
    parameters: dict[str, ParamValue] | None = Field(None, max_length=16, description=(
        "The method's options (n_steps, internal_batch_size, window, max_evals, ...); an option the method does "
        "not take is a 422 naming the ones it does."))


class ExplainedInput(BaseModel):
    id: str = Field(description="The input's place in the request, counted from 1.")
    predicted: str = Field(description="The model's predicted label.")
    target: str = Field(description="The label explained.")
    probability: float = Field(description="The model's probability of `target`.")
    quality: dict[str, float | None] = Field(description=(
        "The method's own quality figures, e.g. Integrated Gradients' convergence_delta and relative_delta "
        "(attributions sum to f(x) - f(baseline) within it; over 0.05 adds a note)."))
    shape: list[int] = Field(description=(
        "The attributions' shape: (H, W) per pixel of an image, (L,) per position of a sequence, (T,) per token "
        "of a text, (F,) per column of a table row."))
    units: list[str] | None = Field(description=(
        "What each attribution belongs to: the tokens of a text, the columns of a row; null for pixels and "
        "sequence positions."))
    attributions: list[float | None] = Field(description=(
        "Flattened in row-major order (`shape` gives the layout); positive values pushed the model towards "
        "`target`. Null where the method gave no finite number."))


class ExplainResponse(BaseModel):
    model: str
    method: str = Field(description="The method that ran (the default one when the request named none).")
    kind: str = Field(description="The kind of input: image, sequence, text or tabular.")
    settings: dict[str, Any] = Field(description="What the method ran with: steps, baseline, caps.")
    notes: list[str] = Field(description="Warnings about the figures (e.g. Integrated Gradients did not converge).")
    items: list[ExplainedInput]


RESPONSE_EXAMPLE = {  # a text model's answer: short enough to show whole
    "model": "tickets", "method": "integrated-gradients", "kind": "text",
    "settings": {"n_steps": 50, "baseline": "the tokeniser's mask token [MASK]"}, "notes": [],
    "items": [{"id": "1", "predicted": "printing", "target": "printing", "probability": 0.91,
               "quality": {"convergence_delta": 0.0021, "relative_delta": 0.0024}, "shape": [5],
               "units": ["the", "printer", "will", "not", "print"], "attributions": [0.01, 0.62, 0.02, 0.05, 0.21]}],
}


def _responses() -> dict:
    return {**ERRORS,
            200: {"content": {"application/json": {"example": RESPONSE_EXAMPLE}}},
            413: {"model": ErrorResponse, "description": "More inputs or a larger body than this server takes for "
                                                         "one explanation; the message names the option that "
                                                         "raises the limit."},
            422: {"model": ErrorResponse, "description": "The body does not match the schema, or the method, "
                                                         "target, options or inputs do not fit the model (the "
                                                         "message says which, and what would)."},
            503: {"model": ErrorResponse, "description": "Every explanation slot of this server process is taken; "
                                                         "retry after the Retry-After header's seconds."},
            504: {"model": ErrorResponse, "description": "The explanation ran past this server's time limit."}}


def _examples(served: Served) -> dict:
    """A request the served model can take, per kind of input (shown in /docs, tried by `Try it out`)."""
    pre = served.pre
    kind = pre.kind
    if served.lm:  # answered 400: explanations are for classifiers
        return {"default": {"summary": "a language model takes no explanation request", "value": {"texts": ["hi"]}}}
    labels = served.model.labels
    if kind == "image":
        from PIL import Image

        buf = io.BytesIO()
        Image.new("L" if pre.channels == 1 else "RGB", tuple(reversed(pre.size))).save(buf, format="PNG")
        instances = {"images": [base64.b64encode(buf.getvalue()).decode()]}
    elif kind == "sequence":
        instances = {"inputs": [[0.0] * pre.length]}
    elif kind == "tabular":
        row = {c: round(float(st["mean"]), 4) for c, st in pre.numeric.items()}
        row.update({c: st["fill"] for c, st in pre.categorical.items()})
        instances = {"rows": [row]}
    else:
        instances = {"texts": ["the printer on the third floor will not print"]}
    return {"default": {"summary": "the model's default method, each input's predicted label",
                        "value": instances},
            "target": {"summary": f"why (or why not) label {labels[0]!r}", "value": {**instances,
                                                                                    "target": labels[0]}}}


# ---------------------------------------------------------------- running explanations off the event loop


class Overtime(Exception):
    """Raised in an explanation's thread at its next forward pass once its time is up (or its client left)."""


@dataclass
class Job:
    method: str
    impl: Any  # base.Impl
    options: Any  # the method's validated params
    raw: Any
    ids: list[str]
    x: Any  # preprocessed by the served model's preprocessor
    target: str | None


class Slot:
    """One explanation at a time, on a copy of the model of its own, stopped at a forward pass past `deadline`."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir, self.subject, self.deadline = model_dir, None, math.inf

    def check(self, *_) -> None:
        if time.monotonic() > self.deadline:
            raise Overtime()

    def run(self, job: Job) -> tuple[dict, float]:
        """(the explanation as plain JSON, its compute milliseconds)."""
        t0 = time.perf_counter()
        try:
            subject = self.subject or self._load()
            return _plain(_explain(subject, job).to_json()), (time.perf_counter() - t0) * 1000
        except BaseException:
            self.subject = None  # a method stopped midway may leave its hooks on the copy
            raise

    def _load(self):
        from modelyard.artifact import load
        from modelyard.explain.base import Subject

        subject = Subject(load(self.model_dir))
        module = subject.module
        if module is not None:  # gradient methods call the module (or, for hf, its children) directly
            for m in (module, *module.children()):
                m.register_forward_pre_hook(self.check)
        predictor = subject.predictor
        proba_of = predictor.proba_of

        def checked_proba_of(x, **kwargs):  # forward-only methods and every family without a torch module
            self.check()
            return proba_of(x, **kwargs)

        predictor.proba_of = checked_proba_of  # on this private copy only
        self.subject = subject
        return subject


def _explain(subject, job: Job):
    from modelyard.explain.base import run_method

    return run_method(subject, job.method, job.impl, job.options, job.raw, job.ids, target=job.target, x=job.x)


class Explainer:
    """At most `slots` explanations at a time, each in a thread of its own; refuses (503) rather than queues."""

    def __init__(self, model_dir: Path, *, slots: int, timeout_s: float) -> None:
        self.free = [Slot(model_dir) for _ in range(slots)]
        self.slots, self.timeout_s = slots, timeout_s
        self.executor: ThreadPoolExecutor | None = None
        self.last_s = 1.0  # the last explanation's duration: what Retry-After says when busy

    async def run(self, job: Job, refusals) -> tuple[dict, float]:
        """(the explanation as plain JSON, its compute ms); `refusals(reason)` is the counter of refusals."""
        if not self.free:
            refusals("busy").inc()
            wait = max(1, math.ceil(min(self.last_s, self.timeout_s)))
            raise HTTPException(503, f"this server is explaining as many requests as it takes at once ({self.slots}; "
                                     f"each costs many forward passes); retry in {wait} s",
                                headers={"Retry-After": str(wait)})
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="modelyard-explain")
        slot = self.free.pop()
        slot.deadline = time.monotonic() + self.timeout_s
        t0 = time.monotonic()
        future = asyncio.get_running_loop().run_in_executor(self.executor, slot.run, job)

        def done(f) -> None:  # the slot is free once its thread is, not when the client stops waiting
            self.free.append(slot)
            self.last_s = time.monotonic() - t0
            if not f.cancelled():
                f.exception()  # a failure after its client was answered (504) or left: nothing more to say

        future.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except (asyncio.TimeoutError, Overtime):
            refusals("timeout").inc()
            raise BadRequest(f"the explanation ran past this server's limit of {self.timeout_s:g} s; explain fewer "
                             "inputs, ask for fewer steps (parameters such as n_steps), or raise the limit with "
                             "`modelyard serve --explain-timeout-s`", 504) from None
        finally:
            if not future.done():
                slot.deadline = -math.inf  # stopped at its next forward pass


# ---------------------------------------------------------------- the route


def body_cap(cfg):
    """`BodyLimits`'s tighter cap for the explain route: (bytes, the hint its 413 ends with)."""
    if cfg.explain_max_body_bytes < cfg.max_body_bytes:
        cap = (cfg.explain_max_body_bytes, " for an explanation (each costs many forward passes); raise it with "
                                           "`modelyard serve --explain-max-body-mb`")
    else:
        cap = (cfg.max_body_bytes, "; raise it with `modelyard serve --max-body-mb`")
    return lambda path: cap if _PATH_RE.fullmatch(path) else None


def router(served: Served, cfg) -> APIRouter:
    # (No `from __future__ import annotations` in this module: FastAPI reads the route's Annotated body, whose
    # examples are this model's, from the live annotation.)
    r = APIRouter()
    cap, name = cfg.explain_max_instances, served.name
    explainer = Explainer(served.model.model_dir, slots=cfg.explain_concurrency, timeout_s=cfg.explain_timeout_s)
    body_bytes = min(cfg.explain_max_body_bytes, cfg.max_body_bytes)
    description = (
        "Attributions for each input: which pixels, tokens or table columns moved the model towards the target "
        "label, with the method's quality figures, the prediction and the target's probability. Inputs are "
        "encoded as for `predict`.\n\n"
        "**Slow and limited**: one explanation costs many forward passes (Integrated Gradients: one per step and "
        f"input, with a backward pass each). This server takes at most {cap} inputs and {body_bytes:,} bytes of "
        "body per request (413 past them; `modelyard serve --explain-max-instances N` and "
        f"`--explain-max-body-mb MB` raise them), runs {cfg.explain_concurrency} explanation(s) at a time per "
        "server process (503 with Retry-After when all are taken: there is no queue), and stops one after "
        f"{cfg.explain_timeout_s:g} s (504). Usage counts inputs explained apart from predictions; each counts "
        "against the key's monthly quota like a prediction.")

    @r.post(PATH, response_model=ExplainResponse, responses=_responses(), tags=["v1"],
            summary="Explain predictions (slow: many forward passes each; limited per request)",
            description=description)
    async def explain(model_name: str, body: Annotated[ExplainRequest, Body(openapi_examples=_examples(served))],
                      key=Depends(api_key)):
        served.check_name(model_name)
        if served.lm:
            raise BadRequest(f"{name} is a language model; explanations are for classifiers", 400)
        n = max((len(getattr(body, f)) for f in V1_FIELDS if getattr(body, f) is not None), default=0)
        if n > cap:
            raise BadRequest(f"{n} inputs is more than this server's limit of {cap} per explanation (each costs "
                             "many forward passes); send fewer, or raise the limit with `modelyard serve "
                             "--explain-max-instances N`", 413)
        job = await asyncio.to_thread(_checked_job, served, body, cap)  # 422 before any model runs
        try:
            async with served.limiter.quota(key, n):  # 429 if the key's quota cannot cover n more
                answer, ms = await explainer.run(job, served.metrics.explain_refused.labels)
        except ModelyardError as exc:  # what only the method can see, e.g. an occlusion window larger than the input
            raise BadRequest(_for_http(str(exc), served), 422) from None
        served.metrics.explanations.labels(job.method).inc(n)
        if key:
            served.usage.add(key["id"], 0, ms, explanations=n)
        return AsciiJSONResponse(ExplainResponse(model=name, **answer).model_dump())

    return r


def _checked_job(served: Served, body: ExplainRequest, cap: int) -> Job:
    """The method, its options, the target and the inputs, checked against the model; every problem is a 422."""
    try:
        return _job(served, body, cap)
    except ModelyardError as exc:
        raise BadRequest(_for_http(str(exc), served), 422) from None
    except BadRequest as exc:  # an input that does not fit the model: the request is well-formed, its content not
        raise BadRequest(str(exc), 422 if exc.status == 400 else exc.status) from None


def _job(served: Served, body: ExplainRequest, cap: int) -> Job:
    from modelyard.explain.base import EXPLAINERS, Subject, check_method, check_params, methods_for, resolve_target

    import modelyard.explain  # noqa: F401  (registers the methods)

    subject = Subject(served.model)
    if body.method is not None and body.method not in EXPLAINERS:
        fits = methods_for(subject)
        close = difflib.get_close_matches(body.method, fits, n=1)
        raise BadRequest(f"unknown explanation method {body.method!r}.{f' Did you mean {close[0]!r}?' if close else ''}"
                         f" Methods for this model: {', '.join(fits) or 'none'}", 422)
    method, impl = check_method(subject, body.method)
    for option, (most, why) in SERVER_CAPS.items():
        given = (body.parameters or {}).get(option)
        if isinstance(given, (int, float)) and not isinstance(given, bool) and given > most:
            raise BadRequest(f"parameters.{option} is at most {most:,} on this server: {why}", 422)
    options = check_params(method, impl, body.parameters or {})
    resolve_target(body.target, subject.labels, np.zeros((1, len(subject.labels))))  # an unknown label fails here
    raw, n = decode_v1(body, served.pre, cap)
    if served.pre.kind == "text":
        empty = [i + 1 for i, t in enumerate(raw) if not t.strip()]
        if empty:
            raise BadRequest(f"texts[{empty[0] - 1}] is empty, and an empty text has no tokens to explain; send "
                             "the text, or leave it out", 422)
    x = served._transform(raw)  # a shape or value the preprocessor refuses: 400, answered here as 422
    return Job(method, impl, options, raw, [str(i + 1) for i in range(n)], x, body.target)


def _for_http(message: str, served: Served) -> str:
    """A message written for the CLI, with its option names as this route's fields and the model named as the
    client knows it (not by its folder on the server)."""
    message = message.replace(str(served.model.model_dir), f"model {served.name!r}")
    return message.replace("--method ", "method ").replace("--target ", "target ")


def _plain(value):
    """JSON values only: numpy scalars and arrays as numbers and lists, non-finite numbers as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)
