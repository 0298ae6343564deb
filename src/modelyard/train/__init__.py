"""The training loop and its hooks."""

from modelyard.train.callbacks import Callback

__all__ = ["Callback"]
