"""Request and response bodies: the Open Inference Protocol (KServe v2) and the friendlier v1 JSON API.

Each model kind declares its v2 inputs (`input_specs`); `decode_v2` checks a request against them and turns it
into the raw inputs `Predictor.transform` reads. Errors are `BadRequest`s saying what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

NUMERIC = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT8": np.int8, "INT16": np.int16,
           "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
           "UINT64": np.uint64, "BOOL": np.bool_}


class BadRequest(Exception):
    """A request the server understood but cannot accept: answered with a 4xx and this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


FP32_MAX = float(np.finfo(np.float32).max)


def check_text(value: str, where: str) -> str:
    """A string that can be encoded as UTF-8 (JSON lets a client send a lone surrogate such as "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{where} is not valid Unicode (it holds a lone surrogate such as \\ud800); "
                         "send UTF-8 text") from None
    return value


def as_float32(values, where: str) -> np.ndarray:
    """Numbers -> float32, refusing what float32 cannot hold (NaN, infinities, |x| > 3.4e38)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer too large even for float64
        raise BadRequest(f"{where}: a value is too large; values must be within FP32 range "
                         f"(|x| <= {FP32_MAX:.3g})") from None
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        bad = arr.reshape(-1)[~np.isfinite(out.reshape(-1))][0]
        raise BadRequest(f"{where}: values must be finite numbers within FP32 range (|x| <= {FP32_MAX:.3g}); "
                         f"got {bad:g}")
    return out


# ---------------------------------------------------------------- v2 bodies


class TensorIn(BaseModel):
    name: str = Field(..., max_length=200)
    shape: list[int] = Field(..., max_length=8)
    datatype: str = Field(..., max_length=16)
    data: list[Any] = Field(default_factory=list)
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: str = Field(..., max_length=200)
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = Field(None, max_length=200)
    inputs: list[TensorIn] = Field(..., min_length=1, max_length=256)
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[TensorOut]


