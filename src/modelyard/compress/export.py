"""ONNX export (torch.onnx) and ONNX Runtime's quantisation: `onnx`, `onnx-int8`, `quantize_onnx_dynamic` (int8-dynamic
on an onnx parent) and `serving_copy` (what `modelyard serve --runtime onnx` serves).

The graph is traced by torch.onnx's TorchScript exporter: it exports every model modelyard trains, in a fraction of
the dynamo exporter's time, and only its graph of a BERT-like encoder (exported with eager attention) matches the
patterns of ONNX Runtime's transformer optimiser, which fuses attention, embeddings and layer norms as Hugging Face
Optimum does (the dynamo exporter's graph fused no attention block in torch 2.14). A Hugging Face classifier is
exported as its encoder, (input_ids, attention_mask) -> logits, with dynamic batch and sequence axes; the adapter
sorts texts by length and trims padding columns before the session runs, as the torch wrapper does.

The transformer optimiser is off unless asked for (`transformer_optimizer=True`): on a 2-core AMD EPYC with AVX-512
VNNI, MiniLM's fused graph took 10-20% more CPU time per text than the unfused one under ONNX Runtime's own graph
optimisations (fp32 and int8 alike), whose attention runs as MatMul and Softmax.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from modelyard.compress.base import Compressed, MethodParams, register_compressor
from modelyard.errors import ConfigError

OPSET = 17  # LayerNormalization is one op from 17 on; the TorchScript exporter goes up to 20
MAX_OPSET = 20
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet", "albert")
DYNAMIC_OPS = ["MatMul", "Attention", "Gather", "EmbedLayerNormalization"]  # Gather: the embedding matrix too
CALIBRATION_BATCHES = 10


class OnnxParams(MethodParams):
    opset: int = Field(OPSET, ge=13, le=MAX_OPSET, description="ONNX opset to export with (13 to 20).")
    transformer_optimizer: bool = Field(False, description="BERT-like encoders: fuse attention, embeddings and layer "
                                                           "norms with ONNX Runtime's transformer optimiser.")


class OnnxInt8Params(OnnxParams):
    calibration_batches: int | None = Field(
        None, ge=1, le=10_000,
        description=f"Static quantisation (models of float inputs, e.g. CNNs): training batches whose activation "
                    f"ranges calibrate the int8 scales (default {CALIBRATION_BATCHES}).")


@dataclass
class Graph:
    """An exported graph in a scratch folder, before it is saved as a model folder."""

    path: Path
    info: dict  # modelyard.json's `onnx` section
    hf_dir: Path | None
    scratch: tempfile.TemporaryDirectory
    notes: list[str] = field(default_factory=list)

    def adapter(self, meta: dict):
        from modelyard.adapters.onnx_runtime import OnnxAdapter

        return OnnxAdapter.from_file(self.path, self.info, meta=meta, hf_dir=self.hf_dir, scratch=self.scratch)


# ---------------------------------------------------------------- the methods

@register_compressor("onnx", params=OnnxParams, applies_to=("torch", "hf"),
                     summary="exported with torch.onnx and run by ONNX Runtime (all graph optimisations; attention "
                             "fused for BERT-like encoders): same answers, often faster on CPUs")
def onnx_export(parent, params: OnnxParams, **_) -> Compressed:
    graph = export_graph(parent.predictor, opset=params.opset, fuse=params.transformer_optimizer,
                         instead=_instead(parent))
    return Compressed(graph.adapter(parent.predictor.meta), notes=graph.notes)


@register_compressor("onnx-int8", params=OnnxInt8Params, applies_to=("torch", "hf"),
                     summary="ONNX Runtime int8: dynamic (weights and embeddings int8) for text models, static with "
                             "calibration on training batches (QDQ) for models of float inputs such as CNNs")
def onnx_int8(parent, params: OnnxInt8Params, **_) -> Compressed:
    graph = export_graph(parent.predictor, opset=params.opset, fuse=params.transformer_optimizer,
                         instead=_instead(parent))
    if _reads_tokens(parent.predictor):
        if params.calibration_batches is not None:
            raise ConfigError("compress --method onnx-int8: --calibration-batches calibrates static quantisation, but "
                              f"{parent.run.path} reads token ids and is quantised dynamically (no calibration); "
                              "drop --calibration-batches")
        quantised = quantize_dynamic_graph(graph)
    else:
        quantised = quantize_static_graph(graph, parent, batches=params.calibration_batches or CALIBRATION_BATCHES)
    return Compressed(quantised.adapter(parent.predictor.meta), notes=quantised.notes,
                      facts=int8_facts(quantised.path))


def quantize_onnx_dynamic(parent, params=None) -> Compressed:
    """int8-dynamic of an onnx parent: its graph with int8 weights (MatMul, attention, embeddings; ONNX Runtime turns
    Gemm into MatMul to quantise it), activations quantised per batch at run time.

    Raises:
        ConfigError: the parent's graph is quantised already.
    """
    from modelyard.adapters.onnx_runtime import copy_hf_files

    adapter = parent.adapter
    if adapter.graph.get("quantization"):
        raise ConfigError(f"{parent.run.path} is quantised already ({adapter.graph['quantization']['mode']} int8); "
                          "compress its fp32 parent instead")
    scratch = tempfile.TemporaryDirectory(prefix="modelyard-onnx-")
    hf_dir = None
    if adapter.hf_dir is not None:  # the parent's folder may be moved while this run is written
        hf_dir = Path(scratch.name) / "hf"
        copy_hf_files(adapter.hf_dir, hf_dir)
    graph = Graph(adapter.path, dict(adapter.graph), hf_dir, scratch)
    quantised = quantize_dynamic_graph(graph)
    return Compressed(quantised.adapter(parent.predictor.meta), notes=quantised.notes,
                      facts=int8_facts(quantised.path))


def _instead(parent) -> str:
    from modelyard.compress.base import COMPRESSORS

    others = sorted(e.name for e in COMPRESSORS if parent.family in e.meta["applies_to"]
                    and parent.predictor.task in e.meta["tasks"] and not e.name.startswith("onnx"))
    return f"compress it with a method that keeps torch ({', '.join(others)})" if others else "keep the torch model"


# ---------------------------------------------------------------- exporting

def export_graph(predictor, *, opset: int = OPSET, fuse: bool = False, instead: str = "keep the torch model") -> Graph:
    """The predictor's model as an ONNX graph in a scratch folder.

    Args:
        fuse: run ONNX Runtime's transformer optimiser on a BERT-like encoder.
        instead: what the user can do when the model does not export (ends the error message).

    Raises:
        ConfigError: the model is no torch module, or holds an operator the exporter cannot write (named).
    """
    import copy

    import torch

    module = predictor.adapter.module if predictor.task == "classification" else None
    if module is None:
        raise ConfigError(f"{predictor.model_dir} holds a model of family {predictor.family!r} "
                          f"({predictor.meta['model']['name']}), which has no ONNX export; {instead}")
    from modelyard.models.hf import HFClassifier

    scratch = tempfile.TemporaryDirectory(prefix="modelyard-onnx-")
    path = Path(scratch.name) / "model.onnx"
    module = copy.deepcopy(module).float().eval()  # a bf16 parent exports as fp32: ORT's CPU kernels are fp32/int8
    hf_dir = None
    if fuse and not isinstance(module, HFClassifier):
        raise ConfigError(f"--transformer-optimizer fuses the attention of Hugging Face encoders; {predictor.model_dir} "
                          f"holds model {predictor.meta['model']['name']!r}: leave the option off")
    if isinstance(module, HFClassifier):
        net, example, inputs, axes = _encoder_export(module, predictor)
        hf_dir = predictor.model_dir / "hf"
    else:
        net, example, inputs, axes = module, (_example(predictor),), ["input"], {"input": _dynamic_axes(predictor)}
    axes["logits"] = {0: "batch"}
    _trace_to_onnx(net, example, path, inputs=inputs, axes=axes, opset=opset, instead=instead,
                   where=predictor.model_dir)
    gap = _gap_to_torch(net, example, path, inputs)
    if gap:
        raise ConfigError(f"{predictor.model_dir}: the exported graph does not answer as the torch model does ({gap}): "
                          f"its forward has Python control flow on shapes or values that tracing fixed; {instead}")
    info = {"opset": opset, "inputs": inputs, "exporter": f"torch.onnx TorchScript exporter (torch "
                                                          f"{torch.__version__.split('+')[0]})"}
    notes = [f"exported with torch.onnx (opset {opset}); run by ONNX Runtime on the CPU with all graph optimisations"]
    graph = Graph(path, info, hf_dir, scratch, notes)
    if isinstance(module, HFClassifier) and fuse:
        _fuse_transformer(graph, module.hf.config, lambda fused: _gap_to_torch(net, example, fused, inputs))
    if isinstance(module, HFClassifier):
        notes.append("texts are sorted by length into sub-batches of 8 and trimmed of shared padding before the "
                     "session runs, as the torch model does")
    return graph


def _encoder_export(module, predictor):
    """The encoder inside HFClassifier as (input_ids, attention_mask) -> logits, with eager attention: the form
    whose attention ONNX Runtime's transformer optimiser recognises and fuses."""
    import torch

    class EncoderLogits(torch.nn.Module):
        def __init__(self, hf) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, input_ids, attention_mask):
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, C)

    hf = module.hf
    hf.set_attn_implementation("eager")
    ids = _example(predictor)
    mask = (ids != module.pad_id).long()
    mask[:, 0] = 1
    seq = {0: "batch", 1: "sequence"}
    return EncoderLogits(hf).eval(), (ids, mask), ["input_ids", "attention_mask"], \
        {"input_ids": dict(seq), "attention_mask": dict(seq)}


