"""One codec per kind of preprocessor: how that kind's inputs arrive (v2 tensors, v1 fields) and how its model's
answers leave (v2 output tensors). The routes ask `codec_for(preprocessor)` once and never look at the kind again,
so serving a new kind of data means adding one codec here.

Every codec turns checked request data into the raw inputs `Predictor.transform` reads (a list of texts, an array,
a DataFrame, PIL images), and the model's answer into named tensors. The wire format of those tensors (JSON or the
binary extension) is `protocol`'s business, not the codec's.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from modelyard.registry import Registry
from modelyard.serving.protocol import (MAX_PROMPT_CHARS, BadRequest, InferRequest, OutputRequest, PredictRequest,
                                        Tensor, TensorSpec, as_float32, check_text, tensor_values)

V1_FIELDS = ("texts", "images", "rows", "inputs")


class Codec:
    """The wire side of one preprocessor kind. Subclasses set `v1_fields` and implement `inputs`, `from_v2`,
    `from_v1`, `outputs` and `encode`."""

    v1_fields: ClassVar[tuple[str, ...]] = ()
    classifiable: ClassVar[tuple[str, ...]] = ()  # outputs that can answer the top K classes instead

    def __init__(self, pre) -> None:
        self.pre = pre

    def inputs(self) -> list[TensorSpec]:
        """The v2 input tensors this kind reads."""
        raise NotImplementedError

    def from_v2(self, arrays: dict[str, np.ndarray]) -> tuple[Any, int]:
        """Checked input arrays, one per spec of `inputs()` -> (raw inputs, number of items)."""
        raise NotImplementedError

    def from_v1(self, field: str, items: list) -> Any:
        """The items of the v1 field (one of `v1_fields`, non-empty) -> raw inputs."""
        raise NotImplementedError

    def outputs(self, model) -> list[TensorSpec]:
        """The v2 output tensors this kind's model answers."""
        raise NotImplementedError

    def encode(self, answer, model, wanted: dict[str, OutputRequest]) -> list[Tensor]:
        """The model's answer -> the output tensors `wanted` names, in its order (checked by `output_requests`)."""
        raise NotImplementedError


CODECS: Registry[type[Codec]] = Registry("codec")


def codec_for(pre) -> Codec:
    """The codec of a model's preprocessor."""
    return CODECS.get(pre.kind).obj(pre)


# ---------------------------------------------------------------- decoding a whole request


def decode_v2(req: InferRequest, codec: Codec, max_items: int) -> tuple[Any, int]:
    """A v2 request -> (raw inputs for `Predictor.transform`, number of items)."""
    specs = {s.name: s for s in codec.inputs()}
    given = {t.name: t for t in req.inputs}
    unknown, missing = sorted(set(given) - set(specs)), sorted(set(specs) - set(given))
    if unknown or missing or len(given) != len(req.inputs):
        raise BadRequest(f"inputs must be {sorted(specs)}, each once" + (f"; unknown: {unknown}" if unknown else "")
                         + (f"; missing: {missing}" if missing else ""))
    return codec.from_v2({name: tensor_values(given[name], spec, max_items) for name, spec in specs.items()})


def decode_v1(req: PredictRequest, pre, max_items: int) -> tuple[Any, int]:
    """A v1 predict request -> (raw inputs for `Predictor.transform`, number of items)."""
    codec = codec_for(pre)
    given = {f: getattr(req, f) for f in V1_FIELDS if getattr(req, f) is not None}
    if len(given) != 1 or next(iter(given)) not in codec.v1_fields:
        raise BadRequest(f"this {pre.kind} model takes exactly one of: {' or '.join(codec.v1_fields)}")
    field, items = next(iter(given.items()))
    if not items:
        raise BadRequest(f"{field} is empty")
    if len(items) > max_items:
        raise BadRequest(f"{len(items)} items is more than this server's limit of {max_items} per request", 413)
    return codec.from_v1(field, items), len(items)


# ---------------------------------------------------------------- classifiers


class ClassifierCodec(Codec):
    """Answers probabilities (N, C) and a label per item; `classification: K` turns probabilities into the K most
    likely "score:index:label" strings (the protocol's classification extension)."""

    classifiable = ("probabilities",)

    def outputs(self, model) -> list[TensorSpec]:
        return [TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(model.labels)]),
                TensorSpec(name="label", datatype="BYTES", shape=[-1])]

    def encode(self, prob: np.ndarray, model, wanted: dict[str, OutputRequest]) -> list[Tensor]:
        out = []
        for name, how in wanted.items():
            if name == "label":
                out.append(Tensor("label", "BYTES", np.array([model.labels[i] for i in prob.argmax(axis=1)],
                                                             dtype=object)))
            elif how.classification:
                out.append(Tensor(name, "BYTES", top_k(prob, how.classification, model.labels)))
            else:
                out.append(Tensor(name, "FP32", prob.astype(np.float32)))
        return out


