"""Classification metrics from true labels and predicted probabilities.

scikit-learn computes every metric it has (the tests check we call it right); expected calibration
error and the bootstrap interval, which it lacks, are written here.
"""

from __future__ import annotations

from typing import Sequence

import warnings

import numpy as np
from sklearn import metrics as skm

HIGHER_IS_BETTER = {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr_macro"}


def classification_report(y_true, y_prob, labels: Sequence[str] | None = None, *, ece_bins: int = 15) -> dict:
    """Every classification metric the toolkit reports.

    Args:
        y_true: (N,) class indices in 0..C-1, or label names when `labels` is given.
        y_prob: (N, C) predicted probabilities; rows should sum to 1.
        labels: class names in column order of `y_prob` (default "0".."C-1").

    Returns:
        A JSON-ready dict: accuracy, precision/recall/F1 (macro), F1 micro and weighted, per-class
        precision/recall/F1/support, roc_auc_ovr_macro (and roc_auc for two classes), pr_auc_macro,
        log_loss, ece, confusion_matrix (rows: true, columns: predicted). A metric that is undefined
        on this data (an AUC when a class is absent) is None.

    Example:
        >>> classification_report([0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])["accuracy"]
        0.6666666666666666
    """
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2:
        raise ValueError(f"y_prob must be shaped (N, C), got {y_prob.shape}")
    n_classes = y_prob.shape[1]
    labels = [str(x) for x in labels] if labels is not None else [str(i) for i in range(n_classes)]
    if len(labels) != n_classes:
        raise ValueError(f"{len(labels)} labels for {n_classes} probability columns")
    y = _as_indices(y_true, labels)
    if len(y) != len(y_prob):
        raise ValueError(f"{len(y)} true labels for {len(y_prob)} rows of probabilities")
    classes = np.arange(n_classes)
    pred = y_prob.argmax(axis=1)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
    out = {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": _balanced_accuracy(y, pred),
        "precision_macro": float(skm.precision_score(y, pred, labels=classes, average="macro", zero_division=0)),
        "recall_macro": float(skm.recall_score(y, pred, labels=classes, average="macro", zero_division=0)),
        "f1_macro": float(skm.f1_score(y, pred, labels=classes, average="macro", zero_division=0)),
        "f1_micro": float(skm.f1_score(y, pred, labels=classes, average="micro", zero_division=0)),
        "f1_weighted": float(skm.f1_score(y, pred, labels=classes, average="weighted", zero_division=0)),
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
        "roc_auc_ovr_macro": _roc_auc(y, y_prob, classes),
        "pr_auc_macro": _pr_auc(y, y_prob, classes),
        "log_loss": float(skm.log_loss(y, y_prob, labels=classes)),
        "ece": expected_calibration_error(y, y_prob, bins=ece_bins),
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=classes).tolist(),
        "labels": labels,
    }
    if n_classes == 2:
        out["roc_auc"] = out["roc_auc_ovr_macro"]
    return out


def expected_calibration_error(y_true, y_prob, *, bins: int = 15) -> float:
    """ECE: the example-weighted mean |accuracy - confidence| over equal-width confidence bins.

    Bin b holds confidences in ((b-1)/B, b/B]; the first bin also holds 0.
    """
    y_prob = np.asarray(y_prob, dtype=np.float64)
    conf = y_prob.max(axis=1)
    correct = (y_prob.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def reliability_bins(y_true, y_prob, *, bins: int = 15) -> dict:
    """Per-bin confidence, accuracy and count for a reliability diagram."""
    y_prob = np.asarray(y_prob, dtype=np.float64)
    conf = y_prob.max(axis=1)
    correct = (y_prob.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    rows = {"confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        mask = which == b
        rows["count"].append(int(mask.sum()))
        rows["confidence"].append(float(conf[mask].mean()) if mask.any() else None)
        rows["accuracy"].append(float(correct[mask].mean()) if mask.any() else None)
    return rows


def f1_macro(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro F1 from a bincount confusion matrix: scikit-learn's value, without its ~8 ms of argument checks,
    for the per-epoch validation line."""
    cm = np.bincount(np.asarray(y) * n_classes + np.asarray(pred), minlength=n_classes * n_classes)
    cm = cm.reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def headline_metric(name: str, y, y_prob) -> float:
    """One scalar metric by name, fast enough to call inside a bootstrap loop."""
    pred = y_prob.argmax(axis=1)
    if name == "accuracy":
        return float((pred == y).mean())
    if name == "f1_macro":
        return f1_macro(y, pred, y_prob.shape[1])
    if name == "balanced_accuracy":
        return float(skm.balanced_accuracy_score(y, pred))
    if name == "log_loss":
        return float(skm.log_loss(y, y_prob, labels=np.arange(y_prob.shape[1])))
    if name == "roc_auc_ovr_macro":
        auc = _roc_auc(y, y_prob, np.arange(y_prob.shape[1]))
        return float("nan") if auc is None else auc
    raise ValueError(f"no headline metric {name!r}")


def bootstrap_ci(name: str, y_true, y_prob, *, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap interval of metric `name` over `resamples` seeded resamples of the examples."""
    y = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    value = headline_metric(name, y, y_prob)
    if resamples == 0:
        return {"metric": name, "value": value, "low": None, "high": None, "level": level, "resamples": 0}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y), size=(resamples, len(y)))
    if name == "accuracy":  # vectorised: the common case stays fast at any resample count
        stats = (y_prob.argmax(axis=1) == y)[draws].mean(axis=1)
    else:
        stats = np.array([headline_metric(name, y[d], y_prob[d]) for d in draws])
    stats = stats[~np.isnan(stats)]
    alpha = (1 - level) / 2
    return {
        "metric": name, "value": value, "level": level, "resamples": resamples,
        "low": float(np.quantile(stats, alpha)), "high": float(np.quantile(stats, 1 - alpha)),
    }


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    with warnings.catch_warnings():  # a predicted class absent from y_true is expected on small test sets
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(y, pred))


def _as_indices(y_true, labels: list[str]) -> np.ndarray:
    arr = np.asarray(y_true)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() >= len(labels)):
            raise ValueError(f"class indices must lie in 0..{len(labels) - 1}")
        return arr.astype(np.int64)
    index = {lab: i for i, lab in enumerate(labels)}
    try:
        return np.array([index[str(v)] for v in arr], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"true label {exc.args[0]!r} is not among the labels {labels}") from None


def _roc_auc(y: np.ndarray, y_prob: np.ndarray, classes: np.ndarray) -> float | None:
    if len(np.unique(y)) < len(classes):
        return None  # one-vs-rest AUC is undefined for a class with no positives
    if len(classes) == 2:
        return float(skm.roc_auc_score(y, y_prob[:, 1]))
    return float(skm.roc_auc_score(y, y_prob, multi_class="ovr", average="macro", labels=classes))


def _pr_auc(y: np.ndarray, y_prob: np.ndarray, classes: np.ndarray) -> float | None:
    # Average precision is undefined for a class with no positives; average over the classes present.
    scores = [skm.average_precision_score(y == c, y_prob[:, c]) for c in classes if (y == c).any()]
    return float(np.mean(scores)) if scores else None
