"""The saved model: `model/model.safetensors` + `model/modelyard.json`, and `load()` to predict with it.

modelyard.json holds the architecture config, input shape, label names and preprocessing, so a model
predicts without the experiment config or the training data.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelyard.errors import DataError, ModelyardError, RunError
from modelyard.filemode import as_umask_allows

FORMAT_VERSION = 2  # 2: families an older modelyard cannot load (onnx, torch-int8); the others still write 1


def save_artifact(folder: Path, model, *, model_cfg, input_shape, labels, preprocessor,
                  experiment: str, model_inputs: dict | None = None, task: str = "classification",
                  extra: dict | None = None) -> None:
    """Write the model's weights and modelyard.json into `folder`.

    Args:
        model: a model just trained (its adapter is picked here) or an `adapters.Adapter` (a compressed model).
        extra: further modelyard.json fields (a derived model's method, the ONNX opset, ...).

    Weights: each family writes its own (see `modelyard.adapters`); a Hugging Face model is written with
    `save_pretrained` to `hf/`, so that transformers loads it on its own.
    """
    from modelyard import __version__
    from modelyard.adapters import Adapter, family_of_model

    folder.mkdir(parents=True, exist_ok=True)
    adapter = model if isinstance(model, Adapter) else family_of_model(model)(model, {"task": task})
    written = adapter.save(folder, list(labels))
    meta = {
        "format_version": FORMAT_VERSION if adapter.new_format else 1,
        "modelyard_version": __version__,
        "experiment": experiment,
        "task": task,
        "family": adapter.family,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model_cfg.model_dump(mode="json"),
        "input_shape": list(input_shape),
        "model_inputs": dict(model_inputs or {}),
        "labels": list(labels),
        "preprocessing": preprocessor.to_json(),
        **written,
        **(extra or {}),
    }
    (folder / "modelyard.json").write_text(json.dumps(meta, indent=2) + "\n")
    as_umask_allows(folder)


def resolve_model_dir(path: str | Path) -> Path:
    """The model folder of a run directory, or `path` itself when it is a model folder.

    Raises:
        RunError: no model there, saying whether the run did not finish or the folder is incomplete.
    """
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / "modelyard.json").is_file():
            return candidate
    model = path / "model"
    if model.exists() and not model.is_dir():
        raise RunError(f"{model} is not a folder: the run's saved model was replaced by a file; restore the run's "
                       "model/ folder from a backup or retrain")
    if model.is_dir() and any(model.iterdir()):
        raise RunError(f"{model / 'modelyard.json'} is missing: the model folder is incomplete; retrain or restore "
                       "it from a backup")
    if path.is_dir() and (path / "config.yaml").is_file():
        lineage = _lineage(path)
        how = (f"Make it again with `modelyard compress {lineage['parent']} --method {lineage['method']}`"
               if lineage else f"Resume it with `modelyard train --resume {path}`")
        raise RunError(f"run {path} has no saved model yet (no model/modelyard.json): it did not finish. {how}")
    if not path.exists():
        raise RunError(f"{path} not found; pass a run directory that `modelyard train` printed, or its model/ folder")
    raise RunError(f"no saved model in {path} (no modelyard.json, no config.yaml); pass a run directory that "
                   "`modelyard train` printed, or its model/ folder")


def _lineage(path: Path) -> dict | None:
    """A derived run's lineage from its run.json, or None (a trained run, or a run.json that cannot be read)."""
    try:
        lineage = json.loads((path / "run.json").read_text()).get("lineage")
    except (OSError, ValueError, AttributeError):
        return None
    return lineage if isinstance(lineage, dict) and {"parent", "method"} <= lineage.keys() else None


INPUTS_TAKEN = {"image": "image files, arrays (N, H, W) or (N, H, W, C) of numbers, or PIL images",
                "sequence": "an array (N, L) of numbers", "text": "texts", "tabular": "a DataFrame of rows"}


class Predictor:
    """A saved model ready to predict. Create it with `modelyard.load(path)`.

    Example:
        >>> model = modelyard.load("runs/digits-lenet-20261122T060000Z")
        >>> model.predict("my_digits/")          # label per image
        >>> model.predict_proba(frame)            # (N, C) probabilities, columns in `model.labels` order
    """

    def __init__(self, model_dir: Path, adapter, meta: dict, preprocessor: Any) -> None:
        self.model_dir, self.adapter, self.meta, self.preprocessor = model_dir, adapter, meta, preprocessor
        self.model = adapter.model  # the runtime object: nn.Module, estimator or InferenceSession
        self.labels: list[str] = meta["labels"]
        self.device = adapter.device

    task = "classification"

    @property
    def name(self) -> str:
        return self.meta["experiment"]

    @property
    def family(self) -> str:
        return self.adapter.family

    def transform(self, inputs) -> torch.Tensor:
        """Raw inputs (a path, a DataFrame, arrays, PIL images) -> the model's input tensor.

        Raises:
            DataError: inputs the preprocessor cannot convert (object arrays, zero-size images, ...).
        """
        if isinstance(inputs, (str, Path)):
            inputs, _ = self.read(inputs)
        try:
            return self.preprocessor.transform(inputs)
        except (TypeError, ValueError, RuntimeError) as exc:  # a value no preprocessor check foresaw
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"the model cannot take these inputs ({detail}); pass "
                            f"{INPUTS_TAKEN.get(self.preprocessor.kind, 'what it was trained on')}") from None

    def read(self, path: str | Path) -> tuple[Any, list[str]]:
        """Read a folder of images, an image file or a CSV; returns raw inputs and an id per input."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"input {path} not found; pass an image, a folder of images, a CSV or a .txt file of "
                            "one text per line")
        return self.preprocessor.read_inputs(path)

    def predict_proba(self, inputs, *, batch_size: int = 512) -> np.ndarray:
        return self.proba_of(self.transform(inputs), batch_size=batch_size)

    def proba_of(self, x, *, batch_size: int = 512) -> np.ndarray:
        """Probabilities for inputs already through `transform` (the server batches these)."""
        return self.adapter.proba(x, batch_size=batch_size)

    def predict_raw(self, raw) -> np.ndarray:
        """Probabilities (N, C) for a source's raw examples (`data.RawData`), as evaluation reads them."""
        return self.adapter.proba_raw(raw, self.preprocessor)

    def predict(self, inputs, *, batch_size: int = 512) -> np.ndarray:
        """The predicted label (a name from `labels`) of each input."""
        from modelyard.inference import predicted_labels

        return predicted_labels(self.predict_proba(inputs, batch_size=batch_size), self.labels)

    def explain(self, inputs, *, method: str | None = None, target: str | None = None, **params):
        """Which pixels, tokens or columns moved each prediction (`modelyard.explain.explain`).

        Example:
            >>> e = model.explain("my_digits/", method="integrated-gradients")
            >>> e[0].values, e[0].predicted, e[0].quality     # (H, W) attributions, label, convergence delta
        """
        from modelyard.explain import explain

        return explain(self, inputs, method=method, target=target, **params)

    def predict_frame(self, inputs, ids: list[str] | None = None) -> pd.DataFrame:
        """One row per input: id, predicted label, confidence, and every class probability."""
        if isinstance(inputs, (str, Path)):
            inputs, ids = self.read(inputs)
        from modelyard.inference import add_probability_columns, predicted_labels

        prob = self.predict_proba(inputs)
        frame = pd.DataFrame({"id": ids if ids is not None else np.arange(1, len(prob) + 1)})
        frame["predicted"] = predicted_labels(prob, self.labels)
        frame["confidence"] = prob.max(axis=1)
        return add_probability_columns(frame, prob, self.labels)


