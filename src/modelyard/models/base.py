"""What every model shares: its config base class, the registry, and lazily imported factories.

A family registers on its config class (in `models/configs.py`, which imports no torch) and names its factory
as ``"module:function"``: validating an experiment config needs only pydantic, so a typo in the YAML is
reported in a fraction of a second, before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelyard.registry import Registry

Activation = Literal["relu", "sigmoid", "tanh", "gelu"]
MAX_WIDTH = 16_384  # wider layers than this would not fit in memory; a typo more likely than an intent
Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]  # a layer width or channel count


class ModelConfigBase(BaseModel):
    """Fields every model accepts; each family adds its own and a `name: Literal[...]` tag."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    pretrained: str | None = Field(
        None, description="Local weights file (.safetensors, or .pt/.pth read with weights_only=True)."
    )
    freeze_backbone: bool = Field(False, description="Train only the classification head.")


def import_ref(ref: str) -> Any:
    """The object a ``"package.module:name"`` reference names, imported now."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


class LazyFactory:
    """A factory named by ``"module:function"``, imported on its first call."""

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def resolve(self) -> Any:
        return import_ref(self.ref)

    def __repr__(self) -> str:
        return f"LazyFactory({self.ref!r})"


# Factories take (cfg, *, input_shape, num_classes) and return an nn.Module.
# `head` meta names the classifier's parameter prefix: it is what a pretrained file may lack
# and what freeze_backbone leaves trainable.
MODELS: Registry = Registry("model")


def register_model(name: str, *, factory: str, **meta: Any):
    """Class decorator: register model family `name` with this config class and its factory ``"module:function"``.

    Example:
        >>> @register_model("mlp", factory="modelyard.models.mlp:mlp", head="head", reads=("tabular",))
        ... class MLPConfig(ModelConfigBase): ...
    """
    def decorator(config_cls: type[ModelConfigBase]) -> type[ModelConfigBase]:
        MODELS.register(name, config=config_cls, **meta)(LazyFactory(factory))
        return config_cls

    return decorator