class TensorSpec(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: str


# ---------------------------------------------------------------- v1 bodies


class PredictRequest(BaseModel):
    """Exactly one of: texts (text models), images (base64-encoded files, image models), rows (table models),
    inputs (numeric arrays in the training data's units: images (H, W[, C]) or sequences (L,))."""

    texts: list[str] | None = Field(None, max_length=100_000)
    images: list[str] | None = Field(None, max_length=100_000)
    rows: list[dict[str, str | float | int | bool | None]] | None = Field(None, max_length=100_000)
    inputs: list[Any] | None = Field(None, max_length=100_000)


class Prediction(BaseModel):
    label: str
    confidence: float
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class GenerateRequest(BaseModel):
    prompt: str = Field(..., min_length=1, max_length=20_000)
    max_new_tokens: int = Field(50, ge=1, le=2048)
    temperature: float = Field(0.8, ge=0.0, le=10.0)
    top_k: int | None = Field(50, ge=1, le=100_000)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


# ---------------------------------------------------------------- per-kind specs


def input_specs(pre) -> list[TensorSpec]:
    """The v2 inputs a model's preprocessor reads."""
    kind = pre.kind
    if kind == "text":
        return [TensorSpec(name="text", datatype="BYTES", shape=[-1])]
    if kind == "corpus":
        return [TensorSpec(name="prompt", datatype="BYTES", shape=[1])]
    if kind == "image":
        h, w = pre.size
        return [TensorSpec(name="input", datatype="FP32", shape=[-1, h, w] + ([3] if pre.channels == 3 else []))]
    if kind == "sequence":
        return [TensorSpec(name="input", datatype="FP32", shape=[-1, pre.length])]
    if kind == "tabular":
        return ([TensorSpec(name=c, datatype="FP32", shape=[-1]) for c in pre.numeric]
                + [TensorSpec(name=c, datatype="BYTES", shape=[-1]) for c in pre.categorical])
    raise ValueError(f"no v2 inputs for data kind {kind}")


def _flatten(data: list) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def tensor_values(t: TensorIn, spec: TensorSpec, max_items: int) -> np.ndarray:
    """The tensor's data as an array shaped `t.shape`, checked against the spec."""
    if any(d < 0 for d in t.shape):
        raise BadRequest(f"input {t.name!r}: shape {t.shape} has a negative dimension")
    if len(t.shape) != len(spec.shape) or any(s != -1 and s != d for s, d in zip(spec.shape, t.shape)):
        raise BadRequest(f"input {t.name!r}: shape {t.shape} does not fit {spec.shape} (-1: any size)")
    if 0 in t.shape:
        raise BadRequest(f"input {t.name!r}: shape {t.shape} holds no items; send at least one")
    if t.shape and t.shape[0] > max_items:
        raise BadRequest(f"input {t.name!r}: {t.shape[0]} items is more than this server's limit of {max_items} "
                         "per request; split the request", status=413)
    n = int(np.prod(t.shape)) if t.shape else 1
    flat = _flatten(t.data)
    if len(flat) != n:
        raise BadRequest(f"input {t.name!r}: shape {t.shape} needs {n} values, got {len(flat)}")
    if spec.datatype == "BYTES":
        if t.datatype != "BYTES":
            raise BadRequest(f"input {t.name!r}: datatype must be BYTES, got {t.datatype}")
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"input {t.name!r}: BYTES data must be strings")
        for i, v in enumerate(flat):
            check_text(v, f"input {t.name!r} element {i}")
        return np.array(flat, dtype=object).reshape(t.shape)
    if t.datatype not in NUMERIC or t.datatype == "BOOL":
        raise BadRequest(f"input {t.name!r}: datatype must be numeric (FP32, FP64, INT32, ...), got {t.datatype}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise BadRequest(f"input {t.name!r}: {t.datatype} data must be finite numbers")
    return as_float32(flat, f"input {t.name!r}").reshape(t.shape)


def decode_v2(req: InferRequest, pre, max_items: int):
    """A v2 request -> (raw inputs for `Predictor.transform`, number of items)."""
    specs = {s.name: s for s in input_specs(pre)}
    given = {t.name: t for t in req.inputs}
    unknown = sorted(set(given) - set(specs))
    missing = sorted(set(specs) - set(given))
    if unknown or missing:
        raise BadRequest(f"inputs must be {sorted(specs)}" + (f"; unknown: {unknown}" if unknown else "")
                         + (f"; missing: {missing}" if missing else ""))
    arrays = {name: tensor_values(given[name], spec, max_items) for name, spec in specs.items()}
    if pre.kind == "text":
        texts = [str(v) for v in arrays["text"].reshape(-1)]
        return texts, len(texts)
    if pre.kind == "corpus":
        return [str(arrays["prompt"].reshape(-1)[0])], 1
    if pre.kind == "tabular":
        sizes = {len(a) for a in arrays.values()}
        if len(sizes) != 1:
            raise BadRequest(f"every column input needs the same number of rows; got {sorted(sizes)}")
        return pd.DataFrame({k: list(v) for k, v in arrays.items()}), sizes.pop()
    x = arrays["input"]
    return x, len(x)


def decode_v1(req: PredictRequest, pre, max_items: int):
    """A v1 predict request -> (raw inputs for `Predictor.transform`, number of items)."""
    given = {k: v for k, v in (("texts", req.texts), ("images", req.images), ("rows", req.rows),
                               ("inputs", req.inputs)) if v is not None}
    allowed = {"text": "texts", "image": "images or inputs", "tabular": "rows", "sequence": "inputs"}[pre.kind]
    if len(given) != 1 or next(iter(given)) not in allowed.split(" or "):
        raise BadRequest(f"this {pre.kind} model takes exactly one of: {allowed}")
    field, items = next(iter(given.items()))
    if not items:
        raise BadRequest(f"{field} is empty")
    if len(items) > max_items:
        raise BadRequest(f"{len(items)} items is more than this server's limit of {max_items} per request", 413)
    if field == "texts":
        return [check_text(v, f"texts[{i}]") for i, v in enumerate(items)], len(items)
    if field == "rows":
        for i, row in enumerate(items):
            for k, v in row.items():
                check_text(k, f"rows[{i}] column name")
                if isinstance(v, str):
                    check_text(v, f"rows[{i}][{k!r}]")
        return pd.DataFrame(items), len(items)
    if field == "images":
        return [decode_image(s, i) for i, s in enumerate(items)], len(items)
    try:
        arr = as_float32(items, "inputs")
    except (ValueError, TypeError):
        raise BadRequest("inputs must be equally shaped arrays of numbers") from None
    want = {"image": "(N, H, W) or (N, H, W, C)", "sequence": f"(N, {getattr(pre, 'length', 'L')})"}[pre.kind]
    if arr.ndim not in ((3, 4) if pre.kind == "image" else (2,)) or 0 in arr.shape:
        raise BadRequest(f"inputs are shaped {arr.shape}; this {pre.kind} model takes arrays shaped {want}, "
                         "every dimension at least 1")
    return arr, len(arr)


def decode_image(b64: str, index: int):
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(b64, validate=True)
        im = Image.open(io.BytesIO(raw))
        im.load()
        return im
    except (binascii.Error, ValueError):
        raise BadRequest(f"images[{index}] is not valid base64") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"images[{index}] is not an image Pillow can read ({exc.__class__.__name__})") from None