def load(path: str | Path, *, device: str = "cpu"):
    """Load a saved model from a run directory or its `model/` folder, after checking the folder.

    The folder is validated before anything in it is used: modelyard.json against its schema, the model section
    against the model's config, the weights path (it may not leave the folder), and every tensor's name, shape
    and dtype against the model modelyard.json describes.

    Returns a `Predictor` for classifiers, a `generation.LanguageModel` for language models; either way its
    model family's adapter (`modelyard.adapters`) answers how to predict.

    Raises:
        RunError: the path holds no finished model, or the model folder is damaged, edited or from a newer
            modelyard; the message names the file and the key or tensor.
    """
    from modelyard.adapters import ADAPTERS

    model_dir, meta, _, cfg = _check_folder(path)
    where = model_dir / "modelyard.json"
    preprocessor = _preprocessor(meta, where)
    adapter = ADAPTERS.get(meta["family"]).obj.load(model_dir, meta, cfg, device=device)
    if adapter.task == "lm":
        from modelyard.generation import LanguageModel

        return LanguageModel(model_dir, adapter.module, meta, preprocessor)
    return Predictor(model_dir, adapter, meta, preprocessor)


def build_model(cfg, meta: dict, model_dir: Path):
    """The model modelyard.json describes, built by its registered factory (weights not loaded yet)."""
    from modelyard.models import create_model

    try:
        model = create_model(cfg, input_shape=tuple(meta["input_shape"]), num_classes=len(meta["labels"]),
                             **meta["model_inputs"])
    except ModelyardError as exc:
        raise RunError(f"{model_dir / 'modelyard.json'}: {exc}") from None
    if meta.get("private_layers"):  # trained with train.privacy: BatchNorm became GroupNorm, the same way again
        from modelyard.training.privacy import fix_layers

        model, _ = fix_layers(model)
    return model


