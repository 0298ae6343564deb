"""Layers with a forward pass and a backward pass written out by the chain rule."""

from __future__ import annotations

import numpy as np

from modelyard.reference.functions import ACTIVATIONS


class Dense:
    """z = x W^T + b, with W shaped (out, in) as torch.nn.Linear stores it.

    backward(g) takes g = dL/dz (N, out) and returns dL/dx = g W; it stores
    dL/dW = g^T x and dL/db = sum_n g_n.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight, self.bias = weight, bias
        self.grad_weight = np.zeros_like(weight)
        self.grad_bias = np.zeros_like(bias)
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return x @ self.weight.T + self.bias  # (N, in) @ (in, out) -> (N, out)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        self.grad_weight = grad_out.T @ self._x  # (out, N) @ (N, in)
        self.grad_bias = grad_out.sum(axis=0)
        return grad_out @ self.weight  # (N, out) @ (out, in)


class Activation:
    """a = f(z); backward(g) returns g * f'(z), the chain rule for an element-wise function."""

    def __init__(self, name: str) -> None:
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.name = name
        self.f, self.df = ACTIVATIONS[name]
        self._z: np.ndarray | None = None

    def forward(self, z: np.ndarray) -> np.ndarray:
        self._z = z
        return self.f(z)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * self.df(self._z)
