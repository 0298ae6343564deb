"""The saved model: `model/model.safetensors` + `model/modelyard.json`, and `load()` to predict with it.

modelyard.json holds the architecture config, input shape, label names and preprocessing, so a model
predicts without the experiment config or the training data.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from modelyard.errors import DataError, RunError

FORMAT_VERSION = 1


def save_artifact(folder: Path, model, *, model_cfg, input_shape, labels, preprocessor,
                  experiment: str, model_inputs: dict | None = None, task: str = "classification") -> None:
    """Write the model's weights and modelyard.json into `folder`.

    Weights: `model.safetensors` for torch models and estimators; a Hugging Face model is written with
    `save_pretrained` to `hf/` instead, so that transformers loads it on its own.
    """
    from safetensors.torch import save_model

    from modelyard import __version__

    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder / "hf", labels)
        weights = "hf/model.safetensors"
    elif getattr(model, "estimator", False):
        model.save(folder)
        weights = "model.safetensors"
    else:
        save_model(model, str(folder / "model.safetensors"))
        weights = "model.safetensors"
    meta = {
        "format_version": FORMAT_VERSION,
        "modelyard_version": __version__,
        "experiment": experiment,
        "task": task,
        "weights": weights,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model_cfg.model_dump(mode="json"),
        "input_shape": list(input_shape),
        "model_inputs": dict(model_inputs or {}),
        "labels": list(labels),
        "preprocessing": preprocessor.to_json(),
    }
    (folder / "modelyard.json").write_text(json.dumps(meta, indent=2) + "\n")


def resolve_model_dir(path: str | Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / "modelyard.json").is_file():
            return candidate
    if path.is_dir() and (path / "config.yaml").is_file():
        raise RunError(f"run {path} has no saved model yet (no model/modelyard.json): it did not finish. "
                       f"Resume it with `modelyard train --resume {path}`")
    raise RunError(f"{path} is neither a run directory nor a model directory (no modelyard.json found)")


class Predictor:
    """A saved model ready to predict. Create it with `modelyard.load(path)`.

    Example:
        >>> model = modelyard.load("runs/digits-lenet-20261122T060000Z")
        >>> model.predict("my_digits/")          # label per image
        >>> model.predict_proba(frame)            # (N, C) probabilities, columns in `model.labels` order
    """

    def __init__(self, model_dir: Path, model, meta: dict, preprocessor: Any) -> None:
        self.model_dir, self.model, self.meta, self.preprocessor = model_dir, model, meta, preprocessor
        self.labels: list[str] = meta["labels"]
        self.estimator = getattr(model, "estimator", False)  # scikit-learn based: reads raw texts, no tensors
        self.device = torch.device("cpu") if self.estimator else next(model.parameters()).device

    @property
    def name(self) -> str:
        return self.meta["experiment"]

    def transform(self, inputs) -> torch.Tensor:
        """Raw inputs (a path, a DataFrame, arrays, PIL images) -> the model's input tensor."""
        if isinstance(inputs, (str, Path)):
            inputs, _ = self.read(inputs)
        return self.preprocessor.transform(inputs)

    def read(self, path: str | Path) -> tuple[Any, list[str]]:
        """Read a folder of images, an image file or a CSV; returns raw inputs and an id per input."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"input {path} not found")
        return self.preprocessor.read_inputs(path)

    def predict_proba(self, inputs, *, batch_size: int = 512) -> np.ndarray:
        return self.proba_of(self.transform(inputs), batch_size=batch_size)

    def proba_of(self, x, *, batch_size: int = 512) -> np.ndarray:
        """Probabilities for inputs already through `transform` (the server batches these)."""
        from modelyard.inference import predict_tensor

        if self.estimator:
            return self.model.predict_proba(x)
        return predict_tensor(self.model, x, batch_size=batch_size, device=self.device)

    def predict_raw(self, raw) -> np.ndarray:
        """Probabilities (N, C) for a source's raw examples (`data.RawData`), as evaluation reads them."""
        from modelyard.inference import predict_dataset

        if self.estimator:
            return self.model.predict_proba(raw.x)
        dataset = self.preprocessor.dataset(raw, np.zeros(len(raw), dtype=np.int64), train=False)
        return predict_dataset(self.model, dataset, device=self.device)[1]

    def predict(self, inputs, *, batch_size: int = 512) -> np.ndarray:
        """The predicted label (a name from `labels`) of each input."""
        from modelyard.inference import predicted_labels

        return predicted_labels(self.predict_proba(inputs, batch_size=batch_size), self.labels)

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
    """Load a saved model from a run directory or its `model/` folder.

    Returns a `Predictor` for classifiers, a `generation.LanguageModel` for language models.

    Raises:
        RunError: the path holds no finished model.
    """
    from safetensors.torch import load_model

    from modelyard.data import preprocessor_from_json
    from modelyard.models import MODELS, create_model

    model_dir = resolve_model_dir(path)
    meta = json.loads((model_dir / "modelyard.json").read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise RunError(f"{model_dir} was saved by a newer modelyard (format {meta['format_version']}); upgrade modelyard")
    weights = meta.get("weights", "model.safetensors")
    spec = dict(meta["model"])
    if weights.startswith("hf/"):  # save_pretrained wrote the fine-tuned model, adapters merged in
        spec.update(pretrained=str(model_dir / "hf"), finetune="full")
    elif "pretrained" in spec:
        spec.update(pretrained=None, freeze_backbone=False)  # weights come from the artifact
    entry = MODELS.get(spec["name"])
    cfg = entry.config.model_validate(spec)
    if not (model_dir / weights).is_file():
        raise RunError(f"{model_dir / weights} is missing: the model folder is incomplete; retrain or restore it")
    model = create_model(cfg, input_shape=tuple(meta["input_shape"]), num_classes=len(meta["labels"]),
                         **meta.get("model_inputs", {}))
    preprocessor = preprocessor_from_json(meta["preprocessing"])
    if getattr(model, "estimator", False):
        model.load_weights(model_dir)
        return Predictor(model_dir, model, meta, preprocessor)
    if not weights.startswith("hf/"):
        load_model(model, str(model_dir / weights))
    model.to(device).eval()
    if meta.get("task") == "lm":
        from modelyard.generation import LanguageModel

        return LanguageModel(model_dir, model, meta, preprocessor)
    return Predictor(model_dir, model, meta, preprocessor)