# ---------------------------------------------------------------- checking a model folder before it is used

DAMAGED = "the file was edited or damaged: restore the model folder from a backup, or retrain"


class ModelFolderMeta(BaseModel):
    """The schema of modelyard.json. Keys a later format adds are kept but not read."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    format_version: int = Field(1, ge=1, description="1 when absent: folders saved before the key existed.")
    experiment: str
    task: Literal["classification", "lm"] = "classification"
    weights: str = "model.safetensors"
    family: str = Field("", description="The adapter that loads the folder; told from its files when absent.")
    model: dict[str, Any]
    input_shape: list[Annotated[int, Field(ge=1)]]
    model_inputs: dict[str, int | str] = Field(default_factory=dict)
    labels: list[str]
    preprocessing: dict[str, Any]

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        repeated = sorted({lab for lab in labels if labels.count(lab) > 1})
        if repeated:
            raise ValueError(f"labels {repeated} repeat; each class must appear once")
        return labels


def check_model_folder(path: str | Path) -> tuple[Path, dict]:
    """The model folder of `path` and its checked modelyard.json: the checks `load` makes before it builds the
    model (schema, format version, model section, weights file inside the folder), quick enough for a command
    to run before it starts work.

    Raises:
        RunError: naming the file, the key and what to do.
    """
    model_dir, meta, _, _ = _check_folder(path)
    return model_dir, meta


def _check_folder(path: str | Path) -> tuple[Path, dict, Path, Any]:
    """The model folder, its modelyard.json, its weights file and its model config, each checked."""
    model_dir = resolve_model_dir(path)
    meta = read_meta(model_dir)
    weights = _weights_file(model_dir, meta["weights"])
    cfg = _model_config(meta, model_dir)
    _check_model_inputs(meta, model_dir / "modelyard.json")
    return model_dir, meta, weights, cfg


def read_meta(model_dir: Path) -> dict:
    """modelyard.json, checked against its schema and format version; `format_version` filled in (1 if absent).

    Raises:
        RunError: naming the file, the line or key, and what to do.
    """
    from modelyard.config import non_utf8_message, one_line_problem

    path = model_dir / "modelyard.json"
    data = path.read_bytes()
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RunError(f"{path}: {non_utf8_message(data, exc)}; or {DAMAGED}") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); {DAMAGED}") from None
    if not isinstance(raw, dict):
        raise RunError(f"{path}: expected a JSON object with the model's metadata, found a {type(raw).__name__}; "
                       f"{DAMAGED}")
    version = raw.get("format_version", 1)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        from modelyard import __version__

        raise RunError(f"{path} has format_version {version}, written by a newer modelyard "
                       f"({raw.get('modelyard_version', 'unknown version')}); modelyard {__version__} reads format_version "
                       f"{FORMAT_VERSION} and older: upgrade modelyard (pip install -U modelyard) to load it")
    try:
        meta = ModelFolderMeta.model_validate(raw).model_dump()
    except ValidationError as exc:
        raise RunError(f"{path}: {one_line_problem(exc, raw, ModelFolderMeta, hints=False)}; {DAMAGED}") from None
    from modelyard.adapters import ADAPTERS, family_of_meta

    meta["family"] = family_of_meta(meta)
    if meta["family"] not in ADAPTERS:
        raise RunError(f"{path}: family: {ADAPTERS.unknown_message(meta['family']).rstrip('.')}; the folder was written "
                       f"by a newer modelyard (upgrade it) or {DAMAGED}")
    return meta


def _model_config(meta: dict, model_dir: Path):
    """The model's config section from modelyard.json, with weights coming from the folder, not from `pretrained`."""
    from modelyard.config import one_line_problem
    from modelyard.models import MODELS

    where = model_dir / "modelyard.json"
    spec = dict(meta["model"])
    if spec.get("name") not in MODELS:
        raise RunError(f"{where}: model.name: {MODELS.unknown_message(str(spec.get('name'))).rstrip('.')}; {DAMAGED}")
    if meta["weights"].startswith("hf/") or spec.get("name") == "hf":
        # save_pretrained wrote the fine-tuned model (adapters merged in), or, for a compressed one, its config
        # and tokenizer, under hf/
        spec.update(pretrained=str(model_dir / "hf"), finetune="full")
    elif "pretrained" in spec:
        spec.update(pretrained=None, freeze_backbone=False)  # weights come from the artifact
    entry = MODELS.get(spec["name"])
    try:
        return entry.config.model_validate(spec)
    except ValidationError as exc:
        problem = one_line_problem(exc, spec, entry.config, prefix="model.", hints=False)
        raise RunError(f"{where}: {problem}; {DAMAGED}") from None


