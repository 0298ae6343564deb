"""Classification metrics from true labels and predicted probabilities.

scikit-learn computes every metric it has, and each value here equals its answer on the same inputs
(tests/metrics checks every key against it, degenerate inputs included); expected calibration error, which
it lacks, is written here.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

PROB_SUM_TOLERANCE = 1e-4  # float rounding of a softmax; a row further from 1 is not a probability vector


def classification_report(y_true, y_prob, labels: Sequence[str] | None = None, *, ece_bins: int = 15) -> dict:
    """Every classification metric the toolkit reports.

    Args:
        y_true: (N,) class indices in 0..C-1, or label names when `labels` is given.
        y_prob: (N, C) predicted probabilities. Rows within `PROB_SUM_TOLERANCE` of 1 are rescaled to sum to
            exactly 1; a row further off raises.
        labels: class names in column order of `y_prob` (default "0".."C-1").

    Returns:
        A JSON-ready dict: accuracy, precision/recall/F1 (macro), F1 micro and weighted, per-class
        precision/recall/F1/support, roc_auc_ovr_macro (and roc_auc for two classes), pr_auc_macro,
        log_loss, ece, confusion_matrix (rows: true, columns: predicted). Every value is scikit-learn's:
        a ROC AUC is None when a class has no examples in `y_true` (scikit-learn refuses it); average
        precision counts such a class as 0, as scikit-learn's macro average does; for two classes
        pr_auc_macro is the positive (second) class's average precision, as scikit-learn's binary case.
        Log loss clips probabilities to [eps, 1 - eps], so a zero for the true class is large, not infinite.

    Raises:
        ValueError: shapes disagree, a label is unknown, or `y_prob` holds values outside [0, 1], NaN, or
            rows that do not sum to 1.

    Example:
        >>> classification_report([0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])["accuracy"]
        0.6666666666666666
    """
    y_prob = check_probabilities(y_prob)
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
        return _balanced_accuracy(y, pred)
    if name == "log_loss":
        return float(skm.log_loss(y, y_prob, labels=np.arange(y_prob.shape[1])))
    if name == "roc_auc_ovr_macro":
        auc = _roc_auc(y, y_prob, np.arange(y_prob.shape[1]))
        return float("nan") if auc is None else auc
    raise ValueError(f"no headline metric {name!r}")


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
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


def _pr_auc(y: np.ndarray, y_prob: np.ndarray, classes: np.ndarray) -> float:
    """scikit-learn's macro average precision over every class (a class absent from `y` scores 0; it warns,
    we don't); for two classes, the positive class's, as its binary case."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)  # "No positive class found in y_true"
        if len(classes) == 2:
            return float(skm.average_precision_score(y == classes[1], y_prob[:, 1]))
        onehot = (y[:, None] == classes[None, :]).astype(np.int64)  # (N, C), label_binarize over every class
        return float(skm.average_precision_score(onehot, y_prob, average="macro"))


def check_probabilities(y_prob) -> np.ndarray:
    """`y_prob` as float64 (N, C) whose rows sum to exactly 1.

    Raises:
        ValueError: not 2-D, NaN or values outside [0, 1], or a row whose sum is further than
            `PROB_SUM_TOLERANCE` from 1 (scores or logits, not probabilities), naming the first such row.
    """
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2:
        raise ValueError(f"y_prob must be shaped (N, C), got {y_prob.shape}")
    bad = ~np.isfinite(y_prob) | (y_prob < 0) | (y_prob > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"y_prob[{row}, {col}] is {float(y_prob[row, col])}; probabilities must lie in [0, 1]")
    sums = y_prob.sum(axis=1)
    off = np.abs(sums - 1) > PROB_SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(f"row {row} of y_prob sums to {sums[row]:.6g}, not 1 ({int(off.sum())} such row(s)); "
                         "pass probabilities (apply softmax to scores or logits first)")
    return y_prob / sums[:, None] if len(y_prob) else y_prob
