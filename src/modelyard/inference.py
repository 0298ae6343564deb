"""Batched forward passes that return probabilities; shared by validation, evaluation and prediction."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from modelyard.errors import DataError


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: Dataset, *, batch_size: int = 512,
                    device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray, float]:
    """(true class indices, probabilities (N, C), mean cross-entropy) over a whole dataset, in order."""
    was_training = model.training
    model.eval()
    ys, probs, loss_sum = [], [], 0.0
    for start in range(0, len(dataset), batch_size):
        x, y = dataset[list(range(start, min(start + batch_size, len(dataset))))]
        logits = model(x.to(device)).float()
        y = y.to(device)
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        probs.append(logits.double().softmax(dim=1).cpu())
        ys.append(y.cpu())
    model.train(was_training)
    return torch.cat(ys).numpy(), torch.cat(probs).double().numpy(), loss_sum / max(1, len(dataset))


@torch.no_grad()
def lm_eval(model: torch.nn.Module, dataset: Dataset, *, batch_size: int = 64,
            device: torch.device | str = "cpu") -> tuple[float, float, int]:
    """A language model's mean next-token cross-entropy, token accuracy and token count over a dataset of blocks."""
    was_training = model.training
    model.eval()
    loss_sum, correct, tokens = 0.0, 0, 0
    for start in range(0, len(dataset), batch_size):
        x, y = dataset[list(range(start, min(start + batch_size, len(dataset))))]
        x, y = x.to(device), y.to(device)
        logits = model(x).float()  # (B, T, vocab)
        loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        correct += int((logits.argmax(dim=-1) == y).sum())
        tokens += y.numel()
    model.train(was_training)
    return loss_sum / max(1, tokens), correct / max(1, tokens), tokens


@torch.no_grad()
def predict_tensor(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 512,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Probabilities (N, C) for preprocessed inputs."""
    model.eval()
    out = [model(x[i:i + batch_size].to(device)).double().softmax(dim=1).cpu() for i in range(0, len(x), batch_size)]
    return require_finite(torch.cat(out).double().numpy()) if out else np.zeros((0, 0))


def require_finite(prob: np.ndarray) -> np.ndarray:
    """`prob`, after checking every row is a probability distribution and not NaN (which prints as nothing).

    Raises:
        DataError: naming the first input whose probabilities are not finite.
    """
    bad = ~np.isfinite(prob).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"the model's output for input {i + 1} (of {len(prob)}) is not finite: that input holds values "
                        "so extreme that the model overflows; check it, or rescale those features")
    return prob


def predicted_labels(prob: np.ndarray, labels: list[str]) -> np.ndarray:
    """The label name of each row's most probable class."""
    return np.asarray(labels, dtype=object)[prob.argmax(axis=1)]


def add_probability_columns(frame, prob: np.ndarray, labels: list[str]):
    """Append one `prob_<label>` column per class, in `labels` order; returns the frame."""
    for i, lab in enumerate(labels):
        frame[f"prob_{lab}"] = prob[:, i]
    return frame
