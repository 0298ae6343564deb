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
        model = build_model(cfg, meta, model_dir)
        _check_weights_loaded(model.hf, model_dir / meta["weights"])
        return cls._ready(model, meta, device)


def _check_weights_loaded(hf_model, file: Path) -> None:
    """Every tensor of the saved weights must be one of the model's, of its shape. The factory loads with
    `ignore_mismatched_sizes` (fine-tuning starts with a new head), so a config.json edited after saving (another
    hidden size, another model_type) would otherwise give a model of random weights without a word.

    Raises:
        RunError: naming the file, config.json and the first tensors that do not fit.
    """
    from modelyard.artifact import DAMAGED, read_tensor_specs
    from modelyard.errors import RunError

    own = {name: tuple(t.shape) for name, t in hf_model.state_dict().items()}
    found = read_tensor_specs(file)
    wrong = [f"{name} has shape {shape} in the file but {own[name]} in the model"
             for name, (shape, _) in found.items() if name in own and own[name] != shape]
    wrong += [f"unexpected tensor {name}" for name in found if name not in own]
    if wrong:
        raise RunError(f"{file} does not fit the model {file.parent / 'config.json'} describes: {'; '.join(wrong[:3])}"
                       f". The weights and config.json come from different models, or {DAMAGED}")
