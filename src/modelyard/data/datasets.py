"""Torch datasets indexed by a whole list of indices at once, so one lookup fetches one batch."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset


class ArrayDataset(Dataset):
    """Tensors held in memory; `ds[[3, 1, 4]]` returns the batch (x, y) in one indexing operation."""

    def __init__(self, x: torch.Tensor, y: np.ndarray) -> None:
        self.x = x
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx):
        return self.x[idx], self.y[idx]


class ImageFileDataset(Dataset):
    """Images read from disk when asked for, so a large folder never sits in memory at once."""

    def __init__(self, paths: list, y: np.ndarray, load: Callable) -> None:
        self.paths, self.load = paths, load
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self.load(self.paths[idx]), self.y[idx]
        return torch.stack([self.load(self.paths[i]) for i in idx]), self.y[idx]


class AugmentedDataset(Dataset):
    """Applies a random transform to each example separately (random crops differ within a batch)."""

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx):
        x, y = self.base[idx]
        if x.dim() == 3:
            return self.transform(x), y
        return torch.stack([self.transform(xi) for xi in x]), y
