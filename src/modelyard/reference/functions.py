"""Activations, losses and attention as plain NumPy functions, each with its formula.

Shapes: a batch is (N, features); `z` is a pre-activation, `a` an activation.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """sigma(z) = 1 / (1 + exp(-z)), computed without overflow for large |z|."""
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def sigmoid_grad(z: np.ndarray) -> np.ndarray:
    """d sigma / dz = sigma(z) * (1 - sigma(z))."""
    s = sigmoid(z)
    return s * (1.0 - s)


def relu(z: np.ndarray) -> np.ndarray:
    """relu(z) = max(0, z)."""
    return np.maximum(z, 0.0)


def relu_grad(z: np.ndarray) -> np.ndarray:
    """d relu / dz = 1 where z > 0, else 0 (the sub-gradient at 0 is taken as 0, as torch does)."""
    return (z > 0).astype(np.float64)


def tanh(z: np.ndarray) -> np.ndarray:
    """tanh(z) = (e^z - e^-z) / (e^z + e^-z)."""
    return np.tanh(z)


def tanh_grad(z: np.ndarray) -> np.ndarray:
    """d tanh / dz = 1 - tanh(z)^2."""
    return 1.0 - np.tanh(z) ** 2


def identity(z: np.ndarray) -> np.ndarray:
    return z


def identity_grad(z: np.ndarray) -> np.ndarray:
    return np.ones_like(z)


ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_grad),
    "relu": (relu, relu_grad),
    "tanh": (tanh, tanh_grad),
    "identity": (identity, identity_grad),
}


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(z)_i = exp(z_i - max z) / sum_j exp(z_j - max z); subtracting the max changes nothing but overflow."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def mse_loss(pred: np.ndarray, target: np.ndarray) -> float:
    """L = (1 / (N K)) sum_{n,k} (pred_nk - target_nk)^2: the mean over every element, as torch's MSELoss."""
    return float(np.mean((pred - target) ** 2))


def mse_grad(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """dL/dpred = 2 (pred - target) / (N K)."""
    return 2.0 * (pred - target) / pred.size


def cross_entropy_loss(logits: np.ndarray, target: np.ndarray) -> float:
    """L = -(1/N) sum_n sum_k t_nk log softmax(z_n)_k, with one-hot (or soft) targets t."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(target * log_p).sum() / len(logits))


def cross_entropy_grad(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """dL/dz = (softmax(z) - t) / N: softmax and cross-entropy together have this simple gradient."""
    return (softmax(logits, axis=1) - target) / len(logits)


def causal_mask(n: int) -> np.ndarray:
    """(n, n) boolean mask, True where query i may attend to key j, i.e. j <= i."""
    return np.tril(np.ones((n, n), dtype=bool))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Scaled dot-product attention: softmax(q k^T / sqrt(d) + M) v.

    Args:
        q: (..., Lq, d) queries; k: (..., Lk, d) keys; v: (..., Lk, dv) values.
        mask: boolean (Lq, Lk), True where attention is allowed (M = 0 there, -inf elsewhere), as
            torch.nn.functional.scaled_dot_product_attention reads a boolean attn_mask; or a float
            array added to the scores.

    Returns:
        (..., Lq, dv)
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape}")
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])  # (..., Lq, Lk)
    if mask is not None:
        mask = np.asarray(mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    return softmax(scores, axis=-1) @ v
