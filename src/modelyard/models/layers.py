"""Small building blocks shared by the model families."""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Feature count after `features`, found by a dry run rather than by hand arithmetic."""
    with torch.no_grad():
        out = features(torch.zeros(1, *input_shape))
    if out.numel() == 0:
        raise ValueError(f"input of shape {input_shape} shrinks to nothing in the feature extractor")
    return out.numel()


def dense_layers(width: int, hidden_sizes: list[int], act: str, dropout: float) -> tuple[list[nn.Module], int]:
    """Linear-activation(-dropout) layers of the given widths; returns them and the last width."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), activation(act)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    return layers, width
