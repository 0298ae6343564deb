"""The training loop and its hooks."""

from modelyard.training.callbacks import Callback

__all__ = ["Callback"]
