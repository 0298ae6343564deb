"""torch: a torch module built from its registered factory, weights in model.safetensors (fp32, or bf16 after
`compress --method bf16`)."""

from __future__ import annotations

from pathlib import Path

from modelyard.adapters.base import Adapter, register_adapter

DTYPES = ("float32", "bfloat16", "float16")


@register_adapter
class TorchAdapter(Adapter):
    family = "torch"

    @property
    def module(self):
        return self.model

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.meta.get("dtype", "float32"))

    def save(self, folder: Path, labels: list[str]) -> dict:
        from safetensors.torch import save_model

        save_model(self.model, str(folder / "model.safetensors"))
        return {"weights": "model.safetensors", **self._dtype_field()}

    def _dtype_field(self) -> dict:
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        return {} if dtype == "float32" else {"dtype": dtype}

    @classmethod
    def load(cls, model_dir: Path, meta: dict, cfg, *, device: str = "cpu") -> "TorchAdapter":
        from modelyard.artifact import build_model, load_checked_weights

        model = build_model(cfg, meta, model_dir)
        load_checked_weights(model, model_dir / meta["weights"])
        return cls._ready(model, meta, device)

    @classmethod
    def _ready(cls, model, meta: dict, device: str) -> "TorchAdapter":
        import torch

        dtype = meta.get("dtype", "float32")
        if dtype not in DTYPES:
            from modelyard.artifact import DAMAGED
            from modelyard.errors import RunError

            raise RunError(f"modelyard.json: dtype {dtype!r} is none of {', '.join(DTYPES)}; {DAMAGED}")
        model.to(device=device, dtype=getattr(torch, dtype)).eval()
        return cls(model, meta)

    def count_parameters(self) -> dict:
        from modelyard.models import count_parameters

        return count_parameters(self.model)

    def logits(self, x):
        x = x.to(self.device)
        if x.is_floating_point():
            x = x.to(self.dtype)
        return self.model(x).float()
