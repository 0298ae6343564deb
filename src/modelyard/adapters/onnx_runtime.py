"""onnx: a model exported to ONNX (`compress --method onnx` or `onnx-int8`), run by ONNX Runtime on the CPU.

The folder holds model.onnx; a model built on Hugging Face Transformers also keeps hf/ (config.json and the
tokenizer files, without weights), so its config and tokenizer load as before. modelyard.json's `onnx` section
names the graph's inputs and opset and says what was done to the graph (transformer fusions, quantisation).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from modelyard.adapters.base import Adapter, register_adapter

TOKEN_INPUTS = ["input_ids", "attention_mask"]  # a Hugging Face encoder's graph, as Optimum exports it
ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack")  # not copied into hf/


def open_session(path: Path):
    """An ONNX Runtime session on the CPU with every graph optimisation, using as many threads as torch does."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle worker threads spin by default, taking the cores that the other threads, torch and the server's own
    # preprocessing need: on 2 shared cores MiniLM's batch-1 latency was 4-5x worse with spinning than without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # its warnings (unused initialisers, ...) are about the graph, not the user's input
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def copy_hf_files(source: Path, target: Path) -> None:
    """The Hugging Face config and tokenizer files of `source`, without its weights."""
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and not file.name.endswith(WEIGHT_FILES) and not file.name.endswith(".index.json"):
            shutil.copyfile(file, target / file.name)


