"""estimator: a scikit-learn based model (tfidf-linear) that reads raw texts, saved without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelyard.adapters.base import Adapter, register_adapter


@register_adapter
class EstimatorAdapter(Adapter):
    family = "estimator"
    reads_raw = True

    def save(self, folder: Path, labels: list[str]) -> dict:
        self.model.save(folder)
        return {"weights": "model.safetensors"}

    @classmethod
    def load(cls, model_dir: Path, meta: dict, cfg, *, device: str = "cpu") -> "EstimatorAdapter":
        from modelyard.artifact import DAMAGED, build_model, first_line, read_tensor_specs
        from modelyard.errors import RunError

        model = build_model(cfg, meta, model_dir)
        read_tensor_specs(model_dir / meta["weights"])
        try:
            model.load_weights(model_dir)
        except Exception as exc:  # numpy, safetensors and json each raise their own types for damaged files
            raise RunError(f"the estimator in {model_dir} cannot be read ({first_line(exc)}); {DAMAGED}") from None
        return cls(model, meta)

    def count_parameters(self) -> dict:
        return self.model.count_parameters()

    def proba(self, x, *, batch_size: int = 512) -> np.ndarray:
        return self.model.predict_proba(x)

    def proba_raw(self, raw, preprocessor) -> np.ndarray:
        return self.model.predict_proba(raw.x)
