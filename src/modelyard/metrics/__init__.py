"""Evaluation metrics. Names say their direction: *_score / accuracy higher is better, *_loss / *_error lower."""

from modelyard.metrics.classification import (
    bootstrap_ci,
    classification_report,
    expected_calibration_error,
    reliability_bins,
)
from modelyard.metrics.regression import regression_report

__all__ = ["bootstrap_ci", "classification_report", "expected_calibration_error", "regression_report",
           "reliability_bins"]
