"""Request and response bodies: the Open Inference Protocol (KServe v2) and the friendlier v1 JSON API, and the
v2 wire format of tensors (JSON, or the binary tensor data extension, both ways).

What a tensor means for a given model is its codec's business (`codecs`); here a tensor is only checked against
the spec of the input it claims to be. Errors are `BadRequest`s saying what was wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

NUMERIC = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT8": np.int8, "INT16": np.int16,
           "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
           "UINT64": np.uint64, "BOOL": np.bool_}
FLOATS = ("FP32", "FP16", "FP64")  # what an FP32 input accepts: converted by value, range checked
SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


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
    outputs: list[RequestedOutput] | None = Field(None, max_length=256)
    parameters: dict[str, Any] | None = None


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | SkipJsonSchema[None] = Field(None, description="Absent when the tensor is sent as binary.")
    parameters: dict[str, Any] | SkipJsonSchema[None] = Field(
        None, description="`binary_data_size`: the tensor's bytes follow the JSON header, in output order.")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | SkipJsonSchema[None] = Field(None, description="The request's id; absent when it had none.")
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


class ConfigTensor(BaseModel):
    name: str
    data_type: str
    dims: list[int]
    reshape: dict[str, list[int]] | SkipJsonSchema[None] = None


class ModelConfig(BaseModel):
    """The model's configuration in Triton's terms (what `tritonclient`'s get_model_config reads)."""

    name: str
    platform: str
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]


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


# A language model's bounds, for v1 generate and v2 infer alike.
MAX_PROMPT_CHARS = 20_000
DEFAULT_NEW_TOKENS = 50  # also what a v2 infer generates: it has no field to ask for more


class GenerateRequest(BaseModel):
    prompt: str = Field(..., min_length=1, max_length=MAX_PROMPT_CHARS)
    max_new_tokens: int = Field(DEFAULT_NEW_TOKENS, ge=1, le=2048)
    temperature: float = Field(0.8, ge=0.0, le=10.0)
    top_k: int | None = Field(50, ge=1, le=100_000)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


# ---------------------------------------------------------------- v2 tensors


@dataclass(frozen=True)
class Tensor:
    """An output tensor, before it is written as JSON or binary."""

    name: str
    datatype: str
    array: np.ndarray


@dataclass(frozen=True)
class OutputRequest:
    """How the client wants one output: as binary data after the JSON header, or as classes (top K)."""

    binary: bool = False
    classification: int = 0


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


def _no_shared_memory(params: dict | None, where: str) -> None:
    if params and any(k in params for k in SHARED_MEMORY):
        raise BadRequest(f"{where}: shared memory is not supported by this server; send the tensor's data in the "
                         "request (JSON, or binary with the binary tensor data extension)")


def tensor_values(t: TensorIn, spec: TensorSpec, max_items: int) -> np.ndarray:
    """The tensor's data as an array shaped `t.shape`, checked against the spec of the model's input: FP32 inputs
    take floating-point tensors (converted by value, range checked), never integers silently cast."""
    _no_shared_memory(t.parameters, f"input {t.name!r}")
    if any(d < 0 for d in t.shape):
        raise BadRequest(f"input {t.name!r}: shape {t.shape} has a negative dimension")
    if len(t.shape) != len(spec.shape) or any(s != -1 and s != d for s, d in zip(spec.shape, t.shape)):
        raise BadRequest(f"input {t.name!r}: shape {t.shape} does not fit {spec.shape} (-1: any size)")
    if 0 in t.shape:
        raise BadRequest(f"input {t.name!r}: shape {t.shape} holds no items; send at least one")
    if t.shape and t.shape[0] > max_items:
        raise BadRequest(f"input {t.name!r}: {t.shape[0]} items is more than this server's limit of {max_items} "
                         "per request; split the request", status=413)
    if spec.datatype == "BYTES" and t.datatype != "BYTES":
        raise BadRequest(f"input {t.name!r}: datatype must be BYTES, got {t.datatype}")
    if spec.datatype != "BYTES" and t.datatype not in FLOATS:
        raise BadRequest(f"input {t.name!r} is {spec.datatype}: its datatype must be floating-point numeric "
                         f"({', '.join(FLOATS)}), got {t.datatype}; integers are not converted silently, send "
                         "them as FP32")
    n = int(np.prod(t.shape)) if t.shape else 1
    flat = _flatten(t.data)
    if len(flat) != n:
        raise BadRequest(f"input {t.name!r}: shape {t.shape} needs {n} values, got {len(flat)}")
    if spec.datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"input {t.name!r}: BYTES data must be strings")
        for i, v in enumerate(flat):
            check_text(v, f"input {t.name!r} element {i}")
        return np.array(flat, dtype=object).reshape(t.shape)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise BadRequest(f"input {t.name!r}: {t.datatype} data must be finite numbers")
    return as_float32(flat, f"input {t.name!r}").reshape(t.shape)


