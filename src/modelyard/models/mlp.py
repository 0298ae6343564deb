"""Multi-layer perceptron on flattened inputs (tables, pixels, sequences)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from modelyard.models.base import Activation, ModelConfigBase, Width, register_model
from modelyard.models.layers import dense_layers


class MLPConfig(ModelConfigBase):
    name: Literal["mlp"] = "mlp"
    hidden_sizes: list[Width] = Field(default_factory=lambda: [128, 64], description="Width of each hidden layer.")
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, in_features: int, num_classes: int) -> None:
        super().__init__()
        layers, width = dense_layers(in_features, cfg.hidden_sizes, cfg.activation, cfg.dropout)
        self.features = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


@register_model("mlp", config=MLPConfig, head="head", reads=("image", "sequence", "tabular"))
def mlp(cfg: MLPConfig, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(cfg, math.prod(input_shape), num_classes)
