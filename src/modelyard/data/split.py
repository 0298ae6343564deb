"""Deterministic stratified train/val/test split from a seed."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from modelyard.errors import DataError


def stratified_split(y: np.ndarray, *, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Index arrays for train/val/test with every class in the same proportion in each part.

    Raises:
        DataError: a class has too few examples to appear in all three parts.
    """
    idx = np.arange(len(y))
    counts = {str(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))}
    rare = {k: v for k, v in counts.items() if v < 3}
    if rare:
        raise DataError(
            f"classes {rare} have fewer than 3 examples, too few to appear in train, val and test; "
            "add examples, merge or drop those classes"
        )
    try:
        rest, test_idx = train_test_split(idx, test_size=test, stratify=y, random_state=seed)
        train_idx, val_idx = train_test_split(rest, test_size=val / (1 - test), stratify=y[rest], random_state=seed)
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(y)} examples of {len(counts)} classes into val={val}, test={test}: {exc}. "
            "Use larger data.split fractions or more data"
        ) from None
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}


def split_off_val(y: np.ndarray, train_idx: np.ndarray, *, val: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        tr, va = train_test_split(train_idx, test_size=val, stratify=y[train_idx], random_state=seed)
    except ValueError as exc:
        raise DataError(f"cannot split a validation set off the training data: {exc}") from None
    return np.sort(tr), np.sort(va)