def output_requests(req: InferRequest, available: list[str], classifiable: tuple[str, ...] = ()
                    ) -> dict[str, OutputRequest]:
    """The outputs to answer, in order, and how: every output when the request names none, in binary when the
    request's `binary_data_output` (or the output's own `binary_data`) says so, as the top classes when the
    output's `classification` says so (for the `classifiable` outputs only). Checked before the model runs."""
    default = _flag(req.parameters, "binary_data_output", "the request's parameters", False)
    if not req.outputs:
        return {name: OutputRequest(binary=default) for name in available}
    names = [o.name for o in req.outputs]
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise BadRequest(f"unknown output(s) {unknown}; this model has {' and '.join(available)}")
    if len(set(names)) != len(names):
        raise BadRequest(f"outputs {names}: request each output once")
    wanted = {}
    for o in req.outputs:
        where = f"output {o.name!r}"
        _no_shared_memory(o.parameters, where)
        k = (o.parameters or {}).get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise BadRequest(f"{where}: classification is the number of classes to answer (0: off); got {k!r}")
        if k and o.name not in classifiable:
            raise BadRequest(f"{where}: classification applies to {' and '.join(classifiable) or 'no output'} "
                             "of this model")
        wanted[o.name] = OutputRequest(binary=_flag(o.parameters, "binary_data", where, default), classification=k)
    return wanted


def _flag(params: dict | None, name: str, where: str, default: bool) -> bool:
    value = (params or {}).get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: {name} must be true or false, got {str(value)[:40]!r}")
    return value


def encode_response(head: dict, tensors: list[Tensor], wanted: dict[str, OutputRequest]) -> tuple[bytes, int | None]:
    """An infer response: the JSON `head` with its outputs, then the binary tensors' bytes in output order.

    Returns:
        The body, and the length of its JSON header (None when every tensor is in the JSON: a plain JSON body).
    """
    outputs, chunks = [], []
    for t in tensors:
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.array.shape)}
        if wanted[t.name].binary:
            raw = tensor_bytes(t)
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = t.array.reshape(-1).tolist()
        outputs.append(out)
    body = json.dumps({**head, "outputs": outputs}, ensure_ascii=True, allow_nan=False,
                      separators=(",", ":")).encode()
    return (b"".join([body, *chunks]), len(body)) if chunks else (body, None)


def tensor_bytes(t: Tensor) -> bytes:
    """The binary extension's layout: little-endian values, row-major; BYTES as a 4-byte length, then UTF-8."""
    if t.datatype == "BYTES":
        parts = [str(v).encode("utf-8") for v in t.array.reshape(-1)]
        return b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    return np.ascontiguousarray(t.array, dtype=np.dtype(NUMERIC[t.datatype]).newbyteorder("<")).tobytes()


def model_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], max_items: int) -> ModelConfig:
    """Triton's view of the model: a batch dimension is `max_batch_size` rather than a -1 in each shape."""
    batched = all(s.shape and s.shape[0] == -1 for s in inputs + outputs)

    def tensor(s: TensorSpec) -> ConfigTensor:
        data_type = "TYPE_STRING" if s.datatype == "BYTES" else f"TYPE_{s.datatype}"
        dims = s.shape[1:] if batched else s.shape
        return ConfigTensor(name=s.name, data_type=data_type, dims=dims or [1],
                            reshape=None if dims else {"shape": []})

    return ModelConfig(name=name, platform="modelyard", max_batch_size=max_items if batched else 0,
                       input=[tensor(s) for s in inputs], output=[tensor(s) for s in outputs])


def header_length(value: str, body_length: int) -> int:
    """The Inference-Header-Content-Length of a binary-extension request, checked against the body."""
    if not (value.isascii() and value.isdigit()) or int(value) > body_length:
        raise BadRequest(f"Inference-Header-Content-Length {value[:40]!r} is not a length within the body "
                         f"of {body_length} bytes: send the byte length of the JSON header that starts the body")
    return int(value)


def binary_to_json(body: bytes, header_length: int) -> bytes:
    """The v2 binary-data extension (tritonclient's default): a JSON header followed by raw tensors. Returns the
    same request with every tensor's data written into its JSON, so one typed endpoint reads both forms. What the
    request asks of its outputs (`binary_data`, `binary_data_output`) stays for the route to answer."""
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
    return json.dumps(head).encode()


def _binary_values(chunk: bytes, dtype, name: str) -> list:
    if dtype == "BYTES":
        values, i = [], 0
        while i < len(chunk):
            n = int.from_bytes(chunk[i:i + 4], "little")
            if i + 4 + n > len(chunk):
                raise BadRequest(f"input {name!r}: truncated BYTES element")
            try:
                values.append(chunk[i + 4:i + 4 + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise BadRequest(f"input {name!r}: element {len(values)} is not UTF-8 text") from None
            i += 4 + n
        return values
    if not isinstance(dtype, str) or dtype not in NUMERIC:  # a list or object would not even hash
        raise BadRequest(f"input {name!r}: unknown datatype {str(dtype)[:40]!r}")
    item = np.dtype(NUMERIC[dtype]).newbyteorder("<")
    if len(chunk) % item.itemsize:
        raise BadRequest(f"input {name!r}: {len(chunk)} bytes is not a whole number of {dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.frombuffer(chunk, dtype=item).astype(float)
    # JSON has no NaN or infinity: write them as null, which the typed endpoint refuses with a clear message.
    return [v if np.isfinite(v) else None for v in values.tolist()]
