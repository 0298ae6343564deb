"""Which way is better, for every metric the toolkit reports: the one table that early stopping, the best
checkpoint, reports and `modelyard value` all read.

A name may carry a split prefix (``train_``, ``val_``, ``test_``): ``val_perplexity`` is read as
``perplexity``. An unknown name is an error, never a guess from its spelling: a guess made
``val_perplexity`` count as higher-is-better.
"""

from __future__ import annotations

import difflib
from typing import Literal

from modelyard.errors import ConfigError

Direction = Literal["max", "min"]

SPLIT_PREFIXES = ("train_", "val_", "test_")

METRIC_DIRECTIONS: dict[str, Direction] = {
    # classification_report and the per-epoch validation line
    "accuracy": "max",
    "balanced_accuracy": "max",
    "precision_macro": "max",
    "recall_macro": "max",
    "f1_macro": "max",
    "f1_micro": "max",
    "f1_weighted": "max",
    "precision": "max",  # per class
    "recall": "max",
    "f1": "max",
    "roc_auc": "max",
    "roc_auc_ovr_macro": "max",
    "pr_auc_macro": "max",
    "log_loss": "min",
    "ece": "min",
    "loss": "min",  # the training objective (cross-entropy)
    # language models
    "perplexity": "min",
    "token_accuracy": "max",
    "unigram_loss": "min",
    "unigram_perplexity": "min",
    # regression_report
    "mse": "min",
    "rmse": "min",
    "mae": "min",
    "r2": "max",
    # what `modelyard value` measures and weighs
    "p50_ms": "min",
    "p95_ms": "min",
    "p99_ms": "min",
    "predictions_per_second": "max",
    "cost_per_1000": "min",
    "value_per_prediction": "max",
    "monthly_net": "max",
    "horizon_total": "max",
}


def direction(name: str) -> Direction:
    """'max' when a higher value of metric `name` is better, 'min' when a lower one is.

    Raises:
        ConfigError: `name` is not in the table; the message lists the known names.

    Example:
        >>> direction("val_perplexity")
        'min'
    """
    if name in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[name]
    for prefix in SPLIT_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in METRIC_DIRECTIONS:
            return METRIC_DIRECTIONS[name[len(prefix):]]
    close = difflib.get_close_matches(name, _spellings(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown metric {name!r}.{hint} Known metrics: {', '.join(sorted(METRIC_DIRECTIONS))} "
                      f"(each may carry a prefix {', '.join(SPLIT_PREFIXES)}); "
                      "a new metric needs a row in modelyard/metrics/directions.py")


def improves(value: float, best: float | None, mode: Direction, min_delta: float = 0.0) -> bool:
    """True when `value` beats `best` by more than `min_delta` in direction `mode` (always, when there is no best)."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def is_better(a: float, b: float | None, name: str, *, min_delta: float = 0.0) -> bool:
    """True when value `a` of metric `name` is better than `b` (by more than `min_delta`); any value beats None."""
    return improves(a, b, direction(name), min_delta)


def oriented(value: float, name: str) -> float:
    """`value` with its sign set so that larger is better: for sorting or Pareto fronts over mixed metrics."""
    return value if direction(name) == "max" else -value


def direction_phrase(name: str) -> str:
    """'higher is better' or 'lower is better', for reports and console lines."""
    return "higher is better" if direction(name) == "max" else "lower is better"


def _spellings() -> list[str]:
    return [*METRIC_DIRECTIONS, *(p + n for p in SPLIT_PREFIXES for n in METRIC_DIRECTIONS)]
