"""Optimiser steps, written as torch.optim writes them, so the two agree to rounding.

Both take L2 weight decay as torch does for SGD and Adam: it is added to the gradient, g <- g + wd * p.
"""

from __future__ import annotations

import numpy as np


class SGD:
    """Momentum SGD: b <- mu b + g;  p <- p - lr b  (torch.optim.SGD with dampening 0)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[np.ndarray] | None = None

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        if self.buffers is None:
            self.buffers = [np.zeros_like(p) for p in params]
        for p, g, b in zip(params, grads, self.buffers):
            g = g + self.weight_decay * p
            if self.momentum:
                b *= self.momentum
                b += g
                g = b
            p -= self.lr * g


class Adam:
    """Adam (Kingma & Ba). At step t:

        m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
        m_hat = m / (1 - b1^t)          v_hat = v / (1 - b2^t)
        p <- p - lr m_hat / (sqrt(v_hat) + eps)
    """

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
        b1, b2 = self.betas
        for p, g, m, v in zip(params, grads, self.m, self.v):
            g = g + self.weight_decay * p
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat = m / (1 - b1 ** self.t)
            v_hat = v / (1 - b2 ** self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
