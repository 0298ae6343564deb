"""What every model family's adapter answers, so the rest of modelyard asks "what kind of model is this" once.

An adapter wraps one loaded model (a torch module, a Hugging Face model, a scikit-learn based estimator, an
ONNX Runtime session, a quantised module) and answers every later question about it: its task, how to save it,
probabilities for preprocessed inputs, its parameter count, and the torch module behind it where there is one.
`modelyard.json` names the adapter under `family`; `artifact.load` picks it there and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelyard.registry import Registry

ADAPTERS: Registry = Registry("model family", "model families")


def register_adapter(cls):
    """Class decorator: register an adapter under its `family` name."""
    ADAPTERS.register(cls.family)(cls)
    return cls


class Adapter:
    """One model family. Subclasses set `family` and implement `save`, `load` and `logits` (or `proba`).

    Attributes:
        model: the runtime object (nn.Module, estimator, InferenceSession).
        meta: the model folder's modelyard.json (empty while a model is being saved for the first time).
    """

    family: ClassVar[str]
    reads_raw: ClassVar[bool] = False  # True: `proba` takes raw inputs (texts), not the preprocessor's tensors
    new_format: ClassVar[bool] = False  # True: an older modelyard cannot load it, so modelyard.json says format 2

    def __init__(self, model: Any, meta: dict | None = None) -> None:
        self.model, self.meta = model, dict(meta or {})

    # ------------------------------------------------------------------ what a saved folder holds
    def save(self, folder: Path, labels: list[str]) -> dict:
        """Write the weights into `folder`; return modelyard.json fields: `weights` (a path inside the folder)
        and any the family needs to load them again."""
        raise NotImplementedError

    @classmethod
    def load(cls, model_dir: Path, meta: dict, cfg, *, device: str = "cpu") -> "Adapter":
        """The adapter for the checked folder `model_dir` (modelyard.json `meta`, model config `cfg`).

        Raises:
            RunError: naming the file at fault and what to do.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ what the model is
    @property
    def task(self) -> str:
        return self.meta.get("task", "classification")

    @property
    def module(self):
        """The torch module behind the model (counting FLOPs, fine-tuning, explaining), or None."""
        return None

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def count_parameters(self) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------ predicting
    def logits(self, x):
        """Class scores (B, C) as a float torch tensor for one batch of preprocessed inputs."""
        raise NotImplementedError

    def proba(self, x, *, batch_size: int = 512) -> np.ndarray:
        """Probabilities (N, C), float64, for inputs already through the preprocessor's `transform`."""
        import torch

        from modelyard.inference import require_finite

        require_finite_inputs(x)
        with torch.no_grad():
            out = [self.logits(x[i:i + batch_size]).double().softmax(dim=1).cpu() for i in range(0, len(x), batch_size)]
        return require_finite(torch.cat(out).numpy()) if out else self._no_rows()

    def _no_rows(self) -> np.ndarray:
        """The (0, C) answer to no inputs, which `predict` can take the argmax of."""
        return np.zeros((0, len(self.meta.get("labels") or ())))

    def proba_raw(self, raw, preprocessor) -> np.ndarray:
        """Probabilities (N, C) for a source's raw examples (`data.RawData`), as evaluation reads them."""
        dataset = preprocessor.dataset(raw, np.zeros(len(raw), dtype=np.int64), train=False)
        return self.proba_dataset(dataset)

    def proba_dataset(self, dataset, *, batch_size: int = 512) -> np.ndarray:
        """Probabilities (N, C) over a torch dataset of (x, y) pairs, in order (evaluation reads splits so)."""
        parts = [self.proba(dataset[list(range(i, min(i + batch_size, len(dataset))))][0], batch_size=batch_size)
                 for i in range(0, len(dataset), batch_size)]
        return np.concatenate(parts) if parts else self._no_rows()


def require_finite_inputs(x) -> None:
    """Preprocessed float inputs must be finite: a quantised model would turn NaN or infinity into an ordinary
    number (or crash on it) and answer as if nothing were wrong.

    Raises:
        DataError: naming the first input that holds NaN or infinity.
    """
    import torch

    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or len(x) == 0:
        return
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
    if bool(bad.any()):
        from modelyard.errors import DataError

        i = int(bad.nonzero()[0, 0])
        raise DataError(f"input {i + 1} (of {len(x)}) holds values that are not finite numbers (NaN or infinity) once "
                        "preprocessed; check it, or send values in the training data's units")


def family_of_model(model: Any) -> type[Adapter]:
    """The adapter class for a model just trained (the one place that looks at what the object is)."""
    from modelyard.adapters.estimator import EstimatorAdapter
    from modelyard.adapters.hf import HFAdapter
    from modelyard.adapters.torch_module import TorchAdapter

    if isinstance(model, Adapter):
        return type(model)
    if getattr(model, "estimator", False):
        return EstimatorAdapter
    from modelyard.models.hf import HFCausalLM, HFClassifier

    if isinstance(model, (HFClassifier, HFCausalLM)):
        return HFAdapter
    return TorchAdapter


def family_of_meta(meta: dict) -> str:
    """The family a modelyard.json names; folders written before the key existed are told apart by their files."""
    if meta.get("family"):
        return meta["family"]
    if meta.get("weights", "").startswith("hf/"):
        return "hf"
    from modelyard.models import MODELS

    name = meta.get("model", {}).get("name")
    if name in MODELS and MODELS.get(name).meta.get("estimator"):
        return "estimator"
    return "torch"
