"""Evaluation metrics. Names say their direction (*_score / accuracy higher is better, *_loss / *_error lower),
and `directions.METRIC_DIRECTIONS` records it for every metric the toolkit reports.

The names below load on first use, so reading the direction table does not import scikit-learn.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "bootstrap_ci": "intervals",
    "headline_interval": "intervals",
    "interval_text": "intervals",
    "classification_report": "classification",
    "expected_calibration_error": "classification",
    "reliability_bins": "classification",
    "regression_report": "regression",
    "METRIC_DIRECTIONS": "directions",
    "direction": "directions",
    "direction_phrase": "directions",
    "is_better": "directions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modelyard.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(f"modelyard.metrics.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
