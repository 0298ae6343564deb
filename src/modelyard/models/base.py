"""What every model shares: its config base class and the registry."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelyard.registry import Registry

Activation = Literal["relu", "sigmoid", "tanh", "gelu"]
Width = Annotated[int, Field(gt=0)]  # a layer width or channel count


class ModelConfigBase(BaseModel):
    """Fields every model accepts; each family adds its own and a `name: Literal[...]` tag."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    pretrained: str | None = Field(
        None, description="Local weights file (.safetensors, or .pt/.pth read with weights_only=True)."
    )
    freeze_backbone: bool = Field(False, description="Train only the classification head.")


# Factories take (cfg, *, input_shape, num_classes) and return an nn.Module.
# `head` meta names the classifier's parameter prefix: it is what a pretrained file may lack
# and what freeze_backbone leaves trainable.
MODELS: Registry = Registry("model")
register_model = MODELS.register