def _reads_tokens(predictor) -> bool:
    return "vocab_size" in predictor.meta.get("model_inputs", {})


def _example(predictor):
    """Two example inputs to trace with: token ids (the second text half padding), or zeros of the input shape."""
    import torch

    shape = tuple(predictor.meta["input_shape"])
    if not _reads_tokens(predictor):
        return torch.zeros((2, *shape))
    inputs = predictor.meta["model_inputs"]
    pad, vocab = int(inputs.get("pad_id", 0)), int(inputs["vocab_size"])
    ids = torch.arange(2 * shape[0]).reshape(2, shape[0]) % max(vocab - 1, 1) + 1
    ids[ids == pad] = (pad + 1) % vocab
    ids[1, shape[0] // 2:] = pad
    return ids


def _dynamic_axes(predictor) -> dict:
    return {0: "batch", 1: "sequence"} if _reads_tokens(predictor) else {0: "batch"}


def _trace_to_onnx(net, example, path: Path, *, inputs, axes, opset: int, instead: str, where: Path) -> None:
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), _quiet_output(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(net, example, str(path), input_names=inputs, output_names=["logits"],
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    except torch.onnx.errors.UnsupportedOperatorError as exc:
        raise ConfigError(f"{where}: {_unsupported_message(str(exc), opset, instead)}") from None
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{where}: the model does not export to ONNX ({first[:300]}); {instead}") from None


def _gap_to_torch(net, example, path: Path, inputs) -> str | None:
    """How the graph's answers differ from the module's on one more row than it was traced with (None: they
    agree). Tracing records one path through Python control flow, so a forward that branches on shapes or
    values exports a wrong graph; a fusion that misreads a graph (pruned attention heads) would too."""
    import numpy as np
    import torch

    from modelyard.adapters.onnx_runtime import open_session

    rows = tuple(torch.cat([x, x[:1]]) for x in example)  # (B + 1, ...): the batch axis must be dynamic
    with torch.no_grad():
        want = net(*rows).float().numpy()
    got = open_session(path).run(None, {name: x.numpy() for name, x in zip(inputs, rows)})[0]
    if got.shape != want.shape:
        return f"output shape {got.shape}, not {want.shape}"
    if not np.allclose(got, want, rtol=1e-3, atol=1e-4):
        return f"scores differ by up to {float(np.abs(got - want).max()):.3g}"
    return None


def _unsupported_message(message: str, opset: int, instead: str) -> str:
    op = re.search(r"operator '([^']+)'", message) or re.search(r"namespace (\S+?)\.", message)
    name = op[1] if op else "an operator"
    later = re.search(r"added in version (\d+)", message)
    if later and int(later[1]) <= MAX_OPSET:
        return (f"the model uses {name}, which ONNX supports from opset {later[1]}, not {opset}: "
                f"pass --opset {later[1]}, or {instead}")
    return (f"the model uses {name}, which torch.onnx cannot export to ONNX (opset {opset}); the onnx methods do "
            f"not apply to it: {instead}")


@contextlib.contextmanager
def _quiet_output():
    """Silence file descriptors 1 and 2: the TorchScript exporter's C++ side prints the whole traced graph to
    stdout when an operator fails, which would bury the one-line error (and the run path scripts read)."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()  # what Python code printed meanwhile goes to the sink, not out after it
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def _fuse_transformer(graph: Graph, config, gap_to_torch) -> None:
    """ONNX Runtime's transformer optimiser on a BERT-like encoder (attention, embedding + layer norm, skip layer
    norm, bias + GELU fused into single kernels), as Hugging Face Optimum runs it; the fused graph is kept only
    if it answers as the torch model does (`gap_to_torch(path)` is None)."""
    if config.model_type not in BERT_LIKE:
        graph.notes.append(f"no transformer fusions: ONNX Runtime's optimiser has no patterns for "
                           f"{config.model_type!r} models (only the generic graph optimisations apply)")
        return
    from onnxruntime.transformers.optimizer import optimize_model

    fused_path = graph.path.with_name("model.fused.onnx")
    with _quiet_output():
        model = optimize_model(str(graph.path), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=0)  # the session applies the rest at load
        fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(fused_path))
    gap = gap_to_torch(fused_path)
    if gap:
        graph.notes.append(f"no transformer fusions: the fused graph did not answer as the torch model does ({gap}), "
                           "so the unfused one is kept")
        return
    fused_path.replace(graph.path)
    graph.info["transformer_optimizer"] = {"model_type": "bert", "fused": fused}
    graph.notes.append(f"ONNX Runtime's transformer optimiser fused {fused.get('Attention', 0)} attention blocks "
                       f"({', '.join(f'{k} {v}' for k, v in fused.items())}); the graph needs ONNX Runtime "
                       "(com.microsoft operators)")


# ---------------------------------------------------------------- quantising

def quantize_dynamic_graph(graph: Graph) -> Graph:
    """int8 weights (MatMul, attention, and the embeddings through Gather), activations quantised at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(graph.scratch.name) / "model.int8.onnx"
    with _quiet_output():
        # ONNX shape inference knows no type for the outputs of fused com.microsoft operators: they are float
        # Per channel: MiniLM's probabilities moved a quarter as much as per tensor, for 10% more CPU time
        quantize_dynamic(graph.path, out, op_types_to_quantize=DYNAMIC_OPS, weight_type=QuantType.QInt8,
                         per_channel=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    info = {**graph.info, "quantization": {"mode": "dynamic", "weights": "int8, per channel",
                                           "activations": "uint8, per batch", "ops": DYNAMIC_OPS}}
    notes = [*graph.notes, "int8 weights per channel (MatMul, attention and the embedding matrix), activations "
                           "quantised per batch at run time (ONNX Runtime quantize_dynamic)"]
    return Graph(out, info, graph.hf_dir, graph.scratch, notes)


def quantize_static_graph(graph: Graph, parent, *, batches: int) -> Graph:
    """int8 weights and activations in QDQ form, each activation's range calibrated on `batches` training batches."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    size = parent.cfg.train.batch_size
    reader = _calibration_reader(parent.dataset("train"), graph.info["inputs"][0], batches=batches, batch_size=size,
                                 seed=parent.cfg.seed)
    out = Path(graph.scratch.name) / "model.int8.onnx"
    with _quiet_output():
        quantize_static(graph.path, out, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    seen = reader.examples
    info = {**graph.info, "quantization": {"mode": "static", "format": "QDQ", "weights": "int8, per channel",
                                           "activations": "int8", "calibration": {"batches": reader.batches,
                                                                                  "examples": seen,
                                                                                  "method": "MinMax"}}}
    notes = [*graph.notes, f"int8 weights (per channel) and activations (QDQ), activation ranges calibrated on "
                           f"{reader.batches} training batches ({seen} examples)"]
    return Graph(out, info, graph.hf_dir, graph.scratch, notes)


def _calibration_reader(dataset, name: str, *, batches: int, batch_size: int, seed: int):
    """ONNX Runtime's CalibrationDataReader over `batches` shuffled batches of the training split (unaugmented)."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader

    class TrainBatches(CalibrationDataReader):
        def __init__(self) -> None:
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
            self.chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)][:batches]
            self.batches, self.examples, self._next = len(self.chunks), 0, 0

        def get_next(self):
            if self._next >= len(self.chunks):
                return None
            x = dataset[self.chunks[self._next].tolist()][0]
            self._next += 1
            self.examples += len(x)
            return {name: x.float().numpy()}

    return TrainBatches()


