"""hf: a Hugging Face Transformers model, written with `save_pretrained` under `hf/` so that transformers loads
it without modelyard."""

from __future__ import annotations

from pathlib import Path

from modelyard.adapters.base import register_adapter
from modelyard.adapters.torch_module import TorchAdapter


@register_adapter
class HFAdapter(TorchAdapter):
    family = "hf"

    def save(self, folder: Path, labels: list[str]) -> dict:
        self.model.save_pretrained(folder / "hf", labels)
        return {"weights": "hf/model.safetensors", **self._dtype_field()}

    @classmethod
    def load(cls, model_dir: Path, meta: dict, cfg, *, device: str = "cpu") -> "HFAdapter":
        from modelyard.artifact import build_model

        # cfg.pretrained points at model_dir/hf (see artifact._model_config): the factory reads the weights
        return cls._ready(build_model(cfg, meta, model_dir), meta, device)