@register_adapter
class OnnxAdapter(Adapter):
    """An `onnxruntime.InferenceSession` over model.onnx.

    Attributes:
        path: the .onnx file the session was built from.
        graph: modelyard.json's `onnx` section: inputs, opset, exporter, fusions, quantisation.
        hf_dir: the folder with the Hugging Face config and tokenizer to save beside the graph, if any.
    """

    family = "onnx"
    new_format = True
    BUCKET = 8  # rows per length-sorted sub-batch of texts, as models.hf.HFClassifier does at inference

    def __init__(self, model, meta: dict | None = None, *, path: Path, graph: dict, hf_dir: Path | None = None,
                 scratch=None) -> None:
        super().__init__(model, meta)
        self.path, self.graph, self.hf_dir = Path(path), dict(graph), hf_dir
        self._scratch = scratch  # the temporary folder that holds `path` until the model is saved

    @classmethod
    def from_file(cls, path: Path, graph: dict, *, meta: dict, hf_dir: Path | None = None,
                  scratch=None) -> "OnnxAdapter":
        """The adapter of a graph just written (not saved as a model folder yet)."""
        return cls(open_session(path), meta, path=path, graph=graph, hf_dir=hf_dir, scratch=scratch)

    # ------------------------------------------------------------------ what a saved folder holds
    def save(self, folder: Path, labels: list[str]) -> dict:
        shutil.copyfile(self.path, folder / "model.onnx")
        if self.hf_dir is not None:
            copy_hf_files(self.hf_dir, folder / "hf")
        return {"weights": "model.onnx", "onnx": self.graph}

    @classmethod
    def load(cls, model_dir: Path, meta: dict, cfg, *, device: str = "cpu") -> "OnnxAdapter":
        from modelyard.artifact import DAMAGED, first_line
        from modelyard.errors import RunError

        where = model_dir / "modelyard.json"
        if not isinstance(meta.get("onnx"), dict) or not isinstance(meta["onnx"].get("inputs"), list):
            raise RunError(f"{where}: an onnx model folder needs an `onnx` section naming the graph's inputs; "
                           f"{DAMAGED}")
        quantised = meta["onnx"].get("quantization")
        if quantised is not None and not (isinstance(quantised, dict) and isinstance(quantised.get("mode"), str)):
            raise RunError(f"{where}: onnx.quantization is {quantised!r}, not an object naming its mode; {DAMAGED}")
        path = model_dir / meta["weights"]
        try:
            session = open_session(path)
        except Exception as exc:  # onnxruntime raises its own error types for unreadable or invalid graphs
            raise RunError(f"{path} is not an ONNX model that ONNX Runtime can run ({first_line(exc)}); "
                           f"{DAMAGED}") from None
        hf_dir = model_dir / "hf"
        adapter = cls(session, meta, path=path, graph=meta["onnx"], hf_dir=hf_dir if hf_dir.is_dir() else None)
        adapter.check_signature(where)
        return adapter

    def check_signature(self, where: Path) -> None:
        """The session's inputs and output must be the ones modelyard.json describes.

        Raises:
            RunError: naming what differs.
        """
        from modelyard.artifact import DAMAGED
        from modelyard.errors import RunError

        inputs, outputs = self.model.get_inputs(), self.model.get_outputs()
        names = [i.name for i in inputs]
        problems = []
        if names != self.graph["inputs"]:
            problems.append(f"its inputs are {names}, modelyard.json's onnx.inputs {self.graph['inputs']}")
        elif self.takes_mask:
            problems += [f"input {i.name} is {i.type} of shape {i.shape}, not int64 ids (batch, sequence)"
                         for i in inputs if i.type != "tensor(int64)" or len(i.shape) != 2]
        else:
            shape, want = inputs[0].shape, self.meta["input_shape"]
            fixed = [d if isinstance(d, int) else None for d in shape[1:]]
            if len(fixed) != len(want) or any(d is not None and d != w for d, w in zip(fixed, want)):
                problems.append(f"input {names[0]} has shape {shape}, not (batch, {', '.join(map(str, want))}) "
                                f"as modelyard.json's input_shape says")
            if inputs[0].type not in ONNX_DTYPES:
                problems.append(f"input {names[0]} is {inputs[0].type}, which modelyard does not feed")
        classes = len(self.meta["labels"])
        shape = outputs[0].shape if outputs else None
        if shape is None or len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != classes):
            problems.append(f"its output is {shape or 'missing'}, not (batch, {classes}) scores for the {classes} "
                            "labels")
        if problems:
            raise RunError(f"{self.path} does not fit {where}: {'; '.join(problems)}. The graph and modelyard.json "
                           f"come from different models, or {DAMAGED}")

    # ------------------------------------------------------------------ what the model is
    @property
    def takes_mask(self) -> bool:
        """Whether the graph takes token ids and an attention mask (a Hugging Face encoder)."""
        return self.graph.get("inputs") == TOKEN_INPUTS

    def count_parameters(self) -> dict:
        """The graph's weights: elements of its floating-point and 8-bit initialisers (int64 shape constants are
        not weights). Nothing in an exported graph trains."""
        import onnx

        kinds = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                 onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
        graph = onnx.load(str(self.path), load_external_data=False).graph
        total = sum(int(np.prod(t.dims)) for t in graph.initializer if t.data_type in kinds)
        return {"parameters": total, "trainable_parameters": 0, "trainable_fraction": 0.0}

    # ------------------------------------------------------------------ predicting
    def logits(self, x):
        import torch

        array = x.detach().cpu().numpy()
        if self.takes_mask:
            out = self._token_logits(array.astype(np.int64, copy=False))
        else:
            first = self.model.get_inputs()[0]
            out = self.model.run(None, {first.name: array.astype(ONNX_DTYPES[first.type], copy=False)})[0]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)

    def _token_logits(self, ids: np.ndarray) -> np.ndarray:
        """Scores (B, C) for right-padded ids (B, T): texts sorted by length into sub-batches, each trimmed of the
        padding columns it shares, as models.hf.HFClassifier does; each row is computed under its own mask
        either way, so the answers do not change, only the padding that is computed."""
        keep = ids != int(self.meta.get("model_inputs", {}).get("pad_id", 0))
        keep[:, 0] = True
        if len(ids) <= self.BUCKET:
            return self._run_trimmed(ids, keep)
        order = np.argsort(keep.sum(axis=1), kind="stable")
        out = None
        for i in range(0, len(ids), self.BUCKET):
            rows = order[i:i + self.BUCKET]
            part = self._run_trimmed(ids[rows], keep[rows])
            if out is None:
                out = np.empty((len(ids), part.shape[1]), dtype=np.float32)
            out[rows] = part
        return out

    def _run_trimmed(self, ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
        length = int(np.flatnonzero(keep.any(axis=0)).max()) + 1
        return self.model.run(None, {"input_ids": np.ascontiguousarray(ids[:, :length]),
                                     "attention_mask": keep[:, :length].astype(np.int64)})[0]