def top_k(prob: np.ndarray, k: int, labels: list[str]) -> np.ndarray:
    """The k most likely classes per row as "score:index:label" strings, shaped (N, min(k, C))."""
    order = np.argsort(-prob, axis=1, kind="stable")[:, :k]  # (N, k)
    return np.array([[f"{row[i]:f}:{i}:{labels[i]}" for i in idx] for row, idx in zip(prob, order)], dtype=object)


@CODECS.register("text")
class TextCodec(ClassifierCodec):
    v1_fields = ("texts",)

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(name="text", datatype="BYTES", shape=[-1])]

    def from_v2(self, arrays):
        texts = [str(v) for v in arrays["text"].reshape(-1)]
        return texts, len(texts)

    def from_v1(self, field, items):
        return [check_text(v, f"texts[{i}]") for i, v in enumerate(items)]


@CODECS.register("image")
class ImageCodec(ClassifierCodec):
    """Arrays (N, H, W[, C]) in the training data's pixel units, or (v1) base64-encoded image files."""

    v1_fields = ("images", "inputs")

    def inputs(self) -> list[TensorSpec]:
        h, w = self.pre.size
        return [TensorSpec(name="input", datatype="FP32",
                           shape=[-1, h, w] + ([3] if self.pre.channels == 3 else []))]

    def from_v2(self, arrays):
        return arrays["input"], len(arrays["input"])

    def from_v1(self, field, items):
        if field == "images":
            return [decode_image(s, i) for i, s in enumerate(items)]
        return numeric_items(items, (3, 4), "(N, H, W) or (N, H, W, C)", "image")


@CODECS.register("sequence")
class SequenceCodec(ClassifierCodec):
    v1_fields = ("inputs",)

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(name="input", datatype="FP32", shape=[-1, self.pre.length])]

    def from_v2(self, arrays):
        return arrays["input"], len(arrays["input"])

    def from_v1(self, field, items):
        return numeric_items(items, (2,), f"(N, {self.pre.length})", "sequence")


@CODECS.register("tabular")
class TabularCodec(ClassifierCodec):
    """One v2 input per column (numbers FP32, categories BYTES); v1 rows are objects keyed by column."""

    v1_fields = ("rows",)

    def inputs(self) -> list[TensorSpec]:
        return ([TensorSpec(name=c, datatype="FP32", shape=[-1]) for c in self.pre.numeric]
                + [TensorSpec(name=c, datatype="BYTES", shape=[-1]) for c in self.pre.categorical])

    def from_v2(self, arrays):
        sizes = {len(a) for a in arrays.values()}
        if len(sizes) != 1:
            raise BadRequest(f"every column input needs the same number of rows; got {sorted(sizes)}")
        return pd.DataFrame({k: list(v) for k, v in arrays.items()}), sizes.pop()

    def from_v1(self, field, items):
        for i, row in enumerate(items):
            for k, v in row.items():
                check_text(k, f"rows[{i}] column name")
                if isinstance(v, str):
                    check_text(v, f"rows[{i}][{k!r}]")
        return pd.DataFrame(items)


def numeric_items(items: list, ndims: tuple[int, ...], want: str, kind: str) -> np.ndarray:
    """v1 `inputs`: equally shaped arrays of numbers, N first."""
    try:
        arr = as_float32(items, "inputs")
    except (ValueError, TypeError):
        raise BadRequest("inputs must be equally shaped arrays of numbers") from None
    if arr.ndim not in ndims or 0 in arr.shape:
        raise BadRequest(f"inputs are shaped {arr.shape}; this {kind} model takes arrays shaped {want}, "
                         "every dimension at least 1")
    return arr


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


# ---------------------------------------------------------------- language models


@CODECS.register("corpus")
class CorpusCodec(Codec):
    """A language model: one prompt in, its continuation out (v1 streams it from /generate instead)."""

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(name="prompt", datatype="BYTES", shape=[1])]

    def from_v2(self, arrays):
        prompt = str(arrays["prompt"].reshape(-1)[0])
        if len(prompt) > MAX_PROMPT_CHARS:
            raise BadRequest(f"prompt has {len(prompt):,} characters; at most {MAX_PROMPT_CHARS:,} are taken", 413)
        return prompt, 1

    def outputs(self, model) -> list[TensorSpec]:
        return [TensorSpec(name="text_output", datatype="BYTES", shape=[1])]

    def encode(self, text: str, model, wanted: dict[str, OutputRequest]) -> list[Tensor]:
        return [Tensor("text_output", "BYTES", np.array([text], dtype=object))]