def int8_facts(path: Path) -> dict:
    """metrics.json's share of the graph's weight elements stored in 8 bits."""
    import numpy as np
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    kinds = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "int8", onnx.TensorProto.FLOAT: "fp32"}
    counts = {"int8": 0, "fp32": 0}
    for t in graph.initializer:
        if t.data_type in kinds:
            counts[kinds[t.data_type]] += int(np.prod(t.dims))
    total = sum(counts.values())
    return {"int8_weight_fraction": counts["int8"] / total if total else 0.0}


# ---------------------------------------------------------------- serving

def serving_copy(predictor, *, opset: int = OPSET, cache: Path | None = None) -> Path:
    """The model folder of an ONNX copy of `predictor`'s torch or hf model, exported on first use into
    MODELYARD_HOME/onnx-cache/ and reused while the model's files stay the same.

    Raises:
        ConfigError: the model has no ONNX export (an estimator, a language model, an unsupported operator).
    """
    import os

    from modelyard import __version__
    from modelyard.artifact import save_artifact
    from modelyard.models import MODELS

    instead = "serve it with --runtime auto"
    if predictor.task != "classification" or getattr(predictor, "family", None) not in ("torch", "hf"):
        what = "a language model" if predictor.task == "lm" else f"a model of family {predictor.family!r}"
        raise ConfigError(f"--runtime onnx: {predictor.model_dir} holds {what} ({predictor.meta['model']['name']}), "
                          f"which has no ONNX export; {instead}")
    if cache is None:
        from modelyard.store.db import home

        cache = home() / "onnx-cache"
    digest = hashlib.sha256(f"modelyard {__version__} opset {opset}\n".encode())
    for file in (predictor.model_dir / "modelyard.json", predictor.model_dir / predictor.meta["weights"]):
        with open(file, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    folder = cache / f"{predictor.meta['experiment']}-{digest.hexdigest()[:20]}"
    if (folder / "modelyard.json").is_file():
        return folder
    graph = export_graph(predictor, opset=opset, instead=instead)
    meta = predictor.meta
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".export-") as tmp:
        staged = Path(tmp) / "model"
        model_cfg = MODELS.get(meta["model"]["name"]).config.model_validate(meta["model"])
        save_artifact(staged, graph.adapter(meta), model_cfg=model_cfg, input_shape=meta["input_shape"],
                      labels=meta["labels"], preprocessor=predictor.preprocessor, experiment=meta["experiment"],
                      model_inputs=meta["model_inputs"], extra={"exported_from": str(predictor.model_dir)})
        try:
            os.rename(staged, folder)
        except OSError:  # another worker exported the same model first: use its copy
            if not (folder / "modelyard.json").is_file():
                raise
    return folder