def header_length(value: str, body_length: int) -> int:
    """The Inference-Header-Content-Length of a binary-extension request, checked against the body."""
    if not (value.isascii() and value.isdigit()) or int(value) > body_length:
        raise BadRequest(f"Inference-Header-Content-Length {value[:40]!r} is not a length within the body "
                         f"of {body_length} bytes: send the byte length of the JSON header that starts the body")
    return int(value)


def binary_to_json(body: bytes, header_length: int) -> bytes:
    """The v2 binary-data extension (tritonclient's default): a JSON header followed by raw tensors. Returns the
    same request with every tensor's data written into its JSON, so one typed endpoint reads both forms."""
    try:
        head = json.loads(body[:header_length])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the Inference-Header-Content-Length header does not point at a JSON header") from None
    if not isinstance(head, dict) or not isinstance(head.get("inputs"), list):
        raise BadRequest("the binary request's JSON header has no inputs list")
    offset = header_length
    for t in head["inputs"]:
        if not isinstance(t, dict):
            raise BadRequest("each input of the binary request's JSON header must be an object")
        params = t.get("parameters")
        if not isinstance(params, dict) or "binary_data_size" not in params:
            continue
        size = params.pop("binary_data_size")
        name = str(t.get("name"))[:200]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(body):
            raise BadRequest(f"input {name!r}: binary_data_size does not fit the body")
        t["data"] = _binary_values(body[offset:offset + size], t.get("datatype"), name)
        offset += size
    for o in head.get("outputs") if isinstance(head.get("outputs"), list) else []:
        if isinstance(o, dict) and isinstance(o.get("parameters"), dict):  # answers are always JSON
            o["parameters"].pop("binary_data", None)
    if isinstance(head.get("parameters"), dict):
        head["parameters"].pop("binary_data_output", None)
    return json.dumps(head).encode()


def _binary_values(chunk: bytes, dtype, name: str) -> list:
    if dtype == "BYTES":
        values, i = [], 0
        while i < len(chunk):
            n = int.from_bytes(chunk[i:i + 4], "little")
            if i + 4 + n > len(chunk):
                raise BadRequest(f"input {name!r}: truncated BYTES element")
            values.append(chunk[i + 4:i + 4 + n].decode("utf-8", errors="replace"))
            i += 4 + n
        return values
    if dtype not in NUMERIC:
        raise BadRequest(f"input {name!r}: unknown datatype {str(dtype)[:40]!r}")
    item = np.dtype(NUMERIC[dtype]).newbyteorder("<")
    if len(chunk) % item.itemsize:
        raise BadRequest(f"input {name!r}: {len(chunk)} bytes is not a whole number of {dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.frombuffer(chunk, dtype=item).astype(float)
    # JSON has no NaN or infinity: write them as null, which the typed endpoint refuses with a clear message.
    return [v if np.isfinite(v) else None for v in values.tolist()]
