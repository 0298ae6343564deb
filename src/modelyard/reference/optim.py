"""Optimiser steps, written as torch.optim writes them, so the two agree to rounding.

The steps are plain functions that update one parameter in place; `SGD` and `Adam` only hold their state.
L2 weight decay is added to the gradient, g <- g + wd * p, as torch.optim.SGD and torch.optim.Adam do.
"""

from __future__ import annotations

import numpy as np


def sgd_step(p: np.ndarray, g: np.ndarray, buf: np.ndarray, *, lr: float, momentum: float = 0.0,
             weight_decay: float = 0.0) -> None:
    """Momentum SGD, in place: g <- g + wd p;  b <- mu b + g;  p <- p - lr b  (with mu = 0: p <- p - lr g)."""
    g = g + weight_decay * p
    if momentum:
        buf *= momentum
        buf += g
        g = buf
    p -= lr * g


def adam_step(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, t: int, *, lr: float,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """Adam (Kingma & Ba), in place, at step t = 1, 2, ...:

        g <- g + wd p
        m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
        m_hat = m / (1 - b1^t)          v_hat = v / (1 - b2^t)
        p <- p - lr m_hat / (sqrt(v_hat) + eps)
    """
    b1, b2 = betas
    g = g + weight_decay * p
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)


class SGD:
    """Momentum buffers for `sgd_step` over a list of parameters (torch.optim.SGD with dampening 0)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[np.ndarray] | None = None

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        if self.buffers is None:
            self.buffers = [np.zeros_like(p) for p in params]
        for p, g, b in zip(params, grads, self.buffers):
            sgd_step(p, g, b, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


class Adam:
    """Moment estimates and the step count for `adam_step` over a list of parameters (torch.optim.Adam)."""

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.t = 0
        self.m: list[np.ndarray] | None = None
        self.v: list[np.ndarray] | None = None

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        for p, g, m, v in zip(params, grads, self.m, self.v):
            adam_step(p, g, m, v, self.t, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)
