"""The headline metric's confidence interval: exact binomial for a proportion, percentile bootstrap otherwise.

A percentile bootstrap of accuracy collapses to a point when every test answer is right (27 of 27 gives
1.0 to 1.0): resampling a sample with no errors never draws one. Accuracy is a count of successes out of N,
so its interval is Clopper-Pearson's exact binomial one, which stays open below 1. Metrics that are not
proportions (macro F1, AUC, log loss) keep the bootstrap. The headline dict says which method it used.
"""

from __future__ import annotations

import numpy as np

from modelyard.metrics.classification import headline_metric

PROPORTIONS = frozenset({"accuracy"})  # metrics that are successes / examples: exact binomial intervals
CLOPPER_PEARSON = "clopper-pearson"
BOOTSTRAP = "bootstrap-percentile"


def headline_interval(name: str, y_true, y_prob, *, resamples: int = 1000, level: float = 0.95,
                      seed: int = 0) -> dict:
    """Metric `name` with its confidence interval, by the method that suits it.

    Args:
        name: a headline metric (`evaluate.metric`): accuracy, f1_macro, balanced_accuracy,
            roc_auc_ovr_macro or log_loss.
        y_true: (N,) class indices.
        y_prob: (N, C) probabilities.
        resamples: bootstrap resamples for metrics that are not proportions (0: no interval for them);
            a proportion's exact interval needs none.
        level: the interval's coverage.

    Returns:
        {"metric", "value", "low", "high", "level", "interval"}, where "interval" is "clopper-pearson"
        (plus "successes" and "n") or "bootstrap-percentile" (plus "resamples"), or None when no interval
        was computed (then low and high are None).

    Example:
        >>> headline_interval("accuracy", [0, 1] * 5, [[0.9, 0.1], [0.2, 0.8]] * 5)["interval"]
        'clopper-pearson'
    """
    if name in PROPORTIONS:
        return clopper_pearson_ci(name, y_true, y_prob, level=level)
    return bootstrap_ci(name, y_true, y_prob, resamples=resamples, level=level, seed=seed)


def clopper_pearson_ci(name: str, y_true, y_prob, *, level: float = 0.95) -> dict:
    """Exact binomial (Clopper-Pearson) interval of a proportion metric (accuracy: correct answers out of N)."""
    from scipy.stats import binomtest

    if name not in PROPORTIONS:
        raise ValueError(f"{name!r} is not a proportion; exact binomial intervals cover {sorted(PROPORTIONS)}")
    y = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    k, n = int((y_prob.argmax(axis=1) == y).sum()), len(y)
    out = {"metric": name, "value": headline_metric(name, y, y_prob), "low": None, "high": None, "level": level,
           "interval": None, "successes": k, "n": n}
    if n == 0:
        return out
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return {**out, "low": float(ci.low), "high": float(ci.high), "interval": CLOPPER_PEARSON}


def bootstrap_ci(name: str, y_true, y_prob, *, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap interval of metric `name` over `resamples` seeded resamples of the examples.

    Resamples on which the metric is undefined (an AUC when a resample lacks a class) are left out; when
    none is left, low and high are None.
    """
    y = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    value = headline_metric(name, y, y_prob)
    out = {"metric": name, "value": value, "low": None, "high": None, "level": level, "interval": None,
           "resamples": resamples}
    if resamples == 0 or len(y) == 0:
        return out
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y), size=(resamples, len(y)))
    if name == "accuracy":  # vectorised: the common case stays fast at any resample count
        stats = (y_prob.argmax(axis=1) == y)[draws].mean(axis=1)
    else:
        stats = np.array([headline_metric(name, y[d], y_prob[d]) for d in draws])
    stats = stats[~np.isnan(stats)]
    if not len(stats):
        return out
    alpha = (1 - level) / 2
    return {**out, "low": float(np.quantile(stats, alpha)), "high": float(np.quantile(stats, 1 - alpha)),
            "interval": BOOTSTRAP}


def interval_text(headline: dict) -> str:
    """How a report states the headline's interval and its method, e.g.
    "95% CI 0.8723 to 1.0000, exact binomial (Clopper-Pearson) over 27 examples"; "" when there is none."""
    if headline.get("low") is None:
        return ""
    span = f"{headline['level']:.0%} CI {headline['low']:.4f} to {headline['high']:.4f}"
    method = headline.get("interval")
    if method == CLOPPER_PEARSON:
        return f"{span}, exact binomial (Clopper-Pearson) over {headline['n']} examples"
    if method == BOOTSTRAP or method is None:  # None: metrics.json written before the method was recorded
        return f"{span}, percentile bootstrap over {headline['resamples']} resamples of the examples"
    return f"{span}, {method}"
