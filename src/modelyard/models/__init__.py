"""Model zoo behind one registry. `create_model` builds any of them from its config section."""

from __future__ import annotations

from torch import nn

from modelyard.errors import ModelError
from modelyard.models import cnn, mlp, resnet  # noqa: F401  (registers the families explicitly)
from modelyard.models.base import MODELS, ModelConfigBase, register_model
from modelyard.models.weights import load_pretrained, read_state_dict

__all__ = ["MODELS", "ModelConfigBase", "create_model", "register_model", "count_parameters", "read_state_dict"]


def create_model(cfg: ModelConfigBase, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the model named by `cfg.name`, load `cfg.pretrained` and freeze the backbone if asked.

    Raises:
        ModelError: the input shape does not suit the model, or the weights file is missing or does not fit.
    """
    entry = MODELS.get(cfg.name)
    try:
        model = entry.obj(cfg, input_shape=tuple(input_shape), num_classes=num_classes)
    except ValueError as exc:
        raise ModelError(f"cannot build model {cfg.name!r} for inputs shaped {tuple(input_shape)}: {exc}") from exc
    head = entry.meta["head"]
    if cfg.pretrained:
        load_pretrained(model, cfg.pretrained, head=head)
    if cfg.freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name == head or name.startswith(head + ".")
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable}
