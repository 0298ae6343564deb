"""Model zoo behind one registry. `create_model` builds any of them from its config section.

Importing this package registers every family from `models/configs.py` and imports no torch; a family's
module (and torch with it) is imported when `create_model` first builds one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelyard.errors import ModelError
from modelyard.models import configs  # noqa: F401  (registers the families explicitly)
from modelyard.models.base import MODELS, ModelConfigBase, import_ref, register_model

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODELS", "ModelConfigBase", "create_model", "register_model", "count_parameters", "model_tokenizer"]


def create_model(cfg: ModelConfigBase, *, input_shape: tuple[int, ...], num_classes: int, kind: str | None = None,
                 **model_inputs) -> nn.Module:
    """Build the model named by `cfg.name`, load `cfg.pretrained` and freeze the backbone if asked.

    Args:
        kind: the data kind (image, sequence, tabular, text); checked against what the model reads.
        model_inputs: facts beyond the shape that some models need, e.g. a text model's vocab_size and pad_id.

    Raises:
        ModelError: the data or input shape does not suit the model, or the weights file is missing or does not fit.
    """
    entry = MODELS.get(cfg.name)
    if kind is not None and kind not in entry.meta["reads"]:
        fits = sorted(e.name for e in MODELS if kind in e.meta["reads"])
        raise ModelError(f"model {cfg.name!r} cannot read {kind} data; models that can: {', '.join(fits)}")
    try:
        model = entry.obj(cfg, input_shape=tuple(input_shape), num_classes=num_classes, **model_inputs)
    except ValueError as exc:
        raise ModelError(f"cannot build model {cfg.name!r} for inputs shaped {tuple(input_shape)}: {exc}") from exc
    head = entry.meta["head"]
    if entry.meta.get("loads_weights"):  # the factory loaded `pretrained` and froze what its mode says
        return model
    if cfg.pretrained:
        from modelyard.models.weights import load_pretrained

        load_pretrained(model, cfg.pretrained, head=head)
    if cfg.freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name == head or name.startswith(head + ".")
    return model


def count_parameters(model) -> dict:
    """Parameters, trainable parameters and their fraction (an estimator reports its fitted coefficients)."""
    if hasattr(model, "count_parameters"):
        return model.count_parameters()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable,
            "trainable_fraction": trainable / total if total else 0.0}


def model_tokenizer(cfg: ModelConfigBase):
    """A pre-trained model's own tokeniser (`data.text.PretrainedTokenizer`), or None to train one on the data."""
    hook = MODELS.get(cfg.name).meta.get("tokenizer")  # "module:function"
    return import_ref(hook)(cfg) if hook else None