def _weights_file(model_dir: Path, weights: str) -> Path:
    """The weights file modelyard.json names, which must lie inside the model folder (no `..`, no absolute
    path, no symbolic link that leads out)."""
    where = model_dir / "modelyard.json"
    target = model_dir / weights
    if Path(weights).is_absolute() or ".." in Path(weights).parts or \
            not target.resolve().is_relative_to(model_dir.resolve()):
        link = " through a symbolic link" if target.is_symlink() else ""
        raise RunError(f"{where}: weights {weights!r} points outside the model folder {model_dir}{link}; a model's "
                       f"files must stay inside its folder, and {DAMAGED}")
    if not target.is_file():
        raise RunError(f"{target} is missing: the model folder is incomplete; retrain or restore it from a backup")
    return target


def _preprocessor(meta: dict, where: Path):
    """The preprocessor modelyard.json describes, checked against the model's input shape."""
    from modelyard.data import preprocessor_from_json

    try:
        pre = preprocessor_from_json(meta["preprocessing"])
    except (ModelyardError, KeyError, TypeError, ValueError) as exc:
        detail = f"lacks {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
        raise RunError(f"{where}: preprocessing {detail}; {DAMAGED}") from None
    shape = getattr(pre, "input_shape", None)
    if shape is not None and list(shape) != meta["input_shape"] and meta["input_shape"]:
        raise RunError(f"{where}: input_shape {meta['input_shape']} does not match the preprocessing's {list(shape)}; "
                       f"{DAMAGED}")
    return pre


def _check_model_inputs(meta: dict, where: Path) -> None:
    """model_inputs must be arguments the model's factory takes (vocab_size, pad_id, ...)."""
    import inspect

    from modelyard.models import MODELS

    params = inspect.signature(MODELS.get(meta["model"]["name"]).obj.resolve()).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    takes = {p.name for p in params if p.kind is p.KEYWORD_ONLY} - {"input_shape", "num_classes"}
    unknown = sorted(set(meta["model_inputs"]) - takes)
    if unknown:
        raise RunError(f"{where}: model_inputs {unknown} are not inputs of model {meta['model']['name']!r} "
                       f"(it takes {sorted(takes) or 'none'}); {DAMAGED}")


def load_checked_weights(model: torch.nn.Module, file: Path) -> None:
    """Load a safetensors file into `model` after checking every tensor's name, shape and dtype, and that the
    values are finite.

    Raises:
        RunError: naming the file and the first tensors that do not fit.
    """
    from safetensors.torch import load_model

    found = read_tensor_specs(file)
    own = model.state_dict()
    shared = _aliases(own)
    missing = [k for k in own if k not in found and not (shared[k] & found.keys())]
    unexpected = [k for k in found if k not in own]
    wrong = [f"{k} has shape {found[k][0]} in the file but {tuple(own[k].shape)} in the model"
             for k in own if k in found and found[k][0] != tuple(own[k].shape)]
    wrong += [f"{k} is {found[k][1]} in the file, not a floating-point tensor"
              for k in own if k in found and own[k].is_floating_point() and not found[k][1].startswith(("F", "BF"))]
    if missing or unexpected or wrong:
        parts = wrong[:3] + [f"missing tensor {k}" for k in missing[:3]] + [f"unexpected tensor {k}" for k in unexpected[:3]]
        raise RunError(f"{file} does not fit the model modelyard.json describes: {'; '.join(parts)}. The weights "
                       f"and modelyard.json come from different runs or were edited: restore the folder, or retrain")
    try:
        load_model(model, str(file))
    except Exception as exc:  # safetensors and torch raise several types for a damaged buffer
        raise RunError(f"{file} is corrupt ({first_line(exc)}); retrain or restore it from a backup") from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RunError(f"{file}: tensor {name} holds values that are not finite (NaN or infinity); the weights "
                           "are damaged or training diverged: restore the folder from a backup, or retrain")


def read_tensor_specs(file: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each tensor's (shape, dtype) from a safetensors header, without reading the tensors.

    Raises:
        RunError: the file is not a whole safetensors file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise RunError(f"{file} is corrupt ({first_line(exc)}); retrain or restore it from a backup") from None


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, set[str]]:
    """For each tensor name, the other names of the same storage (tied weights are saved once)."""
    by_storage: dict[tuple, set[str]] = {}
    for k, t in state.items():
        by_storage.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), set()).add(k)
    return {k: by_storage[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] - {k}
            for k, t in state.items()}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
