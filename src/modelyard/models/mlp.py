"""Multi-layer perceptron on flattened inputs (tables, pixels, sequences)."""

from __future__ import annotations

import math
from torch import nn

from modelyard.models.configs import MLPConfig
from modelyard.models.layers import dense_layers


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, in_features: int, num_classes: int) -> None:
        super().__init__()
        layers, width = dense_layers(in_features, cfg.hidden_sizes, cfg.activation, cfg.dropout)
        self.features = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def mlp(cfg: MLPConfig, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(cfg, math.prod(input_shape), num_classes)
