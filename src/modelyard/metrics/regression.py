"""Regression metrics, computed by scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def regression_report(y_true, y_pred) -> dict:
    """mse, rmse, mae and r2 of predictions against targets.

    Example:
        >>> regression_report([1.0, 2.0], [1.0, 3.0])["mae"]
        0.5
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"y_true shaped {y.shape} but y_pred shaped {p.shape}")
    mse = float(skm.mean_squared_error(y, p))
    return {
        "n": int(len(y)),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(skm.mean_absolute_error(y, p)),
        "r2": float(skm.r2_score(y, p)) if len(y) > 1 else None,
    }
